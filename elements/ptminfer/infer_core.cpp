#include "infer_core.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <stdexcept>

namespace ptm {

namespace {

PreprocessConfig config_for(const ModelInfo& m) {
  PreprocessConfig c;
  c.resize_size = m.resize_size;
  c.crop_width = c.crop_height = m.crop_size;
  c.filter = m.bicubic ? Filter::Bicubic : Filter::Bilinear;
  return c;
}

}  // namespace

InferCore::InferCore(const InferSettings& s)
    : settings_(s), classifier_(s.model), preprocessor_(config_for(classifier_.info())) {
  if (settings_.top_k < 1) settings_.top_k = 1;
  if (settings_.interval < 1) settings_.interval = 1;
  settings_.smoothing = std::clamp(settings_.smoothing, 0.0, 0.999);
}

void InferCore::update_scoring(const InferSettings& s) {
  if (s.output != settings_.output || s.smoothing != settings_.smoothing) smoothed_.clear();
  settings_.top_k = std::max(1, s.top_k);
  settings_.threshold = s.threshold;
  settings_.output = s.output;
  settings_.interval = std::max(1, s.interval);
  settings_.smoothing = std::clamp(s.smoothing, 0.0, 0.999);
  settings_.hysteresis = std::max(0, s.hysteresis);
}

PreprocessConfig InferCore::preprocess_config() const { return preprocessor_.config(); }

void InferCore::reset() {
  frame_ = 0;
  have_last_ = false;
  smoothed_.clear();
  shown_ = -1;
  challenger_ = 0;
  challenger_class_ = -1;
}

FrameResult InferCore::process(const FrameView& frame, const float* tensor) {
  const uint64_t index = frame_++;
  if (have_last_ && index % uint64_t(settings_.interval) != 0) {
    FrameResult r = last_;
    r.reused = true;
    r.frame = index;
    return r;
  }
  const int s = info().crop_size;
  if (!tensor) {
    input_.resize(size_t(3) * size_t(s) * size_t(s));
    preprocessor_.run(frame, input_.data());
    tensor = input_.data();
  }
  std::vector<float> logits;
  const auto t0 = std::chrono::steady_clock::now();
  classifier_.forward(tensor, 1, s, s, logits);
  const auto ns = uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count());
  FrameResult r = score(std::move(logits), ns);
  r.frame = index;
  last_ = r;
  have_last_ = true;
  return r;
}

FrameResult InferCore::score(std::vector<float> v, uint64_t ns) {
  const int64_t n = int64_t(v.size());
  switch (settings_.output) {
    case ScoreOutput::Softmax: softmax_inplace(v.data(), n); break;
    case ScoreOutput::Sigmoid:
      for (auto& x : v) x = 1.f / (1.f + std::exp(-x));
      break;
    case ScoreOutput::Logits: break;
  }
  if (settings_.smoothing > 0) {
    if (smoothed_.size() != v.size()) smoothed_ = v;
    const float a = float(settings_.smoothing);
    for (size_t i = 0; i < v.size(); ++i) v[i] = smoothed_[i] = a * smoothed_[i] + (1.f - a) * v[i];
  }
  FrameResult r;
  r.inference_ns = ns;
  std::vector<Prediction> top = top_k(v.data(), n, settings_.top_k);
  if (settings_.hysteresis > 0 && !top.empty()) {
    // The first class changes only after another one has led for
    // `hysteresis` inferred frames in a row.
    if (shown_ < 0 || top[0].index == shown_) {
      shown_ = top[0].index;
      challenger_ = 0;
    } else {
      challenger_ = top[0].index == challenger_class_ ? challenger_ + 1 : 1;
      challenger_class_ = top[0].index;
      if (challenger_ >= settings_.hysteresis) {
        shown_ = top[0].index;
        challenger_ = 0;
      }
    }
    auto it = std::find_if(top.begin(), top.end(), [&](const Prediction& p) { return p.index == shown_; });
    if (it == top.end()) {
      top.insert(top.begin(), Prediction{shown_, v[size_t(shown_)]});
      top.pop_back();
    } else {
      std::rotate(top.begin(), it, it + 1);
    }
  }
  for (const auto& p : top) {
    if (p.score < settings_.threshold) continue;
    r.top.push_back(p);
    r.labels.push_back(classifier_.label(p.index));
  }
  return r;
}

ResultsFile::ResultsFile(const std::string& path) : path_(path) {
  f_ = std::fopen(path.c_str(), "w");
  if (!f_) throw std::runtime_error("cannot write results file '" + path + "': " + std::strerror(errno));
}

ResultsFile::~ResultsFile() {
  if (f_) std::fclose(f_);
}

void ResultsFile::write(int64_t pts, const FrameResult& r) {
  nlohmann::json j;
  j["pts"] = pts >= 0 ? nlohmann::json(pts) : nlohmann::json(nullptr);
  j["frame"] = r.frame;
  j["reused"] = r.reused;
  j["inference_ms"] = double(r.inference_ns) / 1e6;
  nlohmann::json res = nlohmann::json::array();
  for (size_t i = 0; i < r.top.size(); ++i)
    res.push_back({{"class", r.top[i].index}, {"label", r.labels[i]}, {"score", r.top[i].score}});
  j["results"] = res;
  const std::string line = j.dump() + "\n";
  if (std::fwrite(line.data(), 1, line.size(), f_) != line.size() || std::fflush(f_) != 0)
    throw std::runtime_error("cannot write results file '" + path_ + "': " + std::strerror(errno));
}

}  // namespace ptm
