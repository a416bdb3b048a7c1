// Pixel formats and how a source pixel becomes RGB: one definition for the
// CPU preprocessing core, the CUDA kernels (compiled for host and device)
// and the overlay.
#pragma once

#include <array>
#include <cstdint>

#if defined(__CUDACC__)
#define PTM_HD __host__ __device__ inline
#else
#define PTM_HD inline
#endif

namespace ptm {

enum class PixelFormat { RGB, BGR, RGBA, BGRA, RGBx, BGRx, xRGB, xBGR, ARGB, ABGR, GRAY8, I420, NV12 };

// YUV matrices and ranges for I420/NV12 input.
enum class YuvMatrix { BT601, BT709, BT2020 };

// Packed layouts: bytes per pixel and the byte offsets of R, G and B.
struct PackedLayout {
  int bpp, r, g, b;
};

PTM_HD bool packed_layout(PixelFormat f, PackedLayout* l) {
  switch (f) {
    case PixelFormat::RGB: *l = {3, 0, 1, 2}; return true;
    case PixelFormat::BGR: *l = {3, 2, 1, 0}; return true;
    case PixelFormat::RGBA: case PixelFormat::RGBx: *l = {4, 0, 1, 2}; return true;
    case PixelFormat::BGRA: case PixelFormat::BGRx: *l = {4, 2, 1, 0}; return true;
    case PixelFormat::ARGB: case PixelFormat::xRGB: *l = {4, 1, 2, 3}; return true;
    case PixelFormat::ABGR: case PixelFormat::xBGR: *l = {4, 3, 2, 1}; return true;
    default: return false;
  }
}

// Y'CbCr to R'G'B' for a matrix and range: y_scale, y_offset, c_scale, and
// the rv, gu, gv, bu factors, in that order.
using YuvTable = std::array<float, 7>;

inline YuvTable yuv_table(YuvMatrix m, bool full_range) {
  float kr = 0.299f, kb = 0.114f;
  if (m == YuvMatrix::BT709) kr = 0.2126f, kb = 0.0722f;
  if (m == YuvMatrix::BT2020) kr = 0.2627f, kb = 0.0593f;
  const float kg = 1.f - kr - kb;
  return {full_range ? 1.f : 255.f / 219.f, full_range ? 0.f : 16.f, full_range ? 1.f : 255.f / 224.f,
          2.f * (1.f - kr), 2.f * kb * (1.f - kb) / kg, 2.f * kr * (1.f - kr) / kg, 2.f * (1.f - kb)};
}

PTM_HD uint8_t to_u8(float v) { return uint8_t(v <= 0.f ? 0 : v >= 255.f ? 255 : int(v + 0.5f)); }

PTM_HD int clamp_int(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

// The RGB of pixel (x, y) of an I420 or NV12 frame. 4:2:0 chroma sits
// between luma pairs: it is upsampled with the 3/4-1/4 triangle filter in
// both directions (libjpeg's "fancy" upsampling), then converted with `k`
// (a YuvTable).
PTM_HD void yuv420_pixel(bool nv12, int width, int height, const uint8_t* const planes[3], const int strides[3],
                         const float* k, int x, int y, uint8_t rgb[3]) {
  const int cw = (width + 1) / 2, ch = (height + 1) / 2;
  const int cy0 = y / 2, cy1 = clamp_int(y % 2 ? cy0 + 1 : cy0 - 1, 0, ch - 1);
  const int cx0 = x / 2, cx1 = clamp_int(x % 2 ? cx0 + 1 : cx0 - 1, 0, cw - 1);
  auto chroma = [&](int plane, int cy, int cx) -> float {
    const int p = nv12 ? 1 : plane;
    const uint8_t* row = planes[p] + size_t(cy) * size_t(strides[p]);
    return nv12 ? row[size_t(cx) * 2 + (plane == 2 ? 1 : 0)] : row[cx];
  };
  auto vblend = [&](int plane, int cx) { return 0.75f * chroma(plane, cy0, cx) + 0.25f * chroma(plane, cy1, cx); };
  float u = 0.75f * vblend(1, cx0) + 0.25f * vblend(1, cx1);
  float v = 0.75f * vblend(2, cx0) + 0.25f * vblend(2, cx1);
  const float yy = (planes[0][size_t(y) * size_t(strides[0]) + size_t(x)] - k[1]) * k[0];
  u = (u - 128.f) * k[2];
  v = (v - 128.f) * k[2];
  rgb[0] = to_u8(yy + k[3] * v);
  rgb[1] = to_u8(yy - k[4] * u - k[5] * v);
  rgb[2] = to_u8(yy + k[6] * u);
}

}  // namespace ptm
