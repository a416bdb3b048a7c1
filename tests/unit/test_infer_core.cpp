// ptminfer's core on plain logits and frames: output functions, threshold,
// smoothing, hysteresis, interval and batching.
#include <gtest/gtest.h>

#include "../common/fixtures.h"
#include "infer_core.h"
#include "models/runtime.h"

#include <ATen/Parallel.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include <unistd.h>

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

// A 97x61 RGB frame of a fixed pattern, in `img`.
FrameView test_frame(std::vector<uint8_t>& img) {
  img.resize(97 * 61 * 3);
  for (size_t i = 0; i < img.size(); ++i) img[i] = uint8_t(i * 13 + i / 7);
  FrameView f;
  f.width = 97;
  f.height = 61;
  f.planes[0] = img.data();
  f.strides[0] = 97 * 3;
  return f;
}

TEST(InferCore, BatchedFramesEqualSingleFrames) {
  std::vector<uint8_t> img;
  const FrameView f = test_frame(img);
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
  // channels-last layout) and runs it faster than float32 at load, else
  // float32 with a warning saying why; PTM_BF16_ALWAYS=1 runs it untimed.
  o.precision = Precision::BFloat16;
  ClassifierOptions f32 = o;
  f32.precision = Precision::Float32;
  Classifier reference(f32);
  const at::Tensor x = at::rand({1, 3, 224, 224});
  const at::Tensor want = reference.forward(x);
  for (const bool always : {true, false}) {
    if (always) setenv("PTM_BF16_ALWAYS", "1", 1);
    Classifier c(o);
    unsetenv("PTM_BF16_ALWAYS");
    const Classifier::InputBuffer in = c.input_buffer(1);
    const std::string warning = c.info().warnings.empty() ? "" : c.info().warnings[0];
    const double err = (c.forward(x) - want).abs().max().item<double>() / want.abs().max().item<double>();
    if (!runtime::cpu_has_bf16()) {
      EXPECT_EQ(in.type, Precision::Float32);
      ASSERT_EQ(c.info().warnings.size(), 1u);
      EXPECT_NE(warning.find("no bfloat16 instructions"), std::string::npos) << warning;
      EXPECT_LE(err, 1e-4);
    } else if (always || in.type == Precision::BFloat16) {
      EXPECT_EQ(in.type, Precision::BFloat16) << warning;
      EXPECT_TRUE(in.channels_last);
      EXPECT_TRUE(c.info().warnings.empty()) << warning;
      EXPECT_GT(err, 0) << "bfloat16 did not run";
      EXPECT_LE(err, 5e-2);
      if (!always) {
        bool noted = false;
        for (const auto& n : c.info().notes) noted |= n.rfind("bfloat16 runs: ", 0) == 0;
        EXPECT_TRUE(noted) << "no note gives the times bfloat16 was kept on";
      }
    } else {  // float32 kept: bfloat16 was not 1.1x as fast at load
      EXPECT_EQ(in.type, Precision::Float32);
      EXPECT_FALSE(in.channels_last);
      ASSERT_EQ(c.info().warnings.size(), 1u);
      EXPECT_NE(warning.find("its bfloat16 graph was not 1.1x as fast as float32"), std::string::npos) << warning;
      EXPECT_LE(err, 1e-4);
    }
    std::printf("bf16%s: %s (%.2e of the largest logit from float32's)\n", always ? " (PTM_BF16_ALWAYS=1)" : "",
                warning.empty() ? "bfloat16 runs" : warning.c_str(), err);
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

// One model for many streams (shared_model.h).
std::vector<float> test_image(size_t plane, int seed) {
  std::vector<float> v(plane);
  for (size_t i = 0; i < plane; ++i) v[i] = float(std::sin(0.001 * double(i) * (seed + 1) + seed));
  return v;
}

TEST(SharedModel, SameModelSameOptionsIsOneInstance) {
  const size_t before = SharedModel::instances();
  ClassifierOptions o;
  o.model = fixture("resnet18_10.pth");
  o.threads = 1;
  bool existing = true;
  auto a = SharedModel::get(o, &existing);
  EXPECT_FALSE(existing);
  auto b = SharedModel::get(o, &existing);
  EXPECT_TRUE(existing);
  EXPECT_EQ(a.get(), b.get());
  // The same file by another path is the same model.
  ClassifierOptions other_path = o;
  other_path.model = fixtures_dir() + "/./resnet18_10.pth";
  EXPECT_EQ(SharedModel::get(other_path).get(), a.get());
  EXPECT_EQ(SharedModel::instances(), before + 1);
  // Any model-defining option differing: another instance.
  ClassifierOptions two_threads = o;
  two_threads.threads = 2;
  auto c = SharedModel::get(two_threads, &existing);
  EXPECT_FALSE(existing);
  EXPECT_NE(c.get(), a.get());
  ClassifierOptions eager = o;
  eager.optimize = false;
  EXPECT_NE(SharedModel::get(eager).get(), a.get());
  EXPECT_EQ(SharedModel::instances(), before + 2);  // `eager`'s is gone already
  c.reset();
  a.reset();
  EXPECT_EQ(SharedModel::instances(), before + 1);
  b.reset();
  EXPECT_EQ(SharedModel::instances(), before);
  // Once no one holds it, asking again loads it again.
  auto d = SharedModel::get(o, &existing);
  EXPECT_FALSE(existing);
}

TEST(SharedModel, CallersAskingAtOnceWaitForOneLoad) {
  ClassifierOptions o;
  o.model = fixture("resnet18_10.pth");
  o.threads = 1;
  const size_t before = SharedModel::instances();
  std::vector<std::shared_ptr<SharedModel>> got(6);
  std::atomic<int> loaded_here{0};
  std::vector<std::thread> ts;
  for (size_t i = 0; i < got.size(); ++i)
    ts.emplace_back([&, i] {
      bool existing = true;
      got[i] = SharedModel::get(o, &existing);
      if (!existing) ++loaded_here;
    });
  for (auto& t : ts) t.join();
  EXPECT_EQ(loaded_here.load(), 1);
  for (const auto& m : got) EXPECT_EQ(m.get(), got[0].get());
  EXPECT_EQ(SharedModel::instances(), before + 1);
}

TEST(SharedModel, ANewVersionOfTheFileIsAnotherInstance) {
  const std::string path = std::filesystem::temp_directory_path() / ("ptm-shared-" + std::to_string(::getpid()) + ".pth");
  std::filesystem::copy_file(fixture("resnet18_10.pth"), path, std::filesystem::copy_options::overwrite_existing);
  ClassifierOptions o;
  o.model = path;
  auto a = SharedModel::get(o);
  // Replaced (another inode, as an atomic rename leaves it).
  const std::string next = path + ".new";
  std::filesystem::copy_file(fixture("resnet18_10.pth"), next, std::filesystem::copy_options::overwrite_existing);
  std::filesystem::rename(next, path);
  bool existing = true;
  auto b = SharedModel::get(o, &existing);
  EXPECT_FALSE(existing);
  EXPECT_NE(a.get(), b.get());
  std::filesystem::remove(path);
  // A model folder whose weights file is rewritten in place (the folder's
  // own stamp unchanged): another version too.
  const std::filesystem::path dir = path + ".dir";
  std::filesystem::create_directories(dir);
  const std::filesystem::path weights = dir / "weights.pth";
  std::filesystem::copy_file(fixture("resnet18_10.pth"), weights, std::filesystem::copy_options::overwrite_existing);
  ClassifierOptions folder;
  folder.model = dir.string();
  auto c = SharedModel::get(folder);
  EXPECT_EQ(SharedModel::get(folder).get(), c.get());
  const auto dir_time = std::filesystem::last_write_time(dir);
  {
    std::ifstream in(fixture("resnet18_10.pth"), std::ios::binary);
    std::ofstream out(weights, std::ios::binary | std::ios::in | std::ios::out);  // same inode
    out << in.rdbuf();
  }
  std::filesystem::last_write_time(weights, std::filesystem::last_write_time(weights) + std::chrono::seconds(2));
  EXPECT_EQ(std::filesystem::last_write_time(dir), dir_time);
  EXPECT_NE(SharedModel::get(folder).get(), c.get());
  std::filesystem::remove_all(dir);
  // A file that cannot be loaded: the error, and no entry left behind.
  o.model = path;
  EXPECT_THROW(SharedModel::get(o), ModelError);
  EXPECT_THROW(SharedModel::get(o), ModelError);
}

// Callers on several threads at once: each gets the logits of its own
// images, equal to a model of its own, while the passes take the images of
// several callers together.
TEST(SharedModel, ConcurrentCallersAreBatchedAndGetTheirOwnLogits) {
  ClassifierOptions o;
  o.model = fixture("resnet18_10.pth");
  o.threads = 1;
  Classifier reference(o);
  const int s = reference.info().crop_size;
  const size_t plane = size_t(3) * size_t(s) * size_t(s);
  auto shared = SharedModel::get(o);
  const SharedModel::Counts before = shared->counts();
  constexpr int kCallers = 6, kRuns = 8;
  std::vector<std::vector<float>> images, want(kCallers);
  for (int c = 0; c < kCallers; ++c) {
    // Caller c sends c % 3 + 1 images a call.
    const int n = c % 3 + 1;
    std::vector<float> batch;
    for (int i = 0; i < n; ++i) {
      const auto img = test_image(plane, c * 3 + i);
      batch.insert(batch.end(), img.begin(), img.end());
    }
    images.push_back(batch);
    reference.forward(batch.data(), n, s, s, want[size_t(c)]);
  }
  std::vector<std::vector<std::vector<float>>> got(kCallers);
  std::vector<std::thread> ts;
  for (int c = 0; c < kCallers; ++c)
    ts.emplace_back([&, c] {
      for (int r = 0; r < kRuns; ++r) {
        std::vector<float> logits;
        shared->run(images[size_t(c)].data(), c % 3 + 1, logits);
        got[size_t(c)].push_back(logits);
      }
    });
  for (auto& t : ts) t.join();
  for (int c = 0; c < kCallers; ++c)
    for (const auto& logits : got[size_t(c)]) {
      ASSERT_EQ(logits.size(), want[size_t(c)].size()) << "caller " << c;
      for (size_t i = 0; i < logits.size(); ++i) EXPECT_NEAR(logits[i], want[size_t(c)][i], 1e-4) << "caller " << c;
    }
  const SharedModel::Counts after = shared->counts();
  const uint64_t images_run = after.images - before.images, passes = after.passes - before.passes;
  EXPECT_EQ(images_run, uint64_t(kRuns * (1 + 2 + 3 + 1 + 2 + 3)));
  // Six callers for one forward thread: passes take several callers' images.
  EXPECT_LT(passes, uint64_t(kRuns * kCallers)) << images_run << " images in " << passes << " passes";
}

// InferCore on a shared model: the results of a model of its own, one
// frame at a time and in batches, and a region batch.
TEST(SharedModel, InferCoreGivesTheResultsOfItsOwnModel) {
  std::vector<uint8_t> img;
  const FrameView f = test_frame(img);
  InferSettings s;
  s.output = ScoreOutput::Logits;
  s.top_k = 10;
  InferCore own = make(s);
  s.share = true;
  InferCore shared = make(s), shared2 = make(s);
  ASSERT_TRUE(shared.shared());
  EXPECT_FALSE(own.shared());
  EXPECT_EQ(shared.shared().get(), shared2.shared().get());
  EXPECT_TRUE(shared2.took_loaded_model());
  const FrameResult want = own.process(f, nullptr);
  const FrameResult one = shared.process(f, nullptr);
  for (int i = 0; i < 3; ++i) shared2.queue(f, nullptr);
  const auto three = shared2.flush();
  ASSERT_EQ(three.size(), 3u);
  // Frames left for the model's thread to preprocess (until_flush) and
  // frames preprocessed at once, in one batch.
  shared2.queue(f, nullptr, true);
  shared2.queue(f, nullptr);
  shared2.queue(f, nullptr, true);
  const auto mixed = shared2.flush();
  ASSERT_EQ(mixed.size(), 3u);
  // A frame it cannot read, left for the model's thread: flush() throws
  // what preprocessing threw and drops that batch (its frames may be
  // unmapped by then), and the next frame runs alone.
  FrameView bad = f;
  bad.planes[0] = nullptr;
  shared2.queue(bad, nullptr, true);
  EXPECT_THROW(shared2.flush(), std::invalid_argument);
  const FrameResult after_bad = shared2.process(f, nullptr);
  const auto regions = shared.classify_regions(f, {{0, 0, 97, 61}, {10, 5, 40, 30}}, 16);
  const auto own_regions = own.classify_regions(f, {{0, 0, 97, 61}, {10, 5, 40, 30}}, 16);
  ASSERT_EQ(regions.size(), 2u);
  for (size_t k = 0; k < 10; ++k) {
    EXPECT_EQ(one.top[k].index, want.top[k].index);
    EXPECT_NEAR(one.top[k].score, want.top[k].score, 1e-4);
    for (const auto& r : three) EXPECT_NEAR(r.top[k].score, want.top[k].score, 1e-4);
    for (const auto& r : mixed) EXPECT_NEAR(r.top[k].score, want.top[k].score, 1e-4);
    EXPECT_NEAR(after_bad.top[k].score, want.top[k].score, 1e-4);
    for (size_t g = 0; g < 2; ++g) EXPECT_NEAR(regions[g].top[k].score, own_regions[g].top[k].score, 1e-4);
  }
  EXPECT_EQ(one.labels, want.labels);
  // Another input size: the instance at that size, the others keep theirs.
  ASSERT_EQ(shared.set_input_size(160), "");
  EXPECT_EQ(shared.info().crop_size, 160);
  EXPECT_EQ(shared2.info().crop_size, 224);
  EXPECT_NE(shared.shared().get(), shared2.shared().get());
  ASSERT_EQ(own.set_input_size(160), "");
  const FrameResult small = shared.process(f, nullptr), own_small = own.process(f, nullptr);
  for (size_t k = 0; k < 10; ++k) EXPECT_NEAR(small.top[k].score, own_small.top[k].score, 1e-4);
}

// The CPU allocator that keeps freed blocks (runtime.h): a block freed is
// handed out again for the same size, its contents are the new owner's to
// write, small ones stay with the base allocator, and what it keeps stays
// within its bound as sizes change.
TEST(CpuCache, FreedBlocksServeTheNextRequestOfTheirSize) {
  runtime::init();
  ASSERT_TRUE(runtime::cpu_cache_installed());
  void* first = nullptr;
  {
    at::Tensor a = at::empty({1 << 20}, at::kFloat);  // 4 MB
    a.fill_(3.f);
    first = a.data_ptr();
  }
  const size_t kept = runtime::cpu_cache_bytes();
  EXPECT_GE(kept, size_t(4) << 20);
  {
    at::Tensor b = at::zeros({1 << 20}, at::kFloat);
    EXPECT_EQ(b.data_ptr(), first);  // the same block again
    EXPECT_EQ(b.sum().item<float>(), 0.f);
    EXPECT_EQ(runtime::cpu_cache_bytes(), kept - (size_t(4) << 20));
    at::Tensor small = at::ones({100}, at::kFloat);
    EXPECT_EQ(small.sum().item<float>(), 100.f);
  }
  // 40 blocks of 12..51 MB in turn, each freed before the next: the cache
  // stays within 256 MB and keeps the newest.
  for (int i = 0; i < 40; ++i) {
    at::Tensor t = at::empty({int64_t(12 + i) << 18}, at::kFloat);
    t.fill_(float(i));
    EXPECT_EQ(t.max().item<float>(), float(i));
  }
  EXPECT_LE(runtime::cpu_cache_bytes(), size_t(256) << 20);
  EXPECT_GE(runtime::cpu_cache_bytes(), size_t(51) << 20);
  // Model results through it: the same logits as before, twice. A load
  // gives back what was kept (its own leftovers and the blocks above).
  ClassifierOptions o;
  o.model = fixture("resnet18_10.pth");
  Classifier c(o);
  EXPECT_EQ(runtime::cpu_cache_bytes(), size_t(0));
  std::vector<float> x(size_t(3 * 224 * 224)), y1, y2;
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(std::sin(0.01 * double(i)));
  c.forward(x.data(), 1, 224, 224, y1);
  c.forward(x.data(), 1, 224, 224, y2);
  EXPECT_EQ(y1, y2);
}


// precision=int8: the first images run the observed graph (float32 results),
// then the quantized graph takes over; its logits stay near fp32's.
std::vector<float> pattern_images(int n, int s) {
  std::vector<float> x(size_t(n) * 3 * size_t(s) * size_t(s));
  for (size_t i = 0; i < x.size(); ++i)
    x[i] = float(1.5 * std::sin(0.0007 * double(i) * double(1 + i % 7)) + 0.3 * std::cos(0.013 * double(i)));
  return x;
}

double worst_relative(const std::vector<float>& got, const std::vector<float>& want) {
  float scale = 1e-6f, worst = 0.f;
  for (float v : want) scale = std::max(scale, std::abs(v));
  for (size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::abs(got[i] - want[i]));
  return double(worst / scale);
}

TEST(ClassifierInt8, CalibratesOnTheFirstImagesThenRunsQuantized) {
  setenv("PTM_INT8_ALWAYS", "1", 1);
  ClassifierOptions o;
  o.model = fixture("resnet18_10.pth");
  Classifier f32(o);
  o.precision = Precision::Int8;
  o.calibration_images = 3;
  Classifier q(o);
  EXPECT_TRUE(q.info().warnings.empty());
  EXPECT_EQ(f32.int8_status(), "");
  EXPECT_EQ(q.int8_status(), "calibrating (3 images to go)");
  const int s = q.info().crop_size;
  const std::vector<float> x = pattern_images(4, s);
  const size_t one = size_t(3) * size_t(s) * size_t(s);
  std::vector<float> want, got;
  f32.forward(x.data(), 2, s, s, want);
  q.forward(x.data(), 2, s, s, got);  // calibrating: float32 results
  ASSERT_EQ(got.size(), want.size());
  EXPECT_LT(worst_relative(got, want), 1e-4);
  EXPECT_EQ(q.int8_status(), "calibrating (1 image to go)");
  q.forward(x.data() + 2 * one, 1, s, s, got);
  EXPECT_EQ(q.int8_status(), "int8");
  // Quantized now: near fp32 (8-bit activations, per-channel 8-bit
  // weights: docs/performance.md), and not fp32 itself.
  f32.forward(x.data(), 4, s, s, want);
  q.forward(x.data(), 4, s, s, got);
  ASSERT_EQ(got.size(), want.size());
  const double err = worst_relative(got, want);
  EXPECT_LT(err, 0.05) << err;
  EXPECT_GT(err, 1e-5) << err;
  unsetenv("PTM_INT8_ALWAYS");
}

// Where the float32 path runs on ptm's oneDNN executor and the CPU has VNNI,
// int8 is the executor's own int8 graph; PTM_INT8_EXECUTOR=0 takes
// LibTorch's quantized graph. Both stay near fp32, and they are two
// different quantizations (their logits differ).
TEST(ClassifierInt8, ExecutorOrLibTorchQuantizedGraph) {
  setenv("PTM_INT8_ALWAYS", "1", 1);
  ClassifierOptions o;
  o.model = fixture("resnet18_10.pth");
  Classifier f32(o);
  bool executor = false;
  for (const auto& n : f32.info().notes) executor |= n.find("runs on ptm's oneDNN graph executor") != std::string::npos;
  o.precision = Precision::Int8;
  o.calibration_images = 2;
  const int s = f32.info().crop_size;
  const std::vector<float> x = pattern_images(3, s);
  std::vector<float> want;
  f32.forward(x.data(), 3, s, s, want);
  std::vector<std::vector<float>> got;
  for (const char* env : {"1", "0"}) {
    setenv("PTM_INT8_EXECUTOR", env, 1);
    Classifier q(o);
    std::vector<float> y;
    q.forward(x.data(), 2, s, s, y);  // calibration
    EXPECT_EQ(q.int8_status(), "int8") << "PTM_INT8_EXECUTOR=" << env;
    q.forward(x.data(), 3, s, s, y);
    ASSERT_EQ(y.size(), want.size());
    const double err = worst_relative(y, want);
    EXPECT_LT(err, 0.05) << "PTM_INT8_EXECUTOR=" << env << ": " << err;
    EXPECT_GT(err, 1e-5) << "PTM_INT8_EXECUTOR=" << env << ": float32's logits";
    got.push_back(y);
  }
  unsetenv("PTM_INT8_EXECUTOR");
  unsetenv("PTM_INT8_ALWAYS");
  if (!executor || !runtime::cpu_has_vnni()) {
    GTEST_SKIP() << "float32 does not run on ptm's oneDNN executor in this build or this CPU lacks VNNI: one int8 "
                    "path only";
  }
  EXPECT_GT(worst_relative(got[0], got[1]), 1e-5) << "the executor's int8 and LibTorch's gave the same logits";
}

TEST(ClassifierInt8, CalibrationFolderAndFallbacksNameTheReason) {
  setenv("PTM_INT8_ALWAYS", "1", 1);
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / ("ptm-int8-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  for (const char* name : {"a.img", "b.img", "notes.txt"}) std::ofstream(dir / name) << name;
  ClassifierOptions o;
  o.model = fixture("resnet18_10.pth");
  o.precision = Precision::Int8;
  o.calibration_images = 5;
  o.calibration = dir.string();
  auto message = [](const ClassifierOptions& opts) -> std::string {
    try {
      Classifier c(opts);
    } catch (const ModelError& e) {
      return e.what();
    }
    return "";
  };
  // No reader (a build without OpenCV's imgcodecs).
  EXPECT_NE(message(o).find("needs an image reader"), std::string::npos) << message(o);
  // Nothing readable.
  o.calibration_reader = [](const std::string&, const ModelInfo&, std::vector<float>&) { return false; };
  EXPECT_NE(message(o).find("has no image ptm can read"), std::string::npos) << message(o);
  // An image of the wrong size.
  o.calibration_reader = [](const std::string&, const ModelInfo&, std::vector<float>& chw) {
    chw.assign(12, 0.f);
    return true;
  };
  EXPECT_NE(message(o).find("not 3x224x224"), std::string::npos) << message(o);
  // A missing folder.
  ClassifierOptions missing = o;
  missing.calibration = (dir / "absent").string();
  EXPECT_NE(message(missing).find("absent"), std::string::npos) << message(missing);
  // Two images of the folder (the text file skipped): calibrated at load.
  std::vector<std::string> read;
  o.calibration_reader = [&read](const std::string& path, const ModelInfo& m, std::vector<float>& chw) {
    if (path.size() < 4 || path.compare(path.size() - 4, 4, ".img") != 0) return false;
    read.push_back(std::filesystem::path(path).filename().string());
    chw = pattern_images(1, m.crop_size);
    return true;
  };
  {
    Classifier c(o);
    EXPECT_EQ(c.int8_status(), "int8");
    EXPECT_EQ(read, (std::vector<std::string>{"a.img", "b.img"}));
    bool noted = false;
    for (const auto& n : c.info().notes) noted |= n.find("calibrated on 2 images") != std::string::npos;
    EXPECT_TRUE(noted);
  }
  // Too few calibration images asked for.
  o.calibration_images = 0;
  EXPECT_NE(message(o).find("at least 1 calibration image"), std::string::npos) << message(o);
  // A TorchScript file: float32, with a warning saying why.
  ClassifierOptions ts;
  ts.model = fixture("model.torchscript.pt");
  ts.precision = Precision::Int8;
  Classifier t(ts);
  EXPECT_EQ(t.int8_status().rfind("float32: int8 needs weights for a built-in architecture", 0), 0u) << t.int8_status();
  ASSERT_EQ(t.info().warnings.size(), 1u);
  std::filesystem::remove_all(dir);
  unsetenv("PTM_INT8_ALWAYS");
}

}  // namespace
}  // namespace ptm::test
