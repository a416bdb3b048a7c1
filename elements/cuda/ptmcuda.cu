// See ptmcuda.h. Built with --fmad=false: the YUV conversion and the
// normalisation then round exactly as the CPU path does.
#include "ptmcuda.h"

#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <dlfcn.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>

namespace ptm::cuda {

namespace {

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess)
    throw std::runtime_error(std::string(what) + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")");
}

cudaStream_t as_stream(void* s) { return static_cast<cudaStream_t>(s); }

// ------------------------------------------------------------ preprocessing

constexpr int kBits = ResamplePlan::kPrecisionBits;

struct Params {
  int format;  // PixelFormat
  int width, height;
  const uint8_t* planes[3];
  int strides[3];
  int out_width, out_height;
  int crop_left, crop_top;
  int rx0, rx1, ry0, ry1;
  int kx, ky;
  int pad;
  int bgr;
  int channels_last;
  int vertical_first;  // ResamplePlan::vertical_first
  int type;  // OutputType
  // Device tables: x_first, x_count, x_weights, y_first, y_count, y_weights, lut.
  const int32_t *x_first, *x_count, *x_weights, *y_first, *y_count, *y_weights;
  const float* lut;
  float yuv[7];
  void* out;
};

// Device code that also runs on the host (PTM_HD, pixel.h): the host form
// (emulate_*) checks the kernels' arithmetic and indexing where no GPU is.

PTM_HD uint8_t clip8(int32_t v) {
  v >>= kBits;
  return uint8_t(v < 0 ? 0 : v > 255 ? 255 : v);
}

// The RGB of source pixel (x, y), as the CPU path's fetch_row computes it
// (the same pixel.h functions).
PTM_HD void fetch(const Params& p, int x, int y, int rgb[3]) {
  PackedLayout l;
  if (packed_layout(PixelFormat(p.format), &l)) {
    const uint8_t* px = p.planes[0] + size_t(y) * size_t(p.strides[0]) + size_t(x) * size_t(l.bpp);
    rgb[0] = px[l.r];
    rgb[1] = px[l.g];
    rgb[2] = px[l.b];
    return;
  }
  if (PixelFormat(p.format) == PixelFormat::GRAY8) {
    rgb[0] = rgb[1] = rgb[2] = p.planes[0][size_t(y) * size_t(p.strides[0]) + size_t(x)];
    return;
  }
  uint8_t c[3];
  yuv420_pixel(PixelFormat(p.format) == PixelFormat::NV12, p.width, p.height, p.planes, p.strides, p.yuv, x, y, c);
  rgb[0] = c[0];
  rgb[1] = c[1];
  rgb[2] = c[2];
}

