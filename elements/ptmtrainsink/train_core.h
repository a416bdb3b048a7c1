// ptmtrainsink's GStreamer-free core: runs the frozen backbone on labelled
// frames, keeps the pooled features (reservoir-sampled per class, near
// duplicates skipped), trains a new linear head and writes a torchvision
// state dict with it.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "models/classifier.h"
#include "models/trainer.h"
#include "preprocess_core.h"

namespace ptm {

struct SampleSettings {
  int max_samples = 500;    // kept per class (reservoir sampling beyond that)
  double min_change = 0.0;  // skip a frame whose features moved less than this
                            // (relative L2) from the previous frame of its label
  uint64_t seed = 0;
  bool keep_images = false;  // also keep each kept sample's 8-bit crop (for export_dataset)
};

struct TrainOutcome {
  TrainedHead head;
  std::vector<std::string> labels;  // class i = labels[i] (sorted)
  std::string model_path, labels_path;
};

class TrainCore {
 public:
  TrainCore(const ClassifierOptions& backbone, const SampleSettings& s);  // throws ModelError

  // Returns true when the frame was kept.
  bool add(const FrameView& frame, const float* tensor, const std::string& label);
  size_t samples() const;
  std::map<std::string, size_t> per_class() const;
  std::map<std::string, uint64_t> seen() const { return seen_; }
  int crop_size() const { return classifier_.info().crop_size; }

  // Trains and writes `output` (state dict) and its labels file
  // (labels_path_beside(output)), both atomically. Throws
  // ModelError (nothing is written then).
  TrainOutcome train(const TrainSettings& t, const std::string& output,
                     const std::function<void(const EpochReport&)>& progress = nullptr);

  // Writes the kept samples' crops as an ImageFolder dataset:
  // <dir>/<label>/<n>.jpg (each file atomically). Needs keep_images.
  size_t export_dataset(const std::string& dir) const;

 private:
  Classifier classifier_;
  Preprocessor preprocessor_;
  SampleSettings settings_;
  std::mt19937_64 rng_;
  std::map<std::string, std::vector<std::vector<float>>> kept_;
  std::map<std::string, std::vector<std::vector<uint8_t>>> images_;  // RGB crops, parallel to kept_
  std::map<std::string, uint64_t> seen_;
  std::map<std::string, std::vector<float>> previous_;
  std::vector<float> input_;
};

}  // namespace ptm
