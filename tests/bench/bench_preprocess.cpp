// Preprocessing speed on one core: a 1920x1080 RGBA frame to one
// 3x224x224 float tensor (torchvision's eval transform: shorter side to
// 256 with antialiasing, centre crop 224, normalised), by ptm's core and,
// side by side in the same run, by OpenCV on the same frame: cv::resize
// alone (INTER_AREA, the antialiased shrink, and INTER_LINEAR, which is
// not) and the whole job done with OpenCV (resize, crop, to float,
// normalise, planar); and ptm's plain loops, which its vector kernels are
// tested against. Medians of repeated runs; each line after the first says
// how many times faster ptm is than it (below 1: slower). Also ptm's rows
// split across two threads, as ptminfer runs it (not the criterion's core).
//
//   bench-preprocess [REPEATS (default 200)]
#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <vector>

#include "preprocess_core.h"

namespace {

double median_ms(int repeats, const std::function<void()>& f) {
  for (int i = 0; i < 5; ++i) f();  // warm-up: tables, caches
  std::vector<double> t;
  t.reserve(size_t(repeats));
  for (int i = 0; i < repeats; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::nth_element(t.begin(), t.begin() + t.size() / 2, t.end());
  return t[t.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const int repeats = argc > 1 ? std::max(1, std::atoi(argv[1])) : 200;
  constexpr int W = 1920, H = 1080, S = 224, R = 256;
  cv::setNumThreads(1);  // one core, as the criterion says

  // A frame with detail (noise over gradients): flat frames flatter caches.
  std::vector<uint8_t> frame(size_t(W) * H * 4);
  std::mt19937 rng(7);
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x) {
      uint8_t* p = &frame[(size_t(y) * W + x) * 4];
      p[0] = uint8_t((x * 255 / W + rng() % 32) & 255);
      p[1] = uint8_t((y * 255 / H + rng() % 32) & 255);
      p[2] = uint8_t(((x + y) * 127 / (W + H) + rng() % 64) & 255);
      p[3] = 255;
    }

  ptm::PreprocessConfig c;  // torchvision's defaults: 256 -> 224, bilinear, ImageNet statistics
  ptm::Preprocessor pre(c);
  ptm::FrameView v;
  v.format = ptm::PixelFormat::RGBA;
  v.width = W;
  v.height = H;
  v.planes[0] = frame.data();
  v.strides[0] = W * 4;
  std::vector<float> out(size_t(3) * S * S);
  const double ptm_ms = median_ms(repeats, [&] { pre.run(v, out.data()); });
  const ptm::simd::Kernels best = pre.kernels();
  // The same split across a team of 2 threads, as ptminfer runs it before
  // a model on num-threads=2 (whose other thread would wait meanwhile).
  pre.set_threads(2);
  const double team_ms = median_ms(repeats, [&] { pre.run(v, out.data()); });
  pre.set_threads(1);
  // AVX2 alone, where the CPU also runs the AVX-512 kernels.
  double avx2_ms = 0;
  if (best == ptm::simd::Kernels::Avx512) {
    pre.set_kernels(ptm::simd::Kernels::Avx2);
    avx2_ms = median_ms(repeats, [&] { pre.run(v, out.data()); });
  }
  pre.set_vector_kernels(false);
  const double plain_ms = median_ms(repeats, [&] { pre.run(v, out.data()); });

  const cv::Mat src(H, W, CV_8UC4, frame.data());
  const int rw = W * R / H;  // 455 x 256, as torchvision's Resize(256)
  cv::Mat resized;
  const double cv_area_ms = median_ms(repeats, [&] { cv::resize(src, resized, cv::Size(rw, R), 0, 0, cv::INTER_AREA); });
  const double cv_linear_ms =
      median_ms(repeats, [&] { cv::resize(src, resized, cv::Size(rw, R), 0, 0, cv::INTER_LINEAR); });

  // The whole job in OpenCV: resize (antialiased), crop, RGB float,
  // normalised, split into planes.
  std::vector<float> cv_out(size_t(3) * S * S);
  const double cv_job_ms = median_ms(repeats, [&] {
    cv::resize(src, resized, cv::Size(rw, R), 0, 0, cv::INTER_AREA);
    const cv::Mat crop = resized(cv::Rect((rw - S) / 2, (R - S) / 2, S, S));
    cv::Mat rgb, f;
    cv::cvtColor(crop, rgb, cv::COLOR_RGBA2RGB);
    rgb.convertTo(f, CV_32FC3, 1.0 / 255.0);
    f -= cv::Scalar(c.mean[0], c.mean[1], c.mean[2]);
    cv::divide(f, cv::Scalar(c.std[0], c.std[1], c.std[2]), f);
    std::vector<cv::Mat> planes{cv::Mat(S, S, CV_32F, cv_out.data()), cv::Mat(S, S, CV_32F, cv_out.data() + S * S),
                                cv::Mat(S, S, CV_32F, cv_out.data() + 2 * S * S)};
    cv::split(f, planes);
  });

  std::printf("preprocessing a %dx%d RGBA frame to 1x3x%dx%d, one core, median of %d runs\n", W, H, S, S, repeats);
  std::printf("  %-56s %8.3f ms   (%s%s)\n", "ptm (Pillow-exact antialiased resize, crop, normalise)", ptm_ms,
              best == ptm::simd::Kernels::Plain ? "no vector kernels on this CPU: " : "vector kernels: ",
              ptm::simd::kernels_name(best));
  std::printf("  %-56s %8.3f ms   %.2fx the one-core speed\n", "ptm on a team of 2 threads (ptminfer, num-threads=2)",
              team_ms, ptm_ms / team_ms);
  if (avx2_ms > 0)
    std::printf("  %-56s %8.3f ms   ptm %.2fx as fast\n", "ptm with AVX2 kernels only", avx2_ms, avx2_ms / ptm_ms);
  std::printf("  %-56s %8.3f ms   ptm %.2fx as fast\n", "ptm with its plain loops (the kernels' reference)", plain_ms,
              plain_ms / ptm_ms);
  std::printf("  %-56s %8.3f ms   ptm %.2fx as fast\n", "OpenCV: the same job (INTER_AREA resize ... split)", cv_job_ms,
              cv_job_ms / ptm_ms);
  std::printf("  %-56s %8.3f ms   ptm %.2fx as fast\n", "OpenCV: cv::resize INTER_AREA to 455x256 alone", cv_area_ms,
              cv_area_ms / ptm_ms);
  std::printf("  %-56s %8.3f ms   ptm %.2fx as fast\n", "OpenCV: cv::resize INTER_LINEAR (no antialiasing) alone",
              cv_linear_ms, cv_linear_ms / ptm_ms);
  std::printf("  criterion (issue: <= 1.0 ms): %s\n", ptm_ms <= 1.0 ? "met" : "not met");
  return 0;
}