// One thread per output pixel: the first pass (horizontal, or vertical where
// the plan says) of every source row or column the second pass reads,
// rounded to 8 bits as Pillow does, the second pass, then normalisation and
// the layout and type of the model input.
PTM_HD void preprocess_pixel(const Params& p, int ox, int oy) {
  const int rx = ox + p.crop_left, ry = oy + p.crop_top;
  int px[3] = {p.pad, p.pad, p.pad};
  if (rx >= p.rx0 && rx < p.rx1 && ry >= p.ry0 && ry < p.ry1) {
    const int ix = rx - p.rx0, iy = ry - p.ry0;
    const int xf = p.x_first[ix], xn = p.x_count[ix];
    const int yf = p.y_first[iy], yn = p.y_count[iy];
    const int32_t* xw = p.x_weights + size_t(ix) * size_t(p.kx);
    const int32_t* yw = p.y_weights + size_t(iy) * size_t(p.ky);
    // Outer taps over the second pass's axis, inner over the first's.
    const int outer_n = p.vertical_first ? xn : yn, inner_n = p.vertical_first ? yn : xn;
    const int32_t* outer_w = p.vertical_first ? xw : yw;
    const int32_t* inner_w = p.vertical_first ? yw : xw;
    int32_t acc[3] = {1 << (kBits - 1), 1 << (kBits - 1), 1 << (kBits - 1)};
    for (int t = 0; t < outer_n; ++t) {
      int32_t h[3] = {1 << (kBits - 1), 1 << (kBits - 1), 1 << (kBits - 1)};
      for (int s = 0; s < inner_n; ++s) {
        int rgb[3];
        if (p.vertical_first) fetch(p, xf + t, yf + s, rgb);
        else fetch(p, xf + s, yf + t, rgb);
        h[0] += rgb[0] * inner_w[s];
        h[1] += rgb[1] * inner_w[s];
        h[2] += rgb[2] * inner_w[s];
      }
      acc[0] += clip8(h[0]) * outer_w[t];
      acc[1] += clip8(h[1]) * outer_w[t];
      acc[2] += clip8(h[2]) * outer_w[t];
    }
    px[0] = clip8(acc[0]);
    px[1] = clip8(acc[1]);
    px[2] = clip8(acc[2]);
  }
  const size_t plane = size_t(p.out_width) * size_t(p.out_height);
  const size_t pos = size_t(oy) * size_t(p.out_width) + size_t(ox);
  for (int c = 0; c < 3; ++c) {
    const float v = p.lut[c * 256 + px[p.bgr ? 2 - c : c]];
    const size_t i = p.channels_last ? pos * 3 + size_t(c) : size_t(c) * plane + pos;
    switch (OutputType(p.type)) {
      case OutputType::Float32: static_cast<float*>(p.out)[i] = v; break;
      case OutputType::Float16: static_cast<__half*>(p.out)[i] = __float2half_rn(v); break;
      case OutputType::BFloat16: static_cast<__nv_bfloat16*>(p.out)[i] = __float2bfloat16_rn(v); break;
    }
  }
}

__global__ void preprocess_kernel(Params p) {
  const int ox = blockIdx.x * blockDim.x + threadIdx.x;
  const int oy = blockIdx.y * blockDim.y + threadIdx.y;
  if (ox < p.out_width && oy < p.out_height) preprocess_pixel(p, ox, oy);
}

// The kernel's parameters for `frame` and `plan`; `tables` points at the
// x_first, x_count, x_weights, y_first, y_count, y_weights and lut arrays
// back to back (device memory for the kernel, the plan's own for emulation).
Params make_params(const ResamplePlan& pl, const DeviceFrame& f, const int32_t* const tables[6], const float* lut,
                   void* out, OutputType type, bool channels_last) {
  if (f.format != pl.format || f.width != pl.width || f.height != pl.height)
    throw std::runtime_error("the frame does not match the preprocessing plan");
  Params p{};
  p.format = int(f.format);
  p.width = f.width;
  p.height = f.height;
  for (int i = 0; i < 3; ++i) {
    p.planes[i] = f.planes[i];
    p.strides[i] = f.strides[i];
  }
  p.out_width = pl.out_width;
  p.out_height = pl.out_height;
  p.crop_left = pl.geometry.crop_left;
  p.crop_top = pl.geometry.crop_top;
  p.rx0 = pl.rx0;
  p.rx1 = pl.rx1;
  p.ry0 = pl.ry0;
  p.ry1 = pl.ry1;
  p.kx = pl.kx;
  p.ky = pl.ky;
  p.pad = pl.pad_value;
  p.bgr = pl.bgr;
  p.channels_last = channels_last;
  p.vertical_first = pl.vertical_first;
  p.type = int(type);
  p.x_first = tables[0];
  p.x_count = tables[1];
  p.x_weights = tables[2];
  p.y_first = tables[3];
  p.y_count = tables[4];
  p.y_weights = tables[5];
  p.lut = lut;
  std::copy(pl.yuv.begin(), pl.yuv.end(), p.yuv);
  p.out = out;
  return p;
}

// ------------------------------------------------------------------ overlay

struct BlendParams {
  int format, width, height;
  uint8_t* planes[3];
  int strides[3];
  const uint8_t* patch;
  int pw, ph, x0, y0;
  float yuv[7];
};

PTM_HD uint8_t mix(uint8_t dst, float src, float a) {
  return uint8_t(fminf(fmaxf(src * a + dst * (1.f - a) + 0.5f, 0.f), 255.f));
}

