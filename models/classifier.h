// The classifier runtime: loads a model file (any supported format) into a
// built-in architecture or TorchScript, and runs it. No LibTorch header is
// needed to use it; `forward` on at::Tensor is for callers that have one.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "loader.h"

namespace at {
class Tensor;
}

namespace ptm {

struct ClassifierOptions {
  std::string model;         // file path
  std::string architecture;  // torchvision name; empty: detected from the weights
  int64_t num_classes = 0;   // 0: as in the file; else a new head when it differs
  std::string labels;        // labels file; empty: ImageNet names for 1000 classes
  std::string wrapper_key;   // checkpoint entry holding the weights; empty: automatic
  bool strict = true;        // refuse weights that do not fit exactly
  int threads = 0;           // intra-op threads; 0: every core
  bool optimize = true;      // run a frozen, oneDNN-optimised graph of the model
};

struct ModelInfo {
  std::string path;
  std::string format;
  std::string architecture;  // "torchscript" for TorchScript files
  int64_t num_classes = 0;
  int64_t parameters = 0;
  int crop_size = 224, resize_size = 256;  // torchvision's eval transform for it
  bool bicubic = false;                     // ... and its interpolation
  std::vector<std::string> labels;
  LoadReport report;
  std::vector<std::string> notes;
};

struct Prediction {
  int64_t index;
  float score;
};

class Classifier {
 public:
  explicit Classifier(const ClassifierOptions& options);  // throws ModelError
  ~Classifier();
  Classifier(const Classifier&) = delete;
  Classifier& operator=(const Classifier&) = delete;

  const ModelInfo& info() const;

  // `input`: N x 3 x H x W float32, normalised. Returns N x num_classes logits.
  at::Tensor forward(const at::Tensor& input);
  // Plain-buffer form: `input` holds n*3*h*w floats; `logits` receives
  // n*num_classes floats.
  void forward(const float* input, int64_t n, int64_t h, int64_t w, std::vector<float>& logits);

  const std::string& label(int64_t index) const;

  // For fine-tuning (built-in architectures with a linear head only; throws
  // ModelError otherwise): the features the head sees (N x D), and the
  // weights with torchvision's keys.
  at::Tensor features(const at::Tensor& input);
  StateDict state_dict() const;
  std::string head_prefix() const;  // e.g. "fc", "classifier.1"
  int64_t feature_size() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The k largest of `scores` (ties: lower index first).
std::vector<Prediction> top_k(const float* scores, int64_t count, int k);
void softmax_inplace(float* scores, int64_t count);

}  // namespace ptm
