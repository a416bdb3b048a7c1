// ptminfer's core on plain logits and frames: output functions, threshold,
// smoothing, hysteresis, interval and batching.
#include <gtest/gtest.h>

#include "../common/fixtures.h"
#include "infer_core.h"

namespace ptm::test {
namespace {

InferCore make(InferSettings s = {}) {
  s.model.model = fixture("resnet18_10.pth");  // 10 classes
  return InferCore(s);
}

std::vector<float> logits_with_peak(int cls, float height = 5.f) {
  std::vector<float> v(10, 0.f);
  v[size_t(cls)] = height;
  return v;
}

TEST(InferCore, OutputsAndThreshold) {
  InferSettings s;
  s.top_k = 3;
  InferCore soft = make(s);
  FrameResult r = soft.rank(logits_with_peak(4));
  ASSERT_EQ(r.top.size(), 3u);
  EXPECT_EQ(r.top[0].index, 4);
  EXPECT_NEAR(r.top[0].score, std::exp(5.f) / (std::exp(5.f) + 9.f), 1e-6);
  EXPECT_EQ(r.labels[0], "class 4");
  s.output = ScoreOutput::Sigmoid;
  s.threshold = 0.6f;
  InferCore sig = make(s);
  r = sig.rank(logits_with_peak(7));
  ASSERT_EQ(r.top.size(), 1u);  // sigmoid(0) = 0.5 < 0.6
  EXPECT_NEAR(r.top[0].score, 1.f / (1.f + std::exp(-5.f)), 1e-6);
  s.output = ScoreOutput::Logits;
  s.threshold = -3.4e38f;
  InferCore raw = make(s);
  EXPECT_EQ(raw.rank(logits_with_peak(2)).top[0].score, 5.f);
}

TEST(InferCore, SmoothingIsAnExponentialAverage) {
  InferSettings s;
  s.output = ScoreOutput::Logits;
  s.smoothing = 0.75;
  s.top_k = 10;
  InferCore c = make(s);
  c.rank(logits_with_peak(1, 4.f));
  FrameResult r = c.rank(logits_with_peak(2, 4.f));
  // class 1: 0.75 * 4 + 0.25 * 0 = 3; class 2: 0.75 * 0 + 0.25 * 4 = 1
  EXPECT_EQ(r.top[0].index, 1);
  EXPECT_FLOAT_EQ(r.top[0].score, 3.f);
  EXPECT_EQ(r.top[1].index, 2);
  EXPECT_FLOAT_EQ(r.top[1].score, 1.f);
}

TEST(InferCore, HysteresisHoldsTheLabel) {
  InferSettings s;
  s.hysteresis = 3;
  s.top_k = 2;
  InferCore c = make(s);
  EXPECT_EQ(c.rank(logits_with_peak(1)).top[0].index, 1);
  EXPECT_EQ(c.rank(logits_with_peak(6)).top[0].index, 1);  // 6 leads once
  EXPECT_EQ(c.rank(logits_with_peak(6)).top[0].index, 1);  // twice
  EXPECT_EQ(c.rank(logits_with_peak(6)).top[0].index, 6);  // three times: switch
  EXPECT_EQ(c.rank(logits_with_peak(1)).top[0].index, 6);
  EXPECT_EQ(c.rank(logits_with_peak(6)).top[0].index, 6);  // the streak of 1 is broken
}

TEST(InferCore, BatchedFramesEqualSingleFrames) {
  std::vector<uint8_t> img(97 * 61 * 3);
  for (size_t i = 0; i < img.size(); ++i) img[i] = uint8_t(i * 13 + i / 7);
  FrameView f;
  f.width = 97;
  f.height = 61;
  f.planes[0] = img.data();
  f.strides[0] = 97 * 3;
  InferSettings s;
  s.output = ScoreOutput::Logits;
  s.top_k = 10;
  InferCore one = make(s), many = make(s);
  const FrameResult a = one.process(f, nullptr);
  for (int i = 0; i < 3; ++i) many.queue(f, nullptr);
  EXPECT_EQ(many.queued(), 3u);
  auto rs = many.flush();
  ASSERT_EQ(rs.size(), 3u);
  EXPECT_EQ(many.queued(), 0u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(rs[i].frame, i);
    for (size_t k = 0; k < 10; ++k) EXPECT_NEAR(rs[i].top[k].score, a.top[k].score, 1e-4);
  }
}

}  // namespace

void register_dynamic_tests() {}

}  // namespace ptm::test