// RGB -> Y'CbCr with the frame's matrix and range (the inverse of fetch()).
PTM_HD void to_yuv(const float* k, float r, float g, float b, float* y, float* u, float* v) {
  const float kr = 1.f - k[3] / 2.f, kb = 1.f - k[6] / 2.f, kg = 1.f - kr - kb;
  const float luma = kr * r + kg * g + kb * b;
  *y = luma / k[0] + k[1];
  *u = (b - luma) / k[6] / k[2] + 128.f;
  *v = (r - luma) / k[3] / k[2] + 128.f;
}

PTM_HD void blend_pixel(const BlendParams& p, int px, int py) {
  const int x = p.x0 + px, y = p.y0 + py;
  if (px >= p.pw || py >= p.ph || x < 0 || y < 0 || x >= p.width || y >= p.height) return;
  const uint8_t* s = p.patch + (size_t(py) * size_t(p.pw) + size_t(px)) * 4;
  const float a = s[3] / 255.f;
  if (a <= 0.f) return;
  PackedLayout l;
  if (packed_layout(PixelFormat(p.format), &l)) {
    uint8_t* d = p.planes[0] + size_t(y) * size_t(p.strides[0]) + size_t(x) * size_t(l.bpp);
    d[l.r] = mix(d[l.r], s[0], a);
    d[l.g] = mix(d[l.g], s[1], a);
    d[l.b] = mix(d[l.b], s[2], a);
    return;
  }
  float yy, u, v;
  to_yuv(p.yuv, s[0], s[1], s[2], &yy, &u, &v);
  if (PixelFormat(p.format) == PixelFormat::GRAY8) {
    uint8_t* d = p.planes[0] + size_t(y) * size_t(p.strides[0]) + size_t(x);
    *d = mix(*d, (s[0] + s[1] + s[2]) / 3.f, a);
    return;
  }
  uint8_t* d = p.planes[0] + size_t(y) * size_t(p.strides[0]) + size_t(x);
  *d = mix(*d, yy, a);
  if (x % 2 || y % 2) return;  // one chroma sample per 2x2 block, from its top-left pixel
  const int cx = x / 2, cy = y / 2;
  if (PixelFormat(p.format) == PixelFormat::NV12) {
    uint8_t* c = p.planes[1] + size_t(cy) * size_t(p.strides[1]) + size_t(cx) * 2;
    c[0] = mix(c[0], u, a);
    c[1] = mix(c[1], v, a);
  } else {
    uint8_t* cu = p.planes[1] + size_t(cy) * size_t(p.strides[1]) + size_t(cx);
    uint8_t* cv = p.planes[2] + size_t(cy) * size_t(p.strides[2]) + size_t(cx);
    *cu = mix(*cu, u, a);
    *cv = mix(*cv, v, a);
  }
}

__global__ void blend_kernel(BlendParams p) {
  const int px = blockIdx.x * blockDim.x + threadIdx.x;
  const int py = blockIdx.y * blockDim.y + threadIdx.y;
  blend_pixel(p, px, py);
}

BlendParams make_blend_params(const DeviceFrame& f, const uint8_t* patch, int w, int h, int x, int y,
                              const float yuv[7]) {
  BlendParams p{};
  p.format = int(f.format);
  p.width = f.width;
  p.height = f.height;
  for (int i = 0; i < 3; ++i) {
    p.planes[i] = const_cast<uint8_t*>(f.planes[i]);
    p.strides[i] = f.strides[i];
  }
  p.patch = patch;
  p.pw = w;
  p.ph = h;
  p.x0 = x;
  p.y0 = y;
  std::copy(yuv, yuv + 7, p.yuv);
  return p;
}

}  // namespace

// ------------------------------------------------------------------ runtime

int device_count(std::string* why) {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    void* driver = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL);
    if (!driver) {
      if (why) *why = "no NVIDIA driver: libcuda.so.1 cannot be loaded";
    } else {
      dlclose(driver);
      if (why) *why = std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e);
    }
    return 0;
  }
  if (n == 0 && why) *why = "no CUDA device";
  return n;
}

