// The GStreamer-free preprocessing core: a video frame (plain planes) to a
// model input tensor (NCHW float32), reproducing torchvision's
// classification transform on PIL images: Resize(shorter side) with PIL's
// antialiased bilinear/bicubic filters on 8-bit data, CenterCrop (with
// Python's half-to-even rounding of the offsets), ToTensor, Normalize.
//
// The uint8 image is resampled first and only the pixels inside the crop are
// computed, so a full frame is never converted to float.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "pixel.h"
#include "resample_simd.h"

namespace ptm {

struct FrameView {
  PixelFormat format = PixelFormat::RGB;
  int width = 0, height = 0;
  const uint8_t* planes[3] = {nullptr, nullptr, nullptr};
  int strides[3] = {0, 0, 0};
  YuvMatrix matrix = YuvMatrix::BT601;
  bool full_range = false;
};

// A rectangle of a frame, in pixels.
struct Region {
  int x = 0, y = 0, width = 0, height = 0;
};

// The part of `frame` inside `r` (clipped to the frame; empty when nothing
// is left) as a view of the same memory. I420/NV12: the left and top edges
// move to even pixels, so the chroma planes line up (the crop's edge pixels
// then blend chroma within the crop, as a frame of that size would).
FrameView crop_view(const FrameView& frame, Region r);

enum class ResizeMode {
  ShorterSide,  // Resize(resize_size) + CenterCrop(crop): torchvision's eval transform
  Stretch,      // Resize((crop_h, crop_w)) ignoring the aspect ratio
  Letterbox,    // fit inside the crop, keep aspect ratio, pad with `pad_value`
};

enum class Filter { Bilinear, Bicubic };

// Order of a resize's two separable passes. Pillow rounds to 8 bits between
// them, so the order moves some pixels by one level. Pillow 12 and earlier
// always resize horizontally first; Pillow 13 resizes vertically first when
// the height shrinks by more than twice as many pixels as the width.
enum class PassOrder { Pillow13, Pillow12 };

struct PreprocessConfig {
  ResizeMode mode = ResizeMode::ShorterSide;
  Filter filter = Filter::Bilinear;
  int resize_size = 256;  // ShorterSide: the shorter side before cropping
  int crop_width = 224, crop_height = 224;
  std::array<float, 3> mean{{0.485f, 0.456f, 0.406f}};
  std::array<float, 3> std{{0.229f, 0.224f, 0.225f}};
  bool bgr = false;       // channel order of the output tensor
  uint8_t pad_value = 0;  // Letterbox padding and CenterCrop padding of small images
  PassOrder pass_order = PassOrder::Pillow13;

  // Empty when valid, else what is wrong.
  std::string validate() const;
};

// Geometry of one frame through the transform (exposed for tests and logs).
struct Geometry {
  int resized_width = 0, resized_height = 0;  // image after Resize
  int crop_left = 0, crop_top = 0;            // of the crop in the resized image (may be negative: padding)
  int place_left = 0, place_top = 0;          // Letterbox: where the resized image sits in the output
};

Geometry compute_geometry(const PreprocessConfig& c, int width, int height);

// Everything needed to preprocess frames of one format and size, as tables:
// the CPU path runs it, and the CUDA kernel (elements/cuda) uploads the same
// tables, so both produce the same bytes.
struct ResamplePlan {
  static constexpr int kPrecisionBits = 22;  // Pillow's fixed point for 8-bit data
  // The frame it is for.
  PixelFormat format = PixelFormat::RGB;
  int width = 0, height = 0;
  // Output (crop) size and where the resized image lands in it.
  int out_width = 0, out_height = 0;
  Geometry geometry;
  // Window of the resized image that is inside the output: [rx0, rx1) x [ry0, ry1).
  int rx0 = 0, rx1 = 0, ry0 = 0, ry1 = 0;
  // Per output column (rx0..rx1) and row (ry0..ry1): first source index, tap
  // count, and `kx`/`ky` fixed-point weights each.
  int kx = 0, ky = 0;
  std::vector<int32_t> x_first, x_count, x_weights;
  std::vector<int32_t> y_first, y_count, y_weights;
  uint8_t pad_value = 0;
  bool bgr = false;
  // The vertical pass first (then the horizontal one reads its 8-bit rows).
  bool vertical_first = false;
  // Output channel c of an 8-bit value v: lut[c * 256 + v] ((v / 255 - mean) / std).
  std::array<float, 3 * 256> lut{};
  // I420/NV12 to RGB (yuv_table of the frame's matrix and range).
  YuvTable yuv{};
  bool empty() const { return rx0 >= rx1 || ry0 >= ry1; }
};

class Preprocessor {
 public:
  explicit Preprocessor(PreprocessConfig config);  // throws std::invalid_argument
  const PreprocessConfig& config() const { return config_; }

  // Writes 3 x crop_height x crop_width floats (one image of an NCHW batch).
  // Throws std::invalid_argument for a frame it cannot read.
  void run(const FrameView& frame, float* out);

  // The uint8 RGB (or BGR) crop before normalisation, HWC; for tests.
  void run_u8(const FrameView& frame, uint8_t* out_hwc);

  // The tables for frames like `frame` (format, size and colorimetry; the
  // plane pointers are not read). Throws std::invalid_argument for a size
  // or format it cannot take.
  ResamplePlan plan(const FrameView& frame) const;

  // The vector kernels (on where the CPU has them: AVX2, AVX-512 VBMI/VNNI) or
  // the plain loops they are tested against; all give the same bytes.
  void set_vector_kernels(bool on) { kernels_ = on ? simd::best_kernels() : simd::Kernels::Plain; }
  bool vector_kernels() const { return kernels() != simd::Kernels::Plain; }
  // At most `k` (the best this CPU runs where it runs fewer).
  void set_kernels(simd::Kernels k) { kernels_ = k; }
  simd::Kernels kernels() const { return std::min(kernels_, simd::best_kernels()); }

  // Rows split across `n` threads of the calling thread's OpenMP team (the
  // one LibTorch runs the model on, when called from the model's thread):
  // the vector kernels' passes and the normalisation (the plain loops stay
  // on one). 1, the default: the calling thread alone. The same bytes for
  // every n.
  void set_threads(int n) { threads_ = n < 1 ? 1 : n; }
  int threads() const { return threads_; }

 private:
  // The plan and kernel tables of the last frame layout seen (a stream's
  // frames share one).
  const ResamplePlan& cached_plan(const FrameView& f);
  void resample_plain(const FrameView& f, const ResamplePlan& p, uint8_t* out);
  void resample_vector(const FrameView& f, const ResamplePlan& p, uint8_t* out);
  // fn(begin, end, thread) over contiguous parts of [0, n), one a thread.
  template <class Fn>
  void split(int n, Fn&& fn);

  PreprocessConfig config_;
  std::array<std::array<float, 256>, 3> lut_{};
  simd::Kernels kernels_ = simd::best_kernels();
  int threads_ = 1;
  bool have_plan_ = false;
  FrameView plan_key_;
  ResamplePlan plan_;
  simd::HTable htable_;
  simd::VTable vtable_;
  std::vector<uint8_t> hpass_, src_, u8_;
  // One a thread: a converted RGB row, the vertical pass's row, the
  // horizontal pass's row.
  struct Rows {
    std::vector<uint8_t> rgb, v, h;
  };
  std::vector<Rows> rows_;
};

}  // namespace ptm
