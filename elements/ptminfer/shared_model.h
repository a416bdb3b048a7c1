// One loaded model serving many streams: the ptminfer elements of a process
// that ask for the same model (same file version, same options) share one
// instance, so its weights are in memory once, and their frames run through
// it together. The forward passes run on the instance's own thread (it
// lives as long as the instance), which takes every image waiting when it
// becomes free (batching across streams:
// no waiting for more, so no added latency) and hands each caller its
// logits. A thread of its own because every thread that runs LibTorch keeps
// an OpenMP team: one team per model, not one per streaming thread (idle
// teams beyond the cores make libgomp's workers sleep between parallel
// regions; see model_slot.h).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "models/classifier.h"

namespace ptm {

class SharedModel {
 public:
  // The instance for `options`: the one alive for the same options and the
  // same version of the model (and labels) file, or a new one loaded now (on
  // a thread that ends with the load). Callers asking at the same time wait
  // for one load. `*existing` (when given) tells whether the instance was
  // already loaded. Throws what Classifier's constructor throws.
  static std::shared_ptr<SharedModel> get(const ClassifierOptions& options, bool* existing = nullptr);
  // Instances alive in this process (tests, diagnostics).
  static size_t instances();

  ~SharedModel();
  SharedModel(const SharedModel&) = delete;
  SharedModel& operator=(const SharedModel&) = delete;

  const ModelInfo& info() const;
  const std::string& label(int64_t index) const;
  std::string int8_status() const;  // Classifier::int8_status

  // Runs `n` images (n x 3 x size x size float32, CHW, normalised) and puts
  // n x num_classes logits in `logits`; blocks until done. Images of other
  // callers waiting at the same time go through the same forward pass.
  // Thread-safe. Throws what the forward pass throws (ModelError, ...).
  void run(const float* images, int64_t n, std::vector<float>& logits);
  // The same with the images written by `fill(i, dst)` (image i, 3 x size x
  // size floats, into the model input) on the instance's thread, within
  // its pass: the caller's preprocessing runs there, on the model's own
  // OpenMP team, while the caller waits. `fill` must not throw.
  using Fill = std::function<void(int64_t i, float* dst)>;
  void run(const Fill& fill, int64_t n, std::vector<float>& logits);

  // Forward passes run and images classified so far (tests, diagnostics).
  struct Counts {
    uint64_t passes = 0, images = 0;
  };
  Counts counts() const;

  struct Impl;

 private:
  explicit SharedModel(const ClassifierOptions& options);
  static std::shared_ptr<SharedModel> load(const ClassifierOptions& options);  // not registered
  void stop_worker();
  void submit(const float* images, const Fill* fill, int64_t n, std::vector<float>& logits);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ptm
