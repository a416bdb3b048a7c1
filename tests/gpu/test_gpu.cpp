// GPU tests: the fused CUDA preprocessing kernel against the CPU path, and
// the CUDA-memory pipeline (cudaupload ! cudaconvert ! ptmpreprocess !
// ptminfer device=cuda ! ptmoverlay) against the CPU pipeline on the same
// frames, including that no image data crosses between host and device.
// Every test skips, saying why, where no CUDA GPU is usable.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <gst/gst.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "preprocess_core.h"
#include "ptmcuda.h"
#include "zero_copy_probe.h"

namespace ptm::test {
std::string& fixtures_dir();
namespace {

std::string fixture(const std::string& name) { return fixtures_dir() + "/" + name; }

#define PTM_REQUIRE_GPU()                                                                                        \
  do {                                                                                                           \
    std::string why;                                                                                             \
    if (cuda::device_count(&why) <= 0)                                                                           \
      GTEST_SKIP() << "no CUDA GPU here (" << why << "): the GPU tests run on a GPU machine (scripts/gpu-check)"; \
  } while (0)

// ------------------------------------------------------------------ kernel

struct HostFrame {
  FrameView view;
  std::vector<std::vector<uint8_t>> planes;
};

// Random bytes in `f`'s layout, with padded strides.
HostFrame random_frame(PixelFormat f, int w, int h, std::mt19937& rng) {
  HostFrame hf;
  hf.view.format = f;
  hf.view.width = w;
  hf.view.height = h;
  std::vector<std::pair<int, int>> planes;  // row bytes, rows
  const int cw = (w + 1) / 2, ch = (h + 1) / 2;
  switch (f) {
    case PixelFormat::RGB: case PixelFormat::BGR: planes = {{w * 3, h}}; break;
    case PixelFormat::GRAY8: planes = {{w, h}}; break;
    case PixelFormat::I420: planes = {{w, h}, {cw, ch}, {cw, ch}}; break;
    case PixelFormat::NV12: planes = {{w, h}, {cw * 2, ch}}; break;
    default: planes = {{w * 4, h}}; break;
  }
  std::uniform_int_distribution<int> byte(0, 255);
  for (size_t i = 0; i < planes.size(); ++i) {
    const int stride = planes[i].first + 13;
    hf.planes.emplace_back(size_t(stride) * size_t(planes[i].second));
    for (auto& b : hf.planes.back()) b = uint8_t(byte(rng));
    hf.view.strides[i] = stride;
  }
  for (size_t i = 0; i < hf.planes.size(); ++i) hf.view.planes[i] = hf.planes[i].data();
  return hf;
}

struct DeviceCopy {
  FrameView view;
  std::vector<void*> buffers;
  explicit DeviceCopy(const HostFrame& hf) : view(hf.view) {
    for (size_t i = 0; i < hf.planes.size(); ++i) {
      void* d = nullptr;
      EXPECT_EQ(cudaMalloc(&d, hf.planes[i].size()), cudaSuccess);
      EXPECT_EQ(cudaMemcpy(d, hf.planes[i].data(), hf.planes[i].size(), cudaMemcpyHostToDevice), cudaSuccess);
      buffers.push_back(d);
      view.planes[i] = static_cast<const uint8_t*>(d);
    }
  }
  ~DeviceCopy() {
    for (void* d : buffers) cudaFree(d);
  }
};

// Outputs of one preprocessing implementation for a frame: CHW float32,
// HWC float32 and CHW float16.
struct Outputs {
  std::vector<float> chw, hwc;
  std::vector<__half> half;
  std::vector<__nv_bfloat16> bf16;  // checked when filled
};
using Runner = std::function<Outputs(const Preprocessor&, const HostFrame&)>;

// Every format, 6 frame sizes (odd and tiny ones too) and 5 transform
// settings: `run` must give the CPU path's floats exactly.
void expect_cpu_values(const Runner& run) {
  std::mt19937 rng(5);
  const PixelFormat formats[] = {PixelFormat::RGB,  PixelFormat::BGR,  PixelFormat::RGBA, PixelFormat::BGRA,
                                 PixelFormat::RGBx, PixelFormat::BGRx, PixelFormat::xRGB, PixelFormat::xBGR,
                                 PixelFormat::ARGB, PixelFormat::ABGR, PixelFormat::GRAY8, PixelFormat::I420,
                                 PixelFormat::NV12};
  // 300x500 stretched to 224x224 takes Pillow 13's vertical-first order.
  const std::pair<int, int> sizes[] = {{1920, 1080}, {641, 479}, {300, 500}, {224, 224}, {100, 37}, {3, 5}};
  std::vector<PreprocessConfig> configs(5);
  configs[1].filter = Filter::Bicubic;
  configs[1].resize_size = 232;
  configs[2].mode = ResizeMode::Stretch;
  configs[2].bgr = true;
  configs[3].mode = ResizeMode::Letterbox;
  configs[3].pad_value = 114;
  configs[3].crop_width = 320;
  configs[3].crop_height = 192;
  configs[4].mode = ResizeMode::Stretch;
  configs[4].pass_order = PassOrder::Pillow12;
  size_t compared = 0;
  for (PixelFormat f : formats) {
    for (auto [w, h] : sizes) {
      HostFrame hf = random_frame(f, w, h, rng);
      for (const PreprocessConfig& c : configs) {
        Preprocessor cpu(c);
        const size_t n = size_t(3) * size_t(c.crop_width) * size_t(c.crop_height);
        std::vector<float> want(n);
        cpu.run(hf.view, want.data());
        const Outputs got = run(cpu, hf);
        ASSERT_EQ(got.chw.size(), n);
        const size_t plane = size_t(c.crop_width) * size_t(c.crop_height);
        size_t bad = 0, bad_hwc = 0, bad_half = 0, bad_bf16 = 0;
        for (size_t i = 0; i < n; ++i) {
          bad += std::memcmp(&want[i], &got.chw[i], sizeof(float)) != 0;
          bad_half += __half2float(got.half[i]) != __half2float(__float2half_rn(want[i]));
          if (!got.bf16.empty())
            bad_bf16 += __bfloat162float(got.bf16[i]) != __bfloat162float(__float2bfloat16_rn(want[i]));
          const size_t ch = i / plane, pos = i % plane;
          bad_hwc += std::memcmp(&want[i], &got.hwc[pos * 3 + ch], sizeof(float)) != 0;
        }
        EXPECT_EQ(bad, 0u) << "format " << int(f) << " " << w << "x" << h << " mode " << int(c.mode);
        EXPECT_EQ(bad_hwc, 0u) << "channels-last, format " << int(f) << " " << w << "x" << h;
        EXPECT_EQ(bad_half, 0u) << "float16, format " << int(f) << " " << w << "x" << h;
        EXPECT_EQ(bad_bf16, 0u) << "bfloat16, format " << int(f) << " " << w << "x" << h;
        ++compared;
      }
    }
  }
  std::printf("compared %zu frame/setting pairs value by value with the CPU path\n", compared);
}

// The kernel's per-pixel code, run on the host: its indexing, tables and
// arithmetic against the CPU path, on any machine.
TEST(KernelCode, OnTheHostGivesTheCpuPathsValues) {
  expect_cpu_values([](const Preprocessor& cpu, const HostFrame& hf) {
    const ResamplePlan plan = cpu.plan(hf.view);
    const size_t n = size_t(3) * size_t(plan.out_width) * size_t(plan.out_height);
    Outputs o{std::vector<float>(n), std::vector<float>(n), std::vector<__half>(n), std::vector<__nv_bfloat16>(n)};
    cuda::emulate_preprocess(plan, hf.view, o.chw.data(), cuda::OutputType::Float32, false);
    cuda::emulate_preprocess(plan, hf.view, o.hwc.data(), cuda::OutputType::Float32, true);
    cuda::emulate_preprocess(plan, hf.view, o.half.data(), cuda::OutputType::Float16, false);
    cuda::emulate_preprocess(plan, hf.view, o.bf16.data(), cuda::OutputType::BFloat16, false);
    return o;
  });
}

TEST(Kernel, OnTheGpuGivesTheCpuPathsValues) {
  PTM_REQUIRE_GPU();
  cuda::Stream own;
  void* stream = own.on(0);
  expect_cpu_values([&](const Preprocessor& cpu, const HostFrame& hf) {
    DeviceCopy dc(hf);
    cuda::Preprocess gpu;
    gpu.set_plan(cpu.plan(hf.view));
    const size_t n = size_t(3) * size_t(gpu.plan()->out_width) * size_t(gpu.plan()->out_height);
    Outputs o{std::vector<float>(n), std::vector<float>(n), std::vector<__half>(n), {}};
    void* out = nullptr;
    EXPECT_EQ(cudaMalloc(&out, n * sizeof(float) * 3), cudaSuccess);
    float* f = static_cast<float*>(out);
    gpu.run(dc.view, f, cuda::OutputType::Float32, false, stream);
    gpu.run(dc.view, f + n, cuda::OutputType::Float32, true, stream);
    gpu.run(dc.view, f + 2 * n, cuda::OutputType::Float16, false, stream);
    own.synchronize();
    EXPECT_EQ(cudaMemcpy(o.chw.data(), f, n * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(o.hwc.data(), f + n, n * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(o.half.data(), f + 2 * n, n * sizeof(__half), cudaMemcpyDeviceToHost), cudaSuccess);
    cudaFree(out);
    return o;
  });
}

// The overlay kernel's code on the host: an opaque patch replaces the
// pixels it covers (RGBA), a transparent one changes nothing, and on NV12
// white goes to luma 235 and neutral chroma in limited range.
TEST(KernelCode, OverlayBlendOnTheHost) {
  std::vector<uint8_t> frame(size_t(16) * 8 * 4, 10);
  FrameView v;
  v.format = PixelFormat::RGBA;
  v.width = 16;
  v.height = 8;
  v.planes[0] = frame.data();
  v.strides[0] = 16 * 4;
  std::vector<uint8_t> patch(size_t(4) * 2 * 4);
  for (size_t i = 0; i < patch.size(); i += 4) patch[i] = 200, patch[i + 1] = 100, patch[i + 2] = 50, patch[i + 3] = 255;
  patch[3] = 0;  // first pixel transparent
  const float yuv709_limited[7] = {255.f / 219.f, 16.f, 255.f / 224.f, 2.f * (1 - 0.2126f), 0, 0, 2.f * (1 - 0.0722f)};
  cuda::emulate_blend_patch(v, patch.data(), 4, 2, 3, 1, yuv709_limited);
  auto px = [&](int x, int y) { return &frame[(size_t(y) * 16 + size_t(x)) * 4]; };
  EXPECT_EQ(px(3, 1)[0], 10);  // transparent
  EXPECT_EQ(px(4, 1)[0], 200);
  EXPECT_EQ(px(4, 1)[1], 100);
  EXPECT_EQ(px(4, 1)[2], 50);
  EXPECT_EQ(px(4, 1)[3], 10);  // alpha channel of the frame untouched
  EXPECT_EQ(px(7, 1)[0], 10);  // outside the patch
  EXPECT_EQ(px(6, 2)[0], 200);
  EXPECT_EQ(px(6, 3)[0], 10);
  // NV12, white
  std::vector<uint8_t> y(8 * 4, 16), uv(8 * 2, 128);
  FrameView n;
  n.format = PixelFormat::NV12;
  n.width = 8;
  n.height = 4;
  n.planes[0] = y.data();
  n.planes[1] = uv.data();
  n.strides[0] = 8;
  n.strides[1] = 8;
  std::vector<uint8_t> white(size_t(2) * 2 * 4, 255);
  cuda::emulate_blend_patch(n, white.data(), 2, 2, 2, 0, yuv709_limited);
  EXPECT_EQ(y[2], 235);
  EXPECT_EQ(y[8 + 3], 235);
  EXPECT_EQ(y[0], 16);
  EXPECT_EQ(uv[2], 128);
  EXPECT_EQ(uv[3], 128);
}

// ---------------------------------------------------------------- pipeline

struct Frames {
  // Per element name: frame number -> class id -> score.
  std::map<std::string, std::map<guint64, std::map<int, float>>> scores;
  std::string error;
  GstStructure* stats = nullptr;
  ~Frames() {
    if (stats) gst_structure_free(stats);
  }
};

void run_pipeline(const std::string& desc, Frames& out, const char* stats_of = nullptr) {
  GError* err = nullptr;
  GstElement* pipe = gst_parse_launch(desc.c_str(), &err);
  ASSERT_TRUE(pipe) << (err ? err->message : "parse failed") << ": " << desc;
  GstBus* bus = gst_element_get_bus(pipe);
  gst_element_set_state(pipe, GST_STATE_PLAYING);
  for (bool done = false; !done;) {
    GstMessage* m = gst_bus_timed_pop(bus, 120 * GST_SECOND);
    if (!m) {
      out.error = "timed out";
      break;
    }
    switch (GST_MESSAGE_TYPE(m)) {
      case GST_MESSAGE_EOS: done = true; break;
      case GST_MESSAGE_ERROR: {
        GError* e = nullptr;
        gchar* dbg = nullptr;
        gst_message_parse_error(m, &e, &dbg);
        out.error = std::string(e->message) + " | " + (dbg ? dbg : "");
        g_error_free(e);
        g_free(dbg);
        done = true;
        break;
      }
      case GST_MESSAGE_ELEMENT: {
        const GstStructure* s = gst_message_get_structure(m);
        if (gst_structure_has_name(s, "ptm-classification")) {
          guint64 frame = 0;
          gst_structure_get_uint64(s, "frame", &frame);
          const GValue* ids = gst_structure_get_value(s, "class-ids");
          const GValue* sc = gst_structure_get_value(s, "scores");
          auto& dst = out.scores[GST_MESSAGE_SRC_NAME(m)][frame];
          for (guint i = 0; i < gst_value_array_get_size(ids); ++i)
            dst[g_value_get_int(gst_value_array_get_value(ids, i))] = g_value_get_float(gst_value_array_get_value(sc, i));
        }
        break;
      }
      default: break;
    }
    gst_message_unref(m);
  }
  if (stats_of) {
    GstElement* e = gst_bin_get_by_name(GST_BIN(pipe), stats_of);
    if (e) {
      g_object_get(e, "stats", &out.stats, nullptr);
      gst_object_unref(e);
    }
  }
  gst_element_set_state(pipe, GST_STATE_NULL);
  gst_object_unref(bus);
  gst_object_unref(pipe);
}

std::vector<int> top5(const std::map<int, float>& s) {
  std::vector<std::pair<float, int>> v;
  for (auto& [k, x] : s) v.push_back({-x, k});
  std::sort(v.begin(), v.end());
  std::vector<int> ids;
  for (size_t i = 0; i < 5 && i < v.size(); ++i) ids.push_back(v[i].second);
  return ids;
}

// Largest logit difference relative to the largest logit magnitude.
double rel_diff(const std::map<int, float>& a, const std::map<int, float>& b) {
  double m = 1e-12, d = 0;
  for (auto& [k, v] : b) m = std::max(m, double(std::fabs(v)));
  for (auto& [k, v] : a) {
    auto it = b.find(k);
    d = std::max(d, it == b.end() ? 1e9 : double(std::fabs(v - it->second)));
  }
  return d / m;
}

void require_gpu_pipeline() {
  for (const char* e : {"cudaupload", "cudaconvert", "cudadownload"})
    ASSERT_TRUE(gst_element_factory_find(e) != nullptr)
        << e << " is missing: a GPU is present, so gst-plugins-bad's nvcodec plugin should provide it";
}

// The same frames through both paths: a tee after the upload, so the CPU
// branch sees exactly the bytes the GPU branch reads (downloaded).
std::string tee_pipeline(const std::string& format, int frames, const std::string& gpu_opts, const std::string& cpu_opts) {
  const std::string model = fixture("resnet18.pth");
  return "videotestsrc num-buffers=" + std::to_string(frames) +
         " pattern=ball ! video/x-raw,format=RGBA,width=1280,height=720 ! cudaupload ! cudaconvert ! "
         "video/x-raw(memory:CUDAMemory),format=" + format + " ! tee name=t "
         "t. ! queue ! ptmpreprocess ! ptminfer name=gpu device=cuda output=logits top-k=1000 model=" + model + " " +
         gpu_opts + " ! ptmoverlay ! fakesink "
         "t. ! queue ! cudadownload ! video/x-raw,format=" + format +
         " ! ptmpreprocess ! ptminfer name=cpu device=cpu output=logits top-k=1000 model=" + model + " " + cpu_opts +
         " ! ptmoverlay ! fakesink";
}

void expect_same_classification(const Frames& f, int frames, double tolerance) {
  ASSERT_EQ(f.error, "");
  const auto& g = f.scores.at("gpu");
  const auto& c = f.scores.at("cpu");
  ASSERT_EQ(int(g.size()), frames);
  ASSERT_EQ(int(c.size()), frames);
  double worst = 0;
  for (auto& [frame, s] : g) {
    EXPECT_EQ(top5(s), top5(c.at(frame))) << "frame " << frame;
    worst = std::max(worst, rel_diff(s, c.at(frame)));
  }
  std::printf("GPU vs CPU: max |logit diff| / max |logit| = %.3g over %d frames\n", worst, frames);
  EXPECT_LE(worst, tolerance);
}

TEST(Pipeline, CudaMemoryClassifiesLikeTheCpuPathRGBA) {
  PTM_REQUIRE_GPU();
  require_gpu_pipeline();
  Frames f;
  run_pipeline(tee_pipeline("RGBA", 24, "", ""), f, "gpu");
  expect_same_classification(f, 24, 1e-4);
  ASSERT_TRUE(f.stats);
  guint64 in_place = 0, via_host = 0;
  gst_structure_get_uint64(f.stats, "cuda-in-place", &in_place);
  gst_structure_get_uint64(f.stats, "cuda-via-host", &via_host);
  EXPECT_EQ(in_place, 24u);
  EXPECT_EQ(via_host, 0u);
}

TEST(Pipeline, CudaMemoryClassifiesLikeTheCpuPathNV12) {
  PTM_REQUIRE_GPU();
  require_gpu_pipeline();
  Frames f;
  run_pipeline(tee_pipeline("NV12", 16, "", ""), f);
  expect_same_classification(f, 16, 1e-4);
}

TEST(Pipeline, BatchesAndCudaGraphsGiveTheSameResults) {
  PTM_REQUIRE_GPU();
  require_gpu_pipeline();
  Frames f;
  run_pipeline(tee_pipeline("BGRA", 19, "batch-size=8 cuda-graphs=true", "batch-size=4"), f);
  expect_same_classification(f, 19, 1e-4);
}

TEST(Pipeline, Float16AgreesWithFloat32) {
  PTM_REQUIRE_GPU();
  require_gpu_pipeline();
  Frames f;
  run_pipeline(tee_pipeline("RGBA", 12, "precision=fp16 channels-last=true", ""), f);
  ASSERT_EQ(f.error, "");
  size_t same_top1 = 0;
  double worst = 0;
  for (auto& [frame, s] : f.scores.at("gpu")) {
    same_top1 += top5(s).front() == top5(f.scores.at("cpu").at(frame)).front();
    worst = std::max(worst, rel_diff(s, f.scores.at("cpu").at(frame)));
  }
  std::printf("fp16 vs fp32: top-1 equal on %zu of 12 frames, max relative logit diff %.3g\n", same_top1, worst);
  EXPECT_GE(same_top1, 11u);
  EXPECT_LE(worst, 2e-2);
}

// No image data between host and device per frame: CUPTI counts every
// copy while frames go cudaupload ! ptmpreprocess ! ptminfer ! ptmoverlay.
// cudaupload's own uploads (the frames entering the GPU) are known and
// taken off; what remains is what ptm moved.
TEST(Pipeline, NoImageBytesCrossBetweenHostAndDevice) {
  PTM_REQUIRE_GPU();
  require_gpu_pipeline();
  if (!zero_copy_probe_available())
    GTEST_SKIP() << "built without CUPTI (pass -Dcupti_root=<dir with include/cupti.h>): copies cannot be counted";
  const int frames = 40, w = 1280, h = 720;
  const double frame_bytes = double(w) * h * 4;
  // Per frame, host->device bytes beyond cudaupload's own upload, and
  // device->host bytes.
  auto measure = [&](const std::string& tail, double* up, double* down) {
    const std::string desc = "videotestsrc num-buffers=" + std::to_string(frames) +
                             " pattern=ball ! video/x-raw,format=RGBA,width=" + std::to_string(w) + ",height=" +
                             std::to_string(h) + " ! cudaupload ! video/x-raw(memory:CUDAMemory),format=RGBA ! " +
                             "ptmpreprocess ! ptminfer name=gpu device=cuda model=" + fixture("resnet18.pth") + tail +
                             " ! fakesink";
    Frames f;
    CopyCounts counts;
    {
      ZeroCopyProbe probe;
      run_pipeline(desc, f, "gpu");
      counts = probe.counts();
    }
    ASSERT_EQ(f.error, "");
    ASSERT_EQ(int(f.scores.at("gpu").size()), frames);
    *up = (double(counts.host_to_device) - frames * frame_bytes) / frames;
    *down = double(counts.device_to_host) / frames;
    std::printf("%s: per frame, host->device %.0f bytes besides cudaupload's %.0f, device->host %.0f bytes, "
                "device->device %.0f bytes\n",
                tail.empty() ? "ptmpreprocess ! ptminfer" : "... ! ptmoverlay", *up, frame_bytes, *down,
                double(counts.device_to_device) / frames);
  };
  double up = 0, down = 0;
  measure("", &up, &down);
  EXPECT_LE(up, 16 * 1024.0) << "ptm moved image-sized data to the device";
  EXPECT_LE(down, 1024.0) << "ptm moved more than the top-k results to the host";
  // ptmoverlay uploads its rendered box (not the frame): a few hundred KB at most, never a frame.
  measure(" ! ptmoverlay", &up, &down);
  EXPECT_LE(up, frame_bytes / 8);
  EXPECT_LE(down, 1024.0);
}

TEST(Pipeline, WithoutCudaLibTorchDeviceCudaSaysWhy) {
  PTM_REQUIRE_GPU();
  Frames f;
  run_pipeline("videotestsrc num-buffers=2 ! ptminfer device=cuda precision=fp16 model=" + fixture("resnet18.pth") +
                   " ! fakesink",
               f);
  // With a CUDA LibTorch this runs; with a CPU-only one it must say so.
  if (!f.error.empty()) {
    EXPECT_NE(f.error.find("LibTorch"), std::string::npos) << f.error;
  }
}

}  // namespace

}  // namespace ptm::test

int main(int argc, char** argv) {
  gst_init(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  if (argc > 1) ptm::test::fixtures_dir() = argv[1];
  return RUN_ALL_TESTS();
}

namespace ptm::test {
std::string& fixtures_dir() {
  static std::string dir;
  return dir;
}
}  // namespace ptm::test
