#include "scoring.h"

#include <algorithm>
#include <cmath>

namespace ptm {

static ScoringSettings clamped(ScoringSettings s) {
  s.top_k = std::max(1, s.top_k);
  s.smoothing = std::clamp(s.smoothing, 0.0, 0.999);
  s.hysteresis = std::max(0, s.hysteresis);
  return s;
}

Scorer::Scorer(const ScoringSettings& s) : settings_(clamped(s)) {}

void Scorer::update(const ScoringSettings& s) {
  const ScoringSettings n = clamped(s);
  if (n.output != settings_.output || n.smoothing != settings_.smoothing) smoothed_.clear();
  settings_ = n;
}

void Scorer::reset() {
  smoothed_.clear();
  shown_ = -1;
  challenger_ = 0;
  challenger_class_ = -1;
}

std::vector<Prediction> Scorer::accept(const std::vector<Prediction>& ranked) const {
  std::vector<Prediction> out;
  for (const Prediction& p : ranked)
    if (p.score >= settings_.threshold) out.push_back(p);
  return out;
}

// Under hysteresis the first class changes only after another one has led
// for `hysteresis` inferred frames in a row.
void Scorer::hold_first(std::vector<Prediction>& top, const std::vector<float>& scores) {
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
    top.insert(top.begin(), Prediction{shown_, scores[size_t(shown_)]});
    top.pop_back();
  } else {
    std::rotate(top.begin(), it, it + 1);
  }
}

std::vector<Prediction> Scorer::score(std::vector<float> v) {
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
  std::vector<Prediction> top = top_k(v.data(), n, settings_.top_k);
  if (settings_.hysteresis > 0 && !top.empty()) hold_first(top, v);
  return accept(top);
}

}  // namespace ptm
