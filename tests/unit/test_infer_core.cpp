// ptminfer's core on plain logits and frames: output functions, threshold,
// smoothing, hysteresis, interval and batching.
#include <gtest/gtest.h>

#include "../common/fixtures.h"
#include "infer_core.h"
#include "models/runtime.h"

#include <ATen/Parallel.h>

#include <thread>

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

namespace ptm::test {
namespace {

// The model-input API the GPU path uses (input_buffer, write_input,
// run_input), exercised on the CPU: images written in place give the
// logits of forward(), the input keeps its images when it grows, and the
// top-k form gives the same classes and softmax scores.
TEST(ClassifierInput, WrittenImagesGiveForwardsLogits) {
  ClassifierOptions o;
  o.model = fixture("resnet18_10.pth");
  Classifier c(o);
  const int s = c.info().crop_size;
  const size_t plane = size_t(3) * size_t(s) * size_t(s);
  std::vector<float> a(plane), b(plane);
  for (size_t i = 0; i < plane; ++i) {
    a[i] = float(std::sin(0.001 * double(i)));
    b[i] = float(std::cos(0.003 * double(i)));
  }
  Classifier::InputBuffer in = c.input_buffer(1);
  EXPECT_FALSE(in.cuda);
  EXPECT_EQ(in.image_elements, int64_t(plane));
  c.write_input(0, a.data(), false);
  c.input_buffer(3);  // grows: image 0 must survive
  c.write_input(1, b.data(), false);
  std::vector<float> got, want;
  std::vector<int64_t> idx;
  c.run_input(2, 0, 0, got, idx);
  std::vector<float> both(a);
  both.insert(both.end(), b.begin(), b.end());
  c.forward(both.data(), 2, s, s, want);
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_FLOAT_EQ(got[i], want[i]) << i;
  // Top 3 after softmax, per image.
  std::vector<float> top;
  c.run_input(2, 3, 1, top, idx);
  ASSERT_EQ(top.size(), 6u);
  for (int img = 0; img < 2; ++img) {
    std::vector<float> p(want.begin() + img * 10, want.begin() + (img + 1) * 10);
    softmax_inplace(p.data(), 10);
    const auto ref = top_k(p.data(), 10, 3);
    for (int j = 0; j < 3; ++j) {
      EXPECT_EQ(idx[size_t(img * 3 + j)], ref[size_t(j)].index);
      EXPECT_NEAR(top[size_t(img * 3 + j)], ref[size_t(j)].score, 1e-6);
    }
  }
  EXPECT_THROW(c.write_input(99, a.data(), false), ModelError);
  EXPECT_THROW(c.run_input(99, 0, 0, got, idx), ModelError);
}

TEST(ClassifierInput, DeviceAndPrecisionErrorsNameTheReason) {
  ClassifierOptions o;
  o.model = fixture("resnet18_10.pth");
  o.device = "tpu:3";
  EXPECT_THROW(
      {
        try {
          Classifier c(o);
        } catch (const ModelError& e) {
          EXPECT_NE(std::string(e.what()).find("tpu:3"), std::string::npos) << e.what();
          throw;
        }
      },
      ModelError);
  o.device = "cpu";
  o.precision = Precision::Float16;
  EXPECT_THROW(
      {
        try {
          Classifier c(o);
        } catch (const ModelError& e) {
          EXPECT_NE(std::string(e.what()).find("float16 precision needs a CUDA device"), std::string::npos) << e.what();
          throw;
        }
      },
      ModelError);
  // bfloat16 on the CPU: run where the CPU has the instructions (in
  // channels-last layout), else float32 with a warning.
  o.precision = Precision::BFloat16;
  Classifier c(o);
  const Classifier::InputBuffer in = c.input_buffer(1);
  if (runtime::cpu_has_bf16()) {
    EXPECT_EQ(in.type, Precision::BFloat16);
    EXPECT_TRUE(in.channels_last);
    EXPECT_TRUE(c.info().warnings.empty());
  } else {
    EXPECT_EQ(in.type, Precision::Float32);
    ASSERT_EQ(c.info().warnings.size(), 1u);
    EXPECT_NE(c.info().warnings[0].find("no bfloat16 instructions"), std::string::npos) << c.info().warnings[0];
  }
  EXPECT_EQ(device_unavailable_reason("cpu"), "");
}

// Thread counts are per model: two models with different `threads`, used
// in turn from one thread, each run with their own count (LibTorch keeps
// it per process and per thread; the last model constructed must not win).
TEST(ClassifierThreads, EachModelRunsWithItsOwnCount) {
  ClassifierOptions o;
  o.model = fixture("resnet18_10.pth");
  o.optimize = false;
  o.threads = 1;
  Classifier one(o);
  o.threads = 2;
  Classifier two(o);
  std::thread([&] {
    std::vector<float> x(size_t(3 * 64 * 64), 0.5f), y;
    one.forward(x.data(), 1, 64, 64, y);
    EXPECT_EQ(at::get_num_threads(), 1);
    two.forward(x.data(), 1, 64, 64, y);
    EXPECT_EQ(at::get_num_threads(), 2);
    one.forward(x.data(), 1, 64, 64, y);
    EXPECT_EQ(at::get_num_threads(), 1);
  }).join();
}

}  // namespace
}  // namespace ptm::test