void* primary_context(int device) {
  static std::mutex lock;
  static std::vector<CUcontext> contexts;
  std::lock_guard<std::mutex> g(lock);
  if (device < 0) throw std::runtime_error("invalid CUDA device " + std::to_string(device));
  if (size_t(device) < contexts.size() && contexts[size_t(device)]) return contexts[size_t(device)];
  // The driver API through the runtime's entry points: nothing links libcuda,
  // so the library loads on machines without a driver.
  using RetainFn = CUresult (*)(CUcontext*, CUdevice);
  void* fn = nullptr;
  cudaDriverEntryPointQueryResult found{};
  check(cudaGetDriverEntryPointByVersion("cuDevicePrimaryCtxRetain", &fn, 12000, cudaEnableDefault, &found),
        "looking up cuDevicePrimaryCtxRetain");
  if (!fn || found != cudaDriverEntryPointSuccess) throw std::runtime_error("the CUDA driver has no cuDevicePrimaryCtxRetain");
  check(cudaSetDevice(device), "cudaSetDevice");
  check(cudaFree(nullptr), "initialising the CUDA runtime");
  CUcontext ctx = nullptr;
  const CUresult r = reinterpret_cast<RetainFn>(fn)(&ctx, CUdevice(device));
  if (r != CUDA_SUCCESS || !ctx) throw std::runtime_error("cuDevicePrimaryCtxRetain failed: error " + std::to_string(int(r)));
  if (contexts.size() <= size_t(device)) contexts.resize(size_t(device) + 1, nullptr);
  contexts[size_t(device)] = ctx;
  return ctx;
}

bool is_device_pointer(const void* p, int device) {
  cudaPointerAttributes a{};
  if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  return a.type == cudaMemoryTypeDevice && a.device == device;
}

Stream::~Stream() {
  if (stream_) cudaStreamDestroy(as_stream(stream_));
}

void* Stream::on(int device) {
  if (stream_ && device_ == device) return stream_;
  if (stream_) cudaStreamDestroy(as_stream(stream_));
  stream_ = nullptr;
  check(cudaSetDevice(device), "cudaSetDevice");
  cudaStream_t s = nullptr;
  check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
  stream_ = s;
  device_ = device;
  return stream_;
}

void Stream::synchronize() {
  if (stream_) check(cudaStreamSynchronize(as_stream(stream_)), "cudaStreamSynchronize");
}

void copy_host_to_device(void* dst, const void* src, size_t bytes, void* s) {
  check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, as_stream(s)), "host-to-device copy");
}

void copy_device_to_device(void* dst, const void* src, size_t bytes, void* s) {
  check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, as_stream(s)), "device-to-device copy");
}

// ------------------------------------------------------------ Preprocess

Preprocess::~Preprocess() { release(); }

void Preprocess::release() {
  if (tables_) cudaFree(tables_);
  tables_ = nullptr;
  tables_bytes_ = 0;
  have_plan_ = false;
}

void Preprocess::set_plan(const ResamplePlan& plan) {
  // One allocation: the int tables, then the float LUT.
  std::vector<int32_t> ints;
  for (const auto* v : {&plan.x_first, &plan.x_count, &plan.x_weights, &plan.y_first, &plan.y_count, &plan.y_weights})
    ints.insert(ints.end(), v->begin(), v->end());
  const size_t bytes = ints.size() * sizeof(int32_t) + plan.lut.size() * sizeof(float);
  // New tables in new memory: cudaFree waits for kernels still reading the
  // old ones (plans change with the caps only, so this wait is rare).
  release();
  check(cudaMalloc(&tables_, bytes), "allocating the preprocessing tables");
  tables_bytes_ = bytes;
  check(cudaMemcpy(tables_, ints.data(), ints.size() * sizeof(int32_t), cudaMemcpyHostToDevice),
        "uploading the preprocessing tables");
  check(cudaMemcpy(static_cast<int32_t*>(tables_) + ints.size(), plan.lut.data(), plan.lut.size() * sizeof(float),
                   cudaMemcpyHostToDevice),
        "uploading the normalisation table");
  plan_ = plan;
  have_plan_ = true;
}

