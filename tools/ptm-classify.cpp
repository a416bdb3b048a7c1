// ptm-classify --model FILE [options] IMAGE...
// Classifies still images with any supported model file and prints the
// top-k labels, with the same torchvision-exact preprocessing as the
// pipeline (images decoded by OpenCV).
#include <opencv2/imgcodecs.hpp>

#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "infer_core.h"
#include "models/classifier.h"
#include "preprocess_core.h"

namespace {

int usage() {
  std::cerr << "usage: ptm-classify --model FILE [--arch NAME] [--labels FILE] [--num-classes N]\n"
               "                    [--top-k K] [--threads N] [--eager] [--precision fp32|bf16|int8]\n"
               "                    [--calibration DIR] [--calibration-images N] IMAGE...\n"
               "int8 calibrates on DIR's images, or else on the first N images classified (those\n"
               "classified in fp32)\n";
  return 2;
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
      else if (a == "--precision") {
        const std::string p = value();
        if (p == "fp32") o.precision = ptm::Precision::Float32;
        else if (p == "bf16") o.precision = ptm::Precision::BFloat16;
        else if (p == "int8") o.precision = ptm::Precision::Int8;
        else throw std::invalid_argument("--precision takes fp32, bf16 or int8, not '" + p + "'");
      } else if (a == "--calibration") o.calibration = value();
      else if (a == "--calibration-images") o.calibration_images = std::stoi(value());
      else if (a == "-h" || a == "--help" || (!a.empty() && a[0] == '-')) return usage();
      else images.push_back(a);
    }
  } catch (const std::exception& e) {
    std::cerr << "ptm-classify: " << e.what() << "\n";
    return 2;
  }
  if (o.model.empty() || images.empty()) return usage();
  try {
    ptm::Classifier clf(ptm::with_calibration_reader(o));
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
      ptm::FrameView frame;
      frame.format = ptm::PixelFormat::BGR;
      frame.width = img.cols;
      frame.height = img.rows;
      frame.planes[0] = img.data;
      frame.strides[0] = int(img.step);
      std::vector<float> input(size_t(3) * size_t(info.crop_size) * size_t(info.crop_size)), logits;
      ptm::Preprocessor(ptm::preprocess_config_for(info)).run(frame, input.data());
      clf.forward(input.data(), 1, info.crop_size, info.crop_size, logits);
      ptm::softmax_inplace(logits.data(), int64_t(logits.size()));
      std::cout << path << ":\n";
      for (const auto& p : ptm::top_k(logits.data(), int64_t(logits.size()), k))
        std::printf("  %6.2f%%  %4lld  %s\n", 100.0 * p.score, static_cast<long long>(p.index), clf.label(p.index).c_str());
    }
    for (const auto& w : info.warnings) std::cerr << "ptm-classify: warning: " << w << "\n";
    if (const std::string s = clf.int8_status(); !s.empty()) std::cout << "precision int8: " << s << "\n";
    return status;
  } catch (const std::exception& e) {
    std::cerr << "ptm-classify: " << e.what() << "\n";
    return 1;
  }
}
