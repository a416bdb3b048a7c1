// ptminfer's GStreamer-free core: model + preprocessing + scoring, top-k,
// thresholds, temporal smoothing and the interval logic, on plain frames.
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "models/classifier.h"
#include "preprocess_core.h"

namespace ptm {

enum class ScoreOutput { Softmax, Sigmoid, Logits };

struct InferSettings {
  ClassifierOptions model;
  int top_k = 5;
  float threshold = -3.4e38f;      // drop results scoring below (after scoring); default: keep all
  ScoreOutput output = ScoreOutput::Softmax;
  int interval = 1;                // run the model on every Nth frame
  double smoothing = 0.0;          // EMA weight of the past scores, 0 = off
  int hysteresis = 0;              // inferred frames a new top class must lead before it is reported
};

struct FrameResult {
  std::vector<Prediction> top;     // best first
  std::vector<std::string> labels; // of `top`
  bool reused = false;             // carried over (interval)
  uint64_t inference_ns = 0;
  uint64_t frame = 0;
};

// torchvision's eval transform for a model (size, resize, interpolation).
PreprocessConfig preprocess_config_for(const ModelInfo& m);

class InferCore {
 public:
  explicit InferCore(const InferSettings& s);  // loads the model; throws ModelError
  const ModelInfo& info() const { return classifier_.info(); }
  const InferSettings& settings() const { return settings_; }
  // The preprocessing that reproduces torchvision's eval transform for this model.
  PreprocessConfig preprocess_config() const;
  // Runs the model at `size` x `size` from now on (Classifier::set_input_size;
  // the preprocessing follows). Only between batches: nothing may be queued.
  // Returns "" on success, else why not.
  std::string set_input_size(int size);

  // One frame: `tensor` (3 x crop x crop floats) when an upstream
  // ptmpreprocess made one that fits, else the frame is preprocessed here.
  FrameResult process(const FrameView& frame, const float* tensor);

  // Batching in time: queue() takes frames (preprocessed at once, so the
  // frame need not outlive the call); flush() runs the model once on every
  // queued frame that needs inference and returns all results in order.
  void queue(const FrameView& frame, const float* tensor);
  // The same for a frame in CUDA memory (device pointers) and a model on
  // that device: the fused kernel writes it straight into the model input.
  // `device_tensor`: a fitting tensor already in device memory, or nullptr.
  // Throws std::runtime_error when this build or model has no CUDA.
  void queue_device(const FrameView& frame, const float* device_tensor);
  bool on_cuda() const { return classifier_.on_cuda(); }
  int cuda_device() const { return classifier_.cuda_device(); }  // -1 on the CPU
  std::vector<FrameResult> flush();
  size_t queued() const { return pending_.size(); }
  void drop_queued();

  // Scores one frame's logits: output function, smoothing, top-k,
  // hysteresis, threshold (what flush() does per inferred frame).
  FrameResult rank(std::vector<float> logits, uint64_t inference_ns = 0) { return score(std::move(logits), inference_ns); }
  void reset();  // new segment / flush: frame count and smoothing restart
  // Frame numbering continues across a model swap.
  uint64_t next_frame() const { return frame_; }
  void set_next_frame(uint64_t f) { frame_ = f; }
  // Changes top_k, threshold, output, interval, smoothing and hysteresis
  // (the fields that may change while frames flow); the model stays.
  void update_scoring(const InferSettings& s);

 private:
  FrameResult score(std::vector<float> logits, uint64_t ns);

  struct Pending {
    uint64_t frame;
    bool infer;  // else the result of the latest inferred frame is reused
  };

  struct Gpu;
  struct GpuDeleter {
    void operator()(Gpu* g) const;
  };

  // The next model input slot; returns its index.
  int64_t next_slot(bool* infer);

  InferSettings settings_;
  Classifier classifier_;
  std::unique_ptr<Gpu, GpuDeleter> gpu_;
  Preprocessor preprocessor_;
  std::vector<float> staging_, smoothed_;  // staging_: one image on its way to a model on the GPU
  std::vector<Pending> pending_;
  size_t batched_ = 0;  // images written into the model input
  FrameResult last_;
  uint64_t frame_ = 0;
  bool have_last_ = false;
  int64_t shown_ = -1;  // class reported first under hysteresis
  int challenger_ = 0;  // consecutive wins of another class
  int64_t challenger_class_ = -1;
};

// JSON lines: one object per frame {"pts":..,"frame":..,"reused":..,
// "inference_ms":..,"results":[{"class":..,"label":..,"score":..}]}.
class ResultsFile {
 public:
  explicit ResultsFile(const std::string& path);  // truncates; throws std::runtime_error
  ~ResultsFile();
  void write(int64_t pts_ns, const FrameResult& r);  // pts_ns < 0: none

 private:
  std::FILE* f_ = nullptr;
  std::string path_;
};

}  // namespace ptm
