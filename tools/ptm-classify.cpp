// ptm-classify --model FILE [options] IMAGE...
// Classifies still images with any supported model file and prints the
// top-k labels. A quick check of a model outside a pipeline; the
// pipeline's ptmpreprocess is the torchvision-exact preprocessing.
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "models/classifier.h"

namespace {

int usage() {
  std::cerr << "usage: ptm-classify --model FILE [--arch NAME] [--labels FILE] [--num-classes N]\n"
               "                    [--top-k K] [--threads N] [--eager] IMAGE...\n";
  return 2;
}

// Shorter side to `resize` (area filter when shrinking), centre crop
// `crop`, ImageNet mean/std, RGB planes.
std::vector<float> preprocess(const cv::Mat& bgr, int resize, int crop) {
  const double s = double(resize) / std::min(bgr.cols, bgr.rows);
  cv::Mat scaled, rgb;
  cv::resize(bgr, scaled, cv::Size(std::max(crop, int(bgr.cols * s + 0.5)), std::max(crop, int(bgr.rows * s + 0.5))), 0, 0,
             s < 1 ? cv::INTER_AREA : cv::INTER_LINEAR);
  const int x0 = (scaled.cols - crop) / 2, y0 = (scaled.rows - crop) / 2;
  cv::cvtColor(scaled(cv::Rect(x0, y0, crop, crop)), rgb, cv::COLOR_BGR2RGB);
  const float mean[] = {0.485f, 0.456f, 0.406f}, stdv[] = {0.229f, 0.224f, 0.225f};
  std::vector<float> out(size_t(3) * crop * crop);
  for (int y = 0; y < crop; ++y) {
    const uint8_t* row = rgb.ptr<uint8_t>(y);
    for (int x = 0; x < crop; ++x)
      for (int c = 0; c < 3; ++c)
        out[(size_t(c) * crop + y) * crop + x] = (row[x * 3 + c] / 255.f - mean[c]) / stdv[c];
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  ptm::ClassifierOptions o;
  int k = 5;
  std::vector<std::string> images;
  try {
    for (int i = 1; i < argc; ++i) {
      std::string a = argv[i];
      auto value = [&]() -> std::string {
        if (i + 1 >= argc) throw std::invalid_argument(a + " needs a value");
        return argv[++i];
      };
      if (a == "--model") o.model = value();
      else if (a == "--arch") o.architecture = value();
      else if (a == "--labels") o.labels = value();
      else if (a == "--num-classes") o.num_classes = std::stoll(value());
      else if (a == "--top-k") k = std::stoi(value());
      else if (a == "--threads") o.threads = std::stoi(value());
      else if (a == "--eager") o.optimize = false;
      else if (a == "-h" || a == "--help" || (!a.empty() && a[0] == '-')) return usage();
      else images.push_back(a);
    }
  } catch (const std::exception& e) {
    std::cerr << "ptm-classify: " << e.what() << "\n";
    return 2;
  }
  if (o.model.empty() || images.empty()) return usage();
  try {
    ptm::Classifier clf(o);
    const ptm::ModelInfo& info = clf.info();
    std::cout << "model: " << info.architecture << ", " << info.num_classes << " classes, " << info.format
              << ", input " << info.crop_size << "x" << info.crop_size << "\n";
    int status = 0;
    for (const auto& path : images) {
      cv::Mat img = cv::imread(path, cv::IMREAD_COLOR);
      if (img.empty()) {
        std::cerr << "ptm-classify: cannot decode image '" << path << "'\n";
        status = 1;
        continue;
      }
      std::vector<float> input = preprocess(img, info.resize_size, info.crop_size), logits;
      clf.forward(input.data(), 1, info.crop_size, info.crop_size, logits);
      ptm::softmax_inplace(logits.data(), int64_t(logits.size()));
      std::cout << path << ":\n";
      for (const auto& p : ptm::top_k(logits.data(), int64_t(logits.size()), k))
        std::printf("  %6.2f%%  %4lld  %s\n", 100.0 * p.score, static_cast<long long>(p.index), clf.label(p.index).c_str());
    }
    return status;
  } catch (const std::exception& e) {
    std::cerr << "ptm-classify: " << e.what() << "\n";
    return 1;
  }
}
