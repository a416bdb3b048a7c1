// Training a new linear classification head on cached backbone features
// (cross-entropy, Adam or SGD, held-out validation, early stopping, fixed
// seed). LibTorch only.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include <ATen/core/Tensor.h>

namespace ptm {

enum class OptimizerKind { Adam, SGD };

struct TrainSettings {
  int epochs = 20;
  double learning_rate = 1e-3;
  int batch_size = 32;
  double weight_decay = 0.0;
  double momentum = 0.9;             // SGD only
  double validation_fraction = 0.2;  // of each class, held out
  int patience = 5;                  // epochs without validation gain before stopping; 0: never
  uint64_t seed = 0;
  OptimizerKind optimizer = OptimizerKind::Adam;
};

struct EpochReport {
  int epoch = 0;
  double loss = 0, train_accuracy = 0, validation_accuracy = -1;  // -1: no validation set
};

struct TrainedHead {
  at::Tensor weight, bias;  // classes x features, classes
  std::vector<EpochReport> epochs;
  int best_epoch = 0;
  double validation_accuracy = -1;
  int64_t train_samples = 0, validation_samples = 0;
};

// `features`: N x D float; `labels`: N int64 in [0, classes). Throws
// ModelError on bad input or a diverging run (NaN loss).
TrainedHead train_linear_head(const at::Tensor& features, const at::Tensor& labels, int64_t classes,
                              const TrainSettings& settings,
                              const std::function<void(const EpochReport&)>& progress = nullptr);

}  // namespace ptm
