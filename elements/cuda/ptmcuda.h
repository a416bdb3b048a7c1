// ptm's CUDA kernels and the few CUDA runtime calls the elements need, in a
// library of their own: no LibTorch and no GStreamer here, and no CUDA type
// in this header (streams and pointers travel as void*), so any translation
// unit may include it. Built only when the CUDA toolkit is found; the
// functions report failures as std::runtime_error with CUDA's reason.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "preprocess_core.h"

namespace ptm::cuda {

// Devices CUDA can use; 0 with `*why` set when none (no driver, no GPU).
int device_count(std::string* why);

// The device's primary context (a CUcontext), retained once per process:
// the one the CUDA runtime, and so LibTorch, works in.
void* primary_context(int device);

// True when `p` is device memory (not host or managed memory) of `device`.
bool is_device_pointer(const void* p, int device);

// An element's own non-blocking CUDA stream, made for the device its frames
// are on (again when that changes).
class Stream {
 public:
  Stream() = default;
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  void* on(int device);  // the cudaStream_t for `device`
  void synchronize();    // waits for this stream only

 private:
  void* stream_ = nullptr;
  int device_ = -1;
};

// Asynchronous copies on `stream`.
void copy_host_to_device(void* dst, const void* src, size_t bytes, void* stream);
void copy_device_to_device(void* dst, const void* src, size_t bytes, void* stream);

// A frame in device memory (plane pointers and strides as in FrameView).
using DeviceFrame = FrameView;

enum class OutputType { Float32, Float16, BFloat16 };

// The fused preprocessing kernel: a frame in device memory -> resize with
// Pillow's antialiased filters on 8-bit data -> crop / letterbox -> (v/255 -
// mean)/std -> CHW (or HWC) float32/float16/bfloat16, written straight into
// `out` (one image of a batch). The same tables as the CPU path
// (ResamplePlan), so the bytes before normalisation are the same.
class Preprocess {
 public:
  Preprocess() = default;
  ~Preprocess();
  Preprocess(const Preprocess&) = delete;
  Preprocess& operator=(const Preprocess&) = delete;

  // Uploads `plan`'s tables (once per frame format and size).
  void set_plan(const ResamplePlan& plan);
  const ResamplePlan* plan() const { return have_plan_ ? &plan_ : nullptr; }
  // Launches on `stream`; `frame` must match the plan's format and size.
  void run(const DeviceFrame& frame, void* out, OutputType type, bool channels_last, void* stream);

 private:
  void release();
  ResamplePlan plan_;
  bool have_plan_ = false;
  void* tables_ = nullptr;  // one device allocation holding every table
  size_t tables_bytes_ = 0;
};

// Device buffers of one size, recycled: a tensor handed to another element
// returns here when its last reference goes.
class BufferPool : public std::enable_shared_from_this<BufferPool> {
 public:
  BufferPool(int device, size_t bytes) : device_(device), bytes_(bytes) {}
  ~BufferPool();
  size_t bytes() const { return bytes_; }
  int device() const { return device_; }
  void* acquire();
  void release(void* p);

 private:
  int device_;
  size_t bytes_;
  std::mutex lock_;
  std::vector<void*> free_;
};

// Alpha-blends `patch` (w x h RGBA8, host memory) into a frame in device
// memory at (x, y): packed RGB layouts, GRAY8, I420 and NV12 (converted to
// the frame's YUV with `yuv` = the ResamplePlan::yuv coefficients). The
// patch (a few kilobytes) is the only data that crosses to the device.
void blend_patch(const DeviceFrame& frame, const uint8_t* patch, int w, int h, int x, int y,
                 const float yuv[7], void* stream);

// The kernels' own per-pixel code run on the host over host memory, for
// tests where no GPU is: `frame` and `out` (or `frame`'s planes, written)
// are host memory.
void emulate_preprocess(const ResamplePlan& plan, const FrameView& frame, void* out, OutputType type,
                        bool channels_last);
void emulate_blend_patch(const FrameView& frame, const uint8_t* patch, int w, int h, int x, int y,
                         const float yuv[7]);

}  // namespace ptm::cuda
