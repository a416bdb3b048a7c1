#include "preprocess_core.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace ptm {

namespace {

// Pillow's fixed-point precision for 8-bit resampling (Resample.c).
constexpr int kPrecisionBits = ResamplePlan::kPrecisionBits;
static_assert(kPrecisionBits == 32 - 8 - 2, "Pillow's 8-bit precision");
constexpr int kMaxSide = 1 << 15;

double bilinear(double x) {
  x = std::fabs(x);
  return x < 1.0 ? 1.0 - x : 0.0;
}

double bicubic(double x) {
  constexpr double a = -0.5;
  x = std::fabs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

// One axis of a separable resample, as Pillow precomputes it: for each
// output index the first input index, the tap count and fixed-point weights.
struct Axis {
  int ksize = 0;
  std::vector<int> first, count;
  std::vector<int32_t> weights;  // out_size x ksize
};

Axis make_axis(int in_size, int out_size, Filter f) {
  const double support_unit = f == Filter::Bilinear ? 1.0 : 2.0;
  const double scale = double(in_size) / out_size;
  const double filterscale = std::max(scale, 1.0);
  const double support = support_unit * filterscale;
  Axis a;
  a.ksize = int(std::ceil(support)) * 2 + 1;
  a.first.resize(size_t(out_size));
  a.count.resize(size_t(out_size));
  a.weights.assign(size_t(out_size) * size_t(a.ksize), 0);
  std::vector<double> k(size_t(a.ksize));
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = (xx + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    int xmin = int(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = int(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double ww = 0.0;
    for (int x = 0; x < xmax; ++x) {
      const double w = f == Filter::Bilinear ? bilinear((x + xmin - center + 0.5) * ss)
                                             : bicubic((x + xmin - center + 0.5) * ss);
      k[size_t(x)] = w;
      ww += w;
    }
    int32_t* dst = &a.weights[size_t(xx) * size_t(a.ksize)];
    for (int x = 0; x < xmax; ++x) {
      const double w = ww != 0.0 ? k[size_t(x)] / ww : k[size_t(x)];
      dst[x] = int32_t(w < 0 ? -0.5 + w * (1 << kPrecisionBits) : 0.5 + w * (1 << kPrecisionBits));
    }
    a.first[size_t(xx)] = xmin;
    a.count[size_t(xx)] = xmax;
  }
  return a;
}

inline uint8_t clip8(int32_t v) {
  v >>= kPrecisionBits;
  return uint8_t(v < 0 ? 0 : v > 255 ? 255 : v);
}

// RGB triplets of row `y`, columns [x0, x1).
void fetch_row(const FrameView& f, int y, int x0, int x1, uint8_t* rgb) {
  PackedLayout l;
  if (packed_layout(f.format, &l)) {
    const uint8_t* row = f.planes[0] + size_t(y) * size_t(f.strides[0]);
    for (int x = x0; x < x1; ++x, rgb += 3) {
      const uint8_t* p = row + size_t(x) * size_t(l.bpp);
      rgb[0] = p[l.r];
      rgb[1] = p[l.g];
      rgb[2] = p[l.b];
    }
    return;
  }
  if (f.format == PixelFormat::GRAY8) {
    const uint8_t* row = f.planes[0] + size_t(y) * size_t(f.strides[0]);
    for (int x = x0; x < x1; ++x, rgb += 3) rgb[0] = rgb[1] = rgb[2] = row[x];
    return;
  }
  const YuvTable k = yuv_table(f.matrix, f.full_range);
  const bool nv12 = f.format == PixelFormat::NV12;
  for (int x = x0; x < x1; ++x, rgb += 3) yuv420_pixel(nv12, f.width, f.height, f.planes, f.strides, k.data(), x, y, rgb);
}

void check_frame(const FrameView& f, bool planes = true) {
  if (f.width <= 0 || f.height <= 0 || f.width > kMaxSide || f.height > kMaxSide)
    throw std::invalid_argument("frame size " + std::to_string(f.width) + "x" + std::to_string(f.height) +
                                " is outside 1..32768");
  auto need = [&](int plane, size_t row_bytes, int rows) {
    if (!planes) return;
    if (!f.planes[plane]) throw std::invalid_argument("frame plane " + std::to_string(plane) + " is missing");
    if (f.strides[plane] < 0 || size_t(f.strides[plane]) < row_bytes)
      throw std::invalid_argument("frame plane " + std::to_string(plane) + " stride " +
                                  std::to_string(f.strides[plane]) + " is shorter than a row (" +
                                  std::to_string(row_bytes) + " bytes)");
    (void)rows;
  };
  PackedLayout l;
  const size_t w = size_t(f.width), cw = (w + 1) / 2;
  if (packed_layout(f.format, &l)) need(0, w * size_t(l.bpp), f.height);
  else if (f.format == PixelFormat::GRAY8) need(0, w, f.height);
  else if (f.format == PixelFormat::I420) {
    need(0, w, f.height);
    need(1, cw, (f.height + 1) / 2);
    need(2, cw, (f.height + 1) / 2);
  } else if (f.format == PixelFormat::NV12) {
    need(0, w, f.height);
    need(1, cw * 2, (f.height + 1) / 2);
  } else {
    throw std::invalid_argument("unsupported pixel format");
  }
}

}  // namespace

FrameView crop_view(const FrameView& f, Region r) {
  int x0 = std::max(0, r.x), y0 = std::max(0, r.y);
  const int x1 = int(std::min<int64_t>(f.width, int64_t(r.x) + std::max(0, r.width)));
  const int y1 = int(std::min<int64_t>(f.height, int64_t(r.y) + std::max(0, r.height)));
  const bool yuv = f.format == PixelFormat::I420 || f.format == PixelFormat::NV12;
  if (yuv) {
    x0 &= ~1;
    y0 &= ~1;
  }
  FrameView v = f;
  v.width = std::max(0, x1 - x0);
  v.height = std::max(0, y1 - y0);
  if (v.width == 0 || v.height == 0) {
    v.width = v.height = 0;
    return v;
  }
  PackedLayout l;
  if (packed_layout(f.format, &l)) {
    v.planes[0] = f.planes[0] + size_t(y0) * size_t(f.strides[0]) + size_t(x0) * size_t(l.bpp);
  } else if (f.format == PixelFormat::GRAY8) {
    v.planes[0] = f.planes[0] + size_t(y0) * size_t(f.strides[0]) + size_t(x0);
  } else if (f.format == PixelFormat::I420) {
    v.planes[0] = f.planes[0] + size_t(y0) * size_t(f.strides[0]) + size_t(x0);
    for (int p = 1; p < 3; ++p) v.planes[p] = f.planes[p] + size_t(y0 / 2) * size_t(f.strides[p]) + size_t(x0 / 2);
  } else if (f.format == PixelFormat::NV12) {
    v.planes[0] = f.planes[0] + size_t(y0) * size_t(f.strides[0]) + size_t(x0);
    v.planes[1] = f.planes[1] + size_t(y0 / 2) * size_t(f.strides[1]) + size_t(x0);
  }
  return v;
}

std::string PreprocessConfig::validate() const {
  if (crop_width < 1 || crop_height < 1 || crop_width > 8192 || crop_height > 8192)
    return "the output size must be between 1 and 8192 pixels a side";
  if (mode == ResizeMode::ShorterSide && (resize_size < 1 || resize_size > 16384))
    return "the resize size must be between 1 and 16384";
  for (float s : std) if (!(s > 0.f) || !std::isfinite(s)) return "every std value must be a positive number";
  for (float m : mean) if (!std::isfinite(m)) return "every mean value must be a finite number";
  return "";
}

Geometry compute_geometry(const PreprocessConfig& c, int w, int h) {
  Geometry g;
  switch (c.mode) {
    case ResizeMode::ShorterSide: {
      // torchvision: the shorter side becomes `size`, the longer one
      // int(size * long / short); the crop offset is round((len - crop) / 2)
      // with Python's round-half-to-even.
      const bool wide = w > h;
      const int s = std::min(w, h), l = std::max(w, h);
      const int new_long = int(double(int64_t(c.resize_size) * l) / s);
      g.resized_width = wide ? new_long : c.resize_size;
      g.resized_height = wide ? c.resize_size : new_long;
      g.crop_left = int(std::nearbyint((g.resized_width - c.crop_width) / 2.0));
      g.crop_top = int(std::nearbyint((g.resized_height - c.crop_height) / 2.0));
      break;
    }
    case ResizeMode::Stretch:
      g.resized_width = c.crop_width;
      g.resized_height = c.crop_height;
      break;
    case ResizeMode::Letterbox: {
      const double s = std::min(double(c.crop_width) / w, double(c.crop_height) / h);
      g.resized_width = std::clamp(int(std::lround(w * s)), 1, c.crop_width);
      g.resized_height = std::clamp(int(std::lround(h * s)), 1, c.crop_height);
      g.place_left = (c.crop_width - g.resized_width) / 2;
      g.place_top = (c.crop_height - g.resized_height) / 2;
      g.crop_left = -g.place_left;
      g.crop_top = -g.place_top;
      break;
    }
  }
  return g;
}

Preprocessor::Preprocessor(PreprocessConfig config) : config_(config) {
  const std::string err = config_.validate();
  if (!err.empty()) throw std::invalid_argument(err);
  // Exactly torchvision's float32 arithmetic: x / 255, then (x - mean) / std.
  for (int c = 0; c < 3; ++c)
    for (int v = 0; v < 256; ++v) lut_[size_t(c)][size_t(v)] = (float(v) / 255.f - config_.mean[size_t(c)]) / config_.std[size_t(c)];
}

ResamplePlan Preprocessor::plan(const FrameView& f) const {
  check_frame(f, false);
  const PreprocessConfig& c = config_;
  ResamplePlan p;
  p.format = f.format;
  p.width = f.width;
  p.height = f.height;
  p.out_width = c.crop_width;
  p.out_height = c.crop_height;
  p.geometry = compute_geometry(c, f.width, f.height);
  const Geometry& g = p.geometry;
  p.pad_value = c.pad_value;
  p.bgr = c.bgr;
  for (size_t i = 0; i < 3; ++i) std::copy(lut_[i].begin(), lut_[i].end(), p.lut.begin() + long(i * 256));
  p.yuv = yuv_table(f.matrix, f.full_range);
  // Pillow 13's rule, on the whole image's sizes (Resample.c).
  const int shrink_h = f.height - g.resized_height, shrink_w = f.width - g.resized_width;
  p.vertical_first = c.pass_order == PassOrder::Pillow13 && shrink_h > 0 && shrink_h > 2 * shrink_w;
  p.rx0 = std::max(0, g.crop_left);
  p.rx1 = std::min(g.resized_width, g.crop_left + c.crop_width);
  p.ry0 = std::max(0, g.crop_top);
  p.ry1 = std::min(g.resized_height, g.crop_top + c.crop_height);
  if (p.empty()) return p;
  auto window = [](const Axis& a, int from, int to, int* k, std::vector<int32_t>& first, std::vector<int32_t>& count,
                   std::vector<int32_t>& weights) {
    *k = a.ksize;
    first.assign(a.first.begin() + from, a.first.begin() + to);
    count.assign(a.count.begin() + from, a.count.begin() + to);
    weights.assign(a.weights.begin() + long(from) * a.ksize, a.weights.begin() + long(to) * a.ksize);
  };
  window(make_axis(f.width, g.resized_width, c.filter), p.rx0, p.rx1, &p.kx, p.x_first, p.x_count, p.x_weights);
  window(make_axis(f.height, g.resized_height, c.filter), p.ry0, p.ry1, &p.ky, p.y_first, p.y_count, p.y_weights);
  return p;
}

const ResamplePlan& Preprocessor::cached_plan(const FrameView& f) {
  const FrameView& k = plan_key_;
  if (have_plan_ && k.format == f.format && k.width == f.width && k.height == f.height && k.matrix == f.matrix &&
      k.full_range == f.full_range)
    return plan_;
  have_plan_ = false;
  plan_ = plan(f);
  if (!plan_.empty()) {
    PackedLayout l;
    if (!packed_layout(f.format, &l)) l = {3, 0, 1, 2};  // converted to RGB rows first
    htable_ = simd::make_htable(plan_.x_first, plan_.x_count, plan_.x_weights, plan_.kx, plan_.x_first.front(),
                                l.bpp, l.r, l.g, l.b);
    vtable_ = simd::make_vtable(plan_.y_count, plan_.y_weights, plan_.ky);
  }
  plan_key_ = f;
  have_plan_ = true;
  return plan_;
}

void Preprocessor::run_u8(const FrameView& f, uint8_t* out) {
  check_frame(f);
  const ResamplePlan& p = cached_plan(f);
  // Padding where the resized image does not cover the output.
  if (p.rx1 - p.rx0 < p.out_width || p.ry1 - p.ry0 < p.out_height)
    std::fill(out, out + size_t(p.out_width) * size_t(p.out_height) * 3, p.pad_value);
  if (p.empty()) return;
  if (vector_kernels()) resample_vector(f, p, out);
  else resample_plain(f, p, out);
}

template <class Fn>
void Preprocessor::split(int n, Fn&& fn) {
  // Under ~16 rows a thread, waking the others costs more than it saves.
  const int t = std::min(threads_, n / 16);
  if (rows_.size() < size_t(std::max(t, 1))) rows_.resize(size_t(std::max(t, 1)));
#ifdef _OPENMP
  if (t > 1) {
#pragma omp parallel num_threads(t)
    {
      const int i = omp_get_thread_num(), m = omp_get_num_threads();
      fn(int(int64_t(n) * i / m), int(int64_t(n) * (i + 1) / m), i);
    }
    return;
  }
#endif
  fn(0, n, 0);
}

// The same passes through the kernels of resample_simd.h. Packed frames are
// read in place (the kernels pick R, G and B out of each pixel); others are
// converted to RGB rows first, as the plain loops do. Rows are split across
// threads_ threads; each has its own scratch rows.
void Preprocessor::resample_vector(const FrameView& f, const ResamplePlan& p, uint8_t* out) {
  const int cw = p.out_width;
  const Geometry& g = p.geometry;
  const int ow = p.rx1 - p.rx0, oh = p.ry1 - p.ry0;
  const int sx0 = p.x_first.front(), sx1 = p.x_first.back() + p.x_count.back();
  const int sy0 = p.y_first.front(), sy1 = p.y_first.back() + p.y_count.back();
  const size_t sw = size_t(sx1 - sx0), orow = size_t(ow) * 3;
  const simd::Kernels k = kernels();
  PackedLayout l;
  const bool packed = packed_layout(f.format, &l);
  if (!packed) l = {3, 0, 1, 2};
  const size_t bpp = size_t(l.bpp);
  auto out_row = [&](int y) {
    return out + (size_t(y + p.ry0 - g.crop_top) * size_t(cw) + size_t(p.rx0 - g.crop_left)) * 3;
  };
  if (p.vertical_first) {
    // Converted RGB rows of the block (formats that are not packed).
    if (!packed) {
      src_.resize(size_t(sy1 - sy0) * sw * 3 + 32);  // room for the kernels' 16-byte reads
      split(sy1 - sy0, [&](int b, int e, int) {
        for (int y = sy0 + b; y < sy0 + e; ++y) fetch_row(f, y, sx0, sx1, &src_[size_t(y - sy0) * sw * 3]);
      });
    }
    // Vertical pass over the block's bytes (alpha included: it is never
    // read again), then the horizontal one into the output window.
    const size_t stride = packed ? size_t(f.strides[0]) : sw * 3;
    split(oh, [&](int b, int e, int t) {
      Rows& r = rows_[size_t(t)];
      r.v.resize(sw * bpp + 32);
      r.h.resize(orow + 4);
      for (int y = b; y < e; ++y) {
        const int top = p.y_first[size_t(y)];
        const uint8_t* first = packed ? f.planes[0] + size_t(top) * stride + size_t(sx0) * bpp
                                      : &src_[size_t(top - sy0) * stride];
        simd::vpass(vtable_, y, first, stride, sw * bpp, r.v.data(), k);
        const uint8_t* v = r.v.data();
        uint8_t* h = r.h.data();
        simd::hpass(htable_, &v, 1, r.v.size(), l.bpp, l.r, l.g, l.b, &h, k);
        std::copy(r.h.begin(), r.h.begin() + long(orow), out_row(y));
      }
    });
    return;
  }
  // Horizontal pass of every row the window reads (rounded to 8 bits), then
  // the vertical pass straight into the output window. Rows hstride bytes
  // apart: the byte hpass may write after a row is its own, not the first
  // of the next row (which another thread may have written already).
  const size_t hstride = orow + 1;
  hpass_.resize(size_t(sy1 - sy0) * hstride + 4);
  // Two rows a call: the kernels share a step's weights between them.
  const size_t rgb_row = sw * 3 + 32;  // room for the kernels' 16-byte reads
  split(sy1 - sy0, [&](int b, int e, int t) {
    Rows& r = rows_[size_t(t)];
    if (!packed) r.rgb.resize(2 * rgb_row);
    for (int y = sy0 + b; y < sy0 + e; y += 2) {
      const int n = std::min(2, sy0 + e - y);
      const uint8_t* src[2];
      uint8_t* dst[2];
      for (int i = 0; i < n; ++i) {
        if (packed) {
          src[i] = f.planes[0] + size_t(y + i) * size_t(f.strides[0]) + size_t(sx0) * bpp;
        } else {
          fetch_row(f, y + i, sx0, sx1, &r.rgb[size_t(i) * rgb_row]);
          src[i] = &r.rgb[size_t(i) * rgb_row];
        }
        dst[i] = &hpass_[size_t(y + i - sy0) * hstride];
      }
      // Packed: each row's own pixels.
      const size_t readable = packed ? size_t(f.width - sx0) * bpp : rgb_row;
      simd::hpass(htable_, src, n, readable, l.bpp, l.r, l.g, l.b, dst, k);
    }
  });
  split(oh, [&](int b, int e, int) {
    for (int y = b; y < e; ++y)
      simd::vpass(vtable_, y, &hpass_[size_t(p.y_first[size_t(y)] - sy0) * hstride], hstride, orow, out_row(y), k);
  });
}

// The plain loops (the reference the vector kernels are tested against).
void Preprocessor::resample_plain(const FrameView& f, const ResamplePlan& p, uint8_t* out) {
  const int cw = p.out_width;
  const Geometry& g = p.geometry;
  const int ow = p.rx1 - p.rx0, oh = p.ry1 - p.ry0;
  // Source columns and rows those output pixels read.
  const int sx0 = p.x_first.front(), sx1 = p.x_first.back() + p.x_count.back();
  const int sy0 = p.y_first.front(), sy1 = p.y_first.back() + p.y_count.back();
  const int sw = sx1 - sx0;
  if (rows_.empty()) rows_.resize(1);
  std::vector<uint8_t>& rgb_row = rows_[0].rgb;
  rgb_row.resize(size_t(sw) * 3);
  // One tap loop for both passes: `src` steps by `step` bytes a tap.
  auto tap3 = [](const uint8_t* src, size_t step, const int32_t* k, int n, uint8_t* dst) {
    int32_t s0 = 1 << (kPrecisionBits - 1), s1 = s0, s2 = s0;
    for (int t = 0; t < n; ++t, src += step) {
      s0 += src[0] * k[t];
      s1 += src[1] * k[t];
      s2 += src[2] * k[t];
    }
    dst[0] = clip8(s0);
    dst[1] = clip8(s1);
    dst[2] = clip8(s2);
  };
  auto out_row = [&](int y) {
    return out + (size_t(y + p.ry0 - g.crop_top) * size_t(cw) + size_t(p.rx0 - g.crop_left)) * 3;
  };
  if (p.vertical_first) {
    // Source block, vertical pass over its columns (8-bit rows), then the
    // horizontal pass into the output window.
    src_.resize(size_t(sy1 - sy0) * size_t(sw) * 3);
    for (int y = sy0; y < sy1; ++y) fetch_row(f, y, sx0, sx1, &src_[size_t(y - sy0) * size_t(sw) * 3]);
    hpass_.resize(size_t(sw) * 3);
    for (int y = 0; y < oh; ++y) {
      const int32_t* k = &p.y_weights[size_t(y) * size_t(p.ky)];
      const uint8_t* col = &src_[size_t(p.y_first[size_t(y)] - sy0) * size_t(sw) * 3];
      for (int x = 0; x < sw; ++x) tap3(col + size_t(x) * 3, size_t(sw) * 3, k, p.y_count[size_t(y)], &hpass_[size_t(x) * 3]);
      uint8_t* dst = out_row(y);
      for (int x = 0; x < ow; ++x, dst += 3)
        tap3(&hpass_[size_t(p.x_first[size_t(x)] - sx0) * 3], 3, &p.x_weights[size_t(x) * size_t(p.kx)],
             p.x_count[size_t(x)], dst);
    }
    return;
  }
  hpass_.resize(size_t(sy1 - sy0) * size_t(ow) * 3);
  // Horizontal pass (rounded to 8 bits), then the vertical pass straight into
  // the output window.
  for (int y = sy0; y < sy1; ++y) {
    fetch_row(f, y, sx0, sx1, rgb_row.data());
    uint8_t* dst = &hpass_[size_t(y - sy0) * size_t(ow) * 3];
    for (int x = 0; x < ow; ++x, dst += 3)
      tap3(&rgb_row[size_t(p.x_first[size_t(x)] - sx0) * 3], 3, &p.x_weights[size_t(x) * size_t(p.kx)],
           p.x_count[size_t(x)], dst);
  }
  for (int y = 0; y < oh; ++y) {
    const int32_t* k = &p.y_weights[size_t(y) * size_t(p.ky)];
    const uint8_t* col = &hpass_[size_t(p.y_first[size_t(y)] - sy0) * size_t(ow) * 3];
    uint8_t* dst = out_row(y);
    for (int x = 0; x < ow; ++x) tap3(col + size_t(x) * 3, size_t(ow) * 3, k, p.y_count[size_t(y)], dst + size_t(x) * 3);
  }
}

void Preprocessor::run(const FrameView& f, float* out) {
  const size_t plane = size_t(config_.crop_width) * size_t(config_.crop_height);
  u8_.resize(plane * 3);
  run_u8(f, u8_.data());
  split(config_.crop_height, [&](int b, int e, int) {
    const size_t from = size_t(b) * size_t(config_.crop_width), to = size_t(e) * size_t(config_.crop_width);
    for (int c = 0; c < 3; ++c) {
      const int src_c = config_.bgr ? 2 - c : c;
      const auto& lut = lut_[size_t(c)];  // mean and std are given in output order
      float* dst = out + size_t(c) * plane;
      const uint8_t* src = u8_.data() + src_c;
      for (size_t i = from; i < to; ++i) dst[i] = lut[src[i * 3]];
    }
  });
}

}  // namespace ptm
