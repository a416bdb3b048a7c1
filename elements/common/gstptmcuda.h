// GstCudaMemory for the ptm elements: caps, the shared CUDA context, and
// frames mapped as device pointers. Compiled in every build; without CUDA
// support (no toolkit at build time) the functions say so instead.
#pragma once

#include <gst/gst.h>
#include <gst/video/video.h>

#include <string>

#include "preprocess_core.h"

namespace ptm {

#define PTM_CUDA_MEMORY_FEATURE "memory:CUDAMemory"

// True when this build has the CUDA kernels and GstCudaMemory support.
bool cuda_built();

// Why CUDA cannot be used here ("" when a device is usable).
std::string cuda_unusable_reason();

// True when `caps` carry the CUDA memory feature.
bool caps_have_cuda_memory(const GstCaps* caps);

// For set_caps: `*cuda` says whether `caps` carry CUDA memory. Posts an
// element error naming the reason and returns false when they do and CUDA
// cannot be used here (no CUDA support in this build, no driver, no GPU).
bool accept_memory_caps(GstElement* element, const GstCaps* caps, bool* cuda);

// The pad templates of an element that takes system or CUDA memory.
void add_video_pad_templates_with_cuda(GstElementClass* klass);

// Per element: the CUDA context it shares with its neighbours. Elements
// that ask (cudaupload, cudaconvert, the NVDEC decoders) get one wrapping
// the device's primary context, which the CUDA runtime and so LibTorch
// work in: their device memory is then readable by our kernels and by
// LibTorch without a copy.
class CudaLink {
 public:
  CudaLink() = default;
  ~CudaLink();
  CudaLink(const CudaLink&) = delete;
  CudaLink& operator=(const CudaLink&) = delete;

  void set_context(GstElement* element, GstContext* context);
  // Answers a "gst.cuda.context" context query; false for other queries.
  bool handle_query(GstElement* element, GstQuery* query);
  void reset();

  // Maps a frame of CUDA memory for device access: `view` gets device
  // pointers. False with `*why` when the buffer is not CUDA memory of the
  // primary context of a device.
  bool map(GstBuffer* buffer, const GstVideoInfo* info, bool write, GstVideoFrame* frame, FrameView* view,
           int* device, std::string* why);

 private:
  bool ensure(GstElement* element, std::string* why);
  void* context_ = nullptr;  // GstCudaContext*
};

}  // namespace ptm
