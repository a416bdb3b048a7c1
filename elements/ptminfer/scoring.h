// How one frame's logits become the reported classes: output function,
// temporal smoothing, top-k, hysteresis and threshold. No model, no
// GStreamer: tested on plain logits.
#pragma once

#include <cstdint>
#include <vector>

#include "models/classifier.h"  // Prediction, top_k, softmax_inplace

namespace ptm {

enum class ScoreOutput { Softmax, Sigmoid, Logits };

struct ScoringSettings {
  int top_k = 5;
  float threshold = -3.4e38f;  // drop results scoring below (after scoring); default: keep all
  ScoreOutput output = ScoreOutput::Softmax;
  double smoothing = 0.0;      // EMA weight of the past scores, 0 = off
  int hysteresis = 0;          // inferred frames a new top class must lead before it is reported
};

class Scorer {
 public:
  explicit Scorer(const ScoringSettings& s = {});
  // New settings (clamped to their ranges); the smoothed scores restart
  // when the output function or the smoothing weight changes.
  void update(const ScoringSettings& s);
  const ScoringSettings& settings() const { return settings_; }
  // Whether score() needs every class's logit (smoothing and hysteresis
  // do), or the device's top k (already scored) may be used with accept().
  bool needs_all_scores() const { return settings_.smoothing > 0 || settings_.hysteresis > 0; }
  // One inferred frame's logits -> its classes, best first.
  std::vector<Prediction> score(std::vector<float> logits);
  // Classes already scored and ranked elsewhere (e.g. on the GPU): only
  // the threshold applies.
  std::vector<Prediction> accept(const std::vector<Prediction>& ranked) const;
  void reset();  // a new segment: smoothing and hysteresis restart

 private:
  void hold_first(std::vector<Prediction>& top, const std::vector<float>& scores);

  ScoringSettings settings_;
  std::vector<float> smoothed_;
  int64_t shown_ = -1;  // class reported first under hysteresis
  int challenger_ = 0;  // consecutive wins of another class
  int64_t challenger_class_ = -1;
};

}  // namespace ptm
