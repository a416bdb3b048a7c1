#include "train_core.h"

#include <ATen/ATen.h>

#if PTM_HAVE_IMGCODECS
#include <opencv2/imgcodecs.hpp>
#endif
#include <opencv2/imgproc.hpp>

#include <cmath>
#include <filesystem>

#include "infer_core.h"
#include "models/error.h"
#include "models/labels.h"
#include "models/writer.h"

namespace ptm {

namespace {

ClassifierOptions eager(ClassifierOptions o) {
  o.optimize = false;  // features come from the eager modules
  return o;
}

}  // namespace

TrainCore::TrainCore(const ClassifierOptions& backbone, const SampleSettings& s)
    : classifier_(eager(backbone)), preprocessor_(preprocess_config_for(classifier_.info())), settings_(s), rng_(s.seed) {
  classifier_.feature_size();  // throws when the model has no linear head
  if (settings_.max_samples < 1) settings_.max_samples = 1;
}

bool TrainCore::add(const FrameView& frame, const float* tensor, const std::string& label) {
  const int s = crop_size();
  const size_t plane = size_t(3) * size_t(s) * size_t(s);
  if (!tensor) {
    input_.resize(plane);
    preprocessor_.run(frame, input_.data());
    tensor = input_.data();
  }
  at::Tensor x = at::from_blob(const_cast<float*>(tensor), {1, 3, s, s}, at::kFloat);
  at::Tensor f = classifier_.features(x).contiguous();
  std::vector<float> feat(f.data_ptr<float>(), f.data_ptr<float>() + f.numel());

  const uint64_t n = ++seen_[label];
  auto& prev = previous_[label];
  if (settings_.min_change > 0 && !prev.empty()) {
    double diff = 0, norm = 0;
    for (size_t i = 0; i < feat.size(); ++i) {
      diff += double(feat[i] - prev[i]) * double(feat[i] - prev[i]);
      norm += double(prev[i]) * double(prev[i]);
    }
    if (std::sqrt(diff) < settings_.min_change * std::sqrt(std::max(norm, 1e-12))) return false;
  }
  prev = feat;
  auto& bank = kept_[label];
  auto& imgs = images_[label];
  size_t slot;
  if (bank.size() < size_t(settings_.max_samples)) {
    slot = bank.size();
    bank.emplace_back();
    if (settings_.keep_images) imgs.emplace_back();
  } else {
    // Reservoir sampling over the frames seen of this label.
    const uint64_t j = std::uniform_int_distribution<uint64_t>(0, n - 1)(rng_);
    if (j >= uint64_t(settings_.max_samples)) return false;
    slot = size_t(j);
  }
  bank[slot] = std::move(feat);
  if (settings_.keep_images) {
    imgs[slot].resize(plane);
    preprocessor_.run_u8(frame, imgs[slot].data());
  }
  return true;
}

size_t TrainCore::samples() const {
  size_t n = 0;
  for (const auto& [l, v] : kept_) n += v.size();
  return n;
}

std::map<std::string, size_t> TrainCore::per_class() const {
  std::map<std::string, size_t> m;
  for (const auto& [l, v] : kept_) m[l] = v.size();
  return m;
}

size_t TrainCore::export_dataset(const std::string& dir) const {
  if (!settings_.keep_images) throw ModelError("images were not kept: set the export directory before collecting");
  const int s = crop_size();
  size_t n = 0;
  for (const auto& [label, imgs] : images_) {
    std::string safe = label;
    for (char& c : safe)
      if (c == '/' || c == '\\' || c == '\0') c = '_';
    if (safe.empty() || safe == "." || safe == "..") safe = "_" + safe;
    const std::string sub = dir + "/" + safe;
    std::error_code ec;
    std::filesystem::create_directories(sub, ec);
    if (ec) throw ModelError("cannot create '" + sub + "': " + ec.message());
    for (size_t i = 0; i < imgs.size(); ++i) {
      cv::Mat rgb(s, s, CV_8UC3, const_cast<uint8_t*>(imgs[i].data())), bgr;
      cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
      std::vector<uint8_t> jpg;
#if PTM_HAVE_IMGCODECS
      if (!cv::imencode(".jpg", bgr, jpg, {cv::IMWRITE_JPEG_QUALITY, 95}))
        throw ModelError("cannot encode a JPEG for '" + label + "'");
#else
      throw ModelError("exporting a dataset needs OpenCV's imgcodecs module, which this build of ptm lacks");
#endif
      write_file_atomic(sub + "/" + std::to_string(i) + ".jpg", jpg.data(), jpg.size());
      ++n;
    }
  }
  return n;
}

TrainOutcome TrainCore::train(const TrainSettings& t, const std::string& output,
                              const std::function<void(const EpochReport&)>& progress) {
  if (output.empty()) throw ModelError("no output file set");
  if (kept_.empty()) throw ModelError("no labelled frames were collected");
  if (kept_.size() < 2)
    throw ModelError("only one label ('" + kept_.begin()->first + "') was collected; training needs two or more");
  TrainOutcome out;
  const int64_t d = classifier_.feature_size();
  std::vector<float> xs;
  std::vector<int64_t> ys;
  for (const auto& [label, bank] : kept_) {  // std::map: labels sorted
    const int64_t cls = int64_t(out.labels.size());
    out.labels.push_back(label);
    for (const auto& f : bank) {
      xs.insert(xs.end(), f.begin(), f.end());
      ys.push_back(cls);
    }
  }
  at::Tensor x = at::from_blob(xs.data(), {int64_t(ys.size()), d}, at::kFloat);
  at::Tensor y = at::from_blob(ys.data(), {int64_t(ys.size())}, at::kLong);
  out.head = train_linear_head(x, y, int64_t(out.labels.size()), t, progress);

  // The backbone's weights plus the new head, with torchvision's keys.
  StateDict sd = classifier_.state_dict();
  for (const std::string& head : classifier_.head_prefixes()) {
    for (auto& e : sd.entries) {
      if (e.name == head + ".weight") e.tensor = out.head.weight;
      if (e.name == head + ".bias") e.tensor = out.head.bias;
    }
  }
  out.model_path = output;
  out.labels_path = save_model_and_labels(output, sd, out.labels);
  return out;
}

}  // namespace ptm