void Preprocess::run(const DeviceFrame& f, void* out, OutputType type, bool channels_last, void* stream) {
  if (!have_plan_) throw std::runtime_error("no preprocessing plan set");
  const ResamplePlan& pl = plan_;
  const int32_t* t = static_cast<const int32_t*>(tables_);
  const int32_t* tables[6];
  tables[0] = t;
  tables[1] = tables[0] + pl.x_first.size();
  tables[2] = tables[1] + pl.x_count.size();
  tables[3] = tables[2] + pl.x_weights.size();
  tables[4] = tables[3] + pl.y_first.size();
  tables[5] = tables[4] + pl.y_count.size();
  const float* lut = reinterpret_cast<const float*>(tables[5] + pl.y_weights.size());
  const Params p = make_params(pl, f, tables, lut, out, type, channels_last);
  const dim3 block(32, 8);
  const dim3 grid(unsigned(pl.out_width + 31) / 32, unsigned(pl.out_height + 7) / 8);
  preprocess_kernel<<<grid, block, 0, as_stream(stream)>>>(p);
  check(cudaGetLastError(), "launching the preprocessing kernel");
}

void emulate_preprocess(const ResamplePlan& pl, const FrameView& f, void* out, OutputType type, bool channels_last) {
  const int32_t* tables[6] = {pl.x_first.data(), pl.x_count.data(), pl.x_weights.data(),
                              pl.y_first.data(), pl.y_count.data(), pl.y_weights.data()};
  const Params p = make_params(pl, f, tables, pl.lut.data(), out, type, channels_last);
  for (int y = 0; y < pl.out_height; ++y)
    for (int x = 0; x < pl.out_width; ++x) preprocess_pixel(p, x, y);
}

// ------------------------------------------------------------ BufferPool

BufferPool::~BufferPool() {
  for (void* p : free_) cudaFree(p);
}

void* BufferPool::acquire() {
  {
    std::lock_guard<std::mutex> g(lock_);
    if (!free_.empty()) {
      void* p = free_.back();
      free_.pop_back();
      return p;
    }
  }
  check(cudaSetDevice(device_), "cudaSetDevice");
  void* p = nullptr;
  check(cudaMalloc(&p, bytes_), "allocating a tensor buffer");
  return p;
}

void BufferPool::release(void* p) {
  std::lock_guard<std::mutex> g(lock_);
  free_.push_back(p);
}

// --------------------------------------------------------------- overlay

void blend_patch(const DeviceFrame& f, const uint8_t* patch, int w, int h, int x, int y, const float yuv[7],
                 void* stream) {
  if (w <= 0 || h <= 0) return;
  const size_t bytes = size_t(w) * size_t(h) * 4;
  void* d = nullptr;
  check(cudaMallocAsync(&d, bytes, as_stream(stream)), "allocating the overlay patch");
  try {
    check(cudaMemcpyAsync(d, patch, bytes, cudaMemcpyHostToDevice, as_stream(stream)), "uploading the overlay patch");
    const BlendParams p = make_blend_params(f, static_cast<const uint8_t*>(d), w, h, x, y, yuv);
    const dim3 block(32, 8);
    const dim3 grid(unsigned(w + 31) / 32, unsigned(h + 7) / 8);
    blend_kernel<<<grid, block, 0, as_stream(stream)>>>(p);
    check(cudaGetLastError(), "launching the overlay kernel");
  } catch (...) {
    cudaFreeAsync(d, as_stream(stream));
    throw;
  }
  check(cudaFreeAsync(d, as_stream(stream)), "freeing the overlay patch");
}

void emulate_blend_patch(const FrameView& f, const uint8_t* patch, int w, int h, int x, int y, const float yuv[7]) {
  const BlendParams p = make_blend_params(f, patch, w, h, x, y, yuv);
  for (int py = 0; py < h; ++py)
    for (int px = 0; px < w; ++px) blend_pixel(p, px, py);
}

}  // namespace ptm::cuda
