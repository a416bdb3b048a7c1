#include "infer_core.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <stdexcept>

#if PTM_HAVE_CUDA
#include "ptmcuda.h"
#endif

namespace ptm {

PreprocessConfig preprocess_config_for(const ModelInfo& m) {
  PreprocessConfig c;
  c.resize_size = m.resize_size;
  c.crop_width = c.crop_height = m.crop_size;
  c.filter = m.bicubic ? Filter::Bicubic : Filter::Bilinear;
  if (m.stretch) c.mode = ResizeMode::Stretch;
  c.mean = m.mean;
  c.std = m.std;
  return c;
}

#if PTM_HAVE_CUDA
struct InferCore::Gpu {
  cuda::Preprocess preprocess;
};
void InferCore::GpuDeleter::operator()(Gpu* g) const { delete g; }
#else
struct InferCore::Gpu {};
void InferCore::GpuDeleter::operator()(Gpu* g) const { delete g; }
#endif

InferCore::InferCore(const InferSettings& s)
    : settings_(s), classifier_(s.model), preprocessor_(preprocess_config_for(classifier_.info())) {
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

std::string InferCore::set_input_size(int size) {
  if (!pending_.empty()) throw std::logic_error("InferCore::set_input_size with frames queued");
  const std::string why = classifier_.set_input_size(size);
  if (!why.empty()) return why;
  preprocessor_ = Preprocessor(preprocess_config_for(classifier_.info()));
  gpu_.reset();  // its kernel tables are for the old size
  return "";
}

void InferCore::reset() {
  drop_queued();
  frame_ = 0;
  have_last_ = false;
  smoothed_.clear();
  shown_ = -1;
  challenger_ = 0;
  challenger_class_ = -1;
}

FrameResult InferCore::process(const FrameView& frame, const float* tensor) {
  queue(frame, tensor);
  return flush().front();
}

int64_t InferCore::next_slot(bool* infer) {
  const uint64_t index = frame_++;
  // Every interval-th frame is inferred, and the first one after a reset.
  const bool first = !have_last_ && batched_ == 0;
  *infer = first || index % uint64_t(settings_.interval) == 0;
  pending_.push_back({index, *infer});
  return *infer ? int64_t(batched_) : -1;
}

void InferCore::queue(const FrameView& frame, const float* tensor) {
  bool infer = false;
  const int64_t slot = next_slot(&infer);
  if (!infer) return;
  const size_t plane = size_t(3) * size_t(info().crop_size) * size_t(info().crop_size);
  const Classifier::InputBuffer in = classifier_.input_buffer(slot + 1);
  if (!in.cuda && in.type == Precision::Float32 && !in.channels_last) {
    // The model's input is host memory in this layout: preprocess into it.
    float* dst = static_cast<float*>(in.data) + size_t(slot) * plane;
    if (tensor) std::copy(tensor, tensor + plane, dst);
    else preprocessor_.run(frame, dst);
  } else {
    // A frame in system memory for a model on the GPU: preprocessed here,
    // then the tensor (not the frame) goes to the device.
    staging_.resize(plane);
    if (tensor) std::copy(tensor, tensor + plane, staging_.data());
    else preprocessor_.run(frame, staging_.data());
    classifier_.write_input(slot, staging_.data(), false);
  }
  ++batched_;
}

void InferCore::queue_device(const FrameView& frame, const float* device_tensor) {
#if PTM_HAVE_CUDA
  if (!classifier_.on_cuda())
    throw std::runtime_error("frames in CUDA memory need the model on a CUDA device (device=cuda)");
  bool infer = false;
  const int64_t slot = next_slot(&infer);
  if (!infer) return;
  const Classifier::InputBuffer in = classifier_.input_buffer(slot + 1);
  if (device_tensor) {
    classifier_.write_input(slot, device_tensor, true);
  } else {
    if (!gpu_) gpu_.reset(new Gpu());
    const ResamplePlan* p = gpu_->preprocess.plan();
    if (!p || p->format != frame.format || p->width != frame.width || p->height != frame.height)
      gpu_->preprocess.set_plan(preprocessor_.plan(frame));
    const size_t elem = in.type == Precision::Float32 ? 4 : 2;
    void* dst = static_cast<uint8_t*>(in.data) + size_t(slot) * size_t(in.image_elements) * elem;
    const cuda::OutputType type = in.type == Precision::Float16    ? cuda::OutputType::Float16
                                  : in.type == Precision::BFloat16 ? cuda::OutputType::BFloat16
                                                                   : cuda::OutputType::Float32;
    // On the model's stream: the forward pass is ordered after the kernel
    // without any synchronisation.
    gpu_->preprocess.run(frame, dst, type, in.channels_last, classifier_.cuda_stream());
  }
  ++batched_;
#else
  (void)frame;
  (void)device_tensor;
  throw std::runtime_error("this build of ptm has no CUDA support");
#endif
}

void InferCore::drop_queued() {
  pending_.clear();
  batched_ = 0;
}

std::vector<FrameResult> InferCore::flush() {
  std::vector<FrameResult> out;
  if (pending_.empty()) return out;
  std::vector<float> logits;
  std::vector<int64_t> indices;
  uint64_t ns = 0;
  // On a GPU only the top k of each image come back, unless smoothing or
  // hysteresis need every score.
  const bool device_top = classifier_.on_cuda() && settings_.smoothing == 0 && settings_.hysteresis == 0;
  if (batched_ > 0) {
    const auto t0 = std::chrono::steady_clock::now();
    const int fn = settings_.output == ScoreOutput::Softmax ? 1 : settings_.output == ScoreOutput::Sigmoid ? 2 : 0;
    classifier_.run_input(int64_t(batched_), device_top ? settings_.top_k : 0, fn, logits, indices);
    ns = uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count());
  }
  const size_t classes = batched_ ? logits.size() / batched_ : 0;
  size_t k = 0;
  for (const Pending& p : pending_) {
    FrameResult r;
    if (p.infer && device_top) {
      r.inference_ns = ns / batched_;
      for (size_t j = k * classes; j < (k + 1) * classes; ++j) {
        if (logits[j] < settings_.threshold) continue;
        r.top.push_back({indices[j], logits[j]});
        r.labels.push_back(classifier_.label(indices[j]));
      }
      ++k;
      last_ = r;
      have_last_ = true;
    } else if (p.infer) {
      r = score(std::vector<float>(logits.begin() + long(k * classes), logits.begin() + long((k + 1) * classes)),
                ns / batched_);
      ++k;
      last_ = r;
      have_last_ = true;
    } else {
      r = last_;
      r.reused = true;
    }
    r.frame = p.frame;
    out.push_back(std::move(r));
  }
  drop_queued();
  return out;
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
