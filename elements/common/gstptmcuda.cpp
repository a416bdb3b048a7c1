#include "gstptmcuda.h"

#include "gstptmutil.h"

#if PTM_HAVE_CUDA
#include <gst/cuda/gstcudacontext.h>
#include <gst/cuda/gstcudaloader.h>
#include <gst/cuda/gstcudamemory.h>
#include <gst/cuda/gstcudautils.h>

#include <stdexcept>

#include "ptmcuda.h"
#endif

namespace ptm {

namespace {
#define PTM_CUDA_CAPS GST_VIDEO_CAPS_MAKE_WITH_FEATURES(PTM_CUDA_MEMORY_FEATURE, PTM_VIDEO_FORMATS)
}  // namespace

bool caps_have_cuda_memory(const GstCaps* caps) {
  for (guint i = 0; caps && i < gst_caps_get_size(caps); ++i) {
    const GstCapsFeatures* f = gst_caps_get_features(caps, i);
    if (f && !gst_caps_features_is_any(f) && gst_caps_features_contains(f, PTM_CUDA_MEMORY_FEATURE)) return true;
  }
  return false;
}

bool accept_memory_caps(GstElement* element, const GstCaps* caps, bool* cuda) {
  *cuda = caps_have_cuda_memory(caps);
  if (!*cuda) return true;
  const std::string why = cuda_unusable_reason();
  if (why.empty()) return true;
  gst_element_message_full(element, GST_MESSAGE_ERROR, GST_CORE_ERROR, GST_CORE_ERROR_NEGOTIATION,
                           g_strdup_printf("Frames in CUDA memory (memory:CUDAMemory) were offered, but CUDA cannot "
                                           "be used: %s",
                                           why.c_str()),
                           gst_caps_to_string(caps), __FILE__, GST_FUNCTION, __LINE__);
  return false;
}

void add_video_pad_templates_with_cuda(GstElementClass* klass) {
  // System memory first: a neighbour offering both picks it unless CUDA
  // memory is what it prefers.
  static GstStaticPadTemplate sink = GST_STATIC_PAD_TEMPLATE(
      "sink", GST_PAD_SINK, GST_PAD_ALWAYS, GST_STATIC_CAPS(GST_VIDEO_CAPS_MAKE(PTM_VIDEO_FORMATS) "; " PTM_CUDA_CAPS));
  static GstStaticPadTemplate src = GST_STATIC_PAD_TEMPLATE(
      "src", GST_PAD_SRC, GST_PAD_ALWAYS, GST_STATIC_CAPS(GST_VIDEO_CAPS_MAKE(PTM_VIDEO_FORMATS) "; " PTM_CUDA_CAPS));
  gst_element_class_add_static_pad_template(klass, &sink);
  gst_element_class_add_static_pad_template(klass, &src);
}

#if PTM_HAVE_CUDA

bool cuda_built() { return true; }

std::string cuda_unusable_reason() {
  std::string why;
  if (cuda::device_count(&why) > 0) return "";
  if (!gst_cuda_load_library()) return "the CUDA driver library could not be loaded (" + why + ")";
  return why;
}

CudaLink::~CudaLink() { reset(); }

void CudaLink::reset() {
  if (context_) gst_object_unref(context_);
  context_ = nullptr;
}

void CudaLink::set_context(GstElement* element, GstContext* context) {
  GstCudaContext* ctx = static_cast<GstCudaContext*>(context_);
  gst_cuda_handle_set_context(element, context, -1, &ctx);
  context_ = ctx;
}

bool CudaLink::ensure(GstElement* element, std::string* why) {
  if (context_) return true;
  try {
    std::string reason;
    if (cuda::device_count(&reason) <= 0) throw std::runtime_error(reason);
    if (!gst_cuda_load_library()) throw std::runtime_error("the CUDA driver library could not be loaded");
    const int device = 0;
    void* primary = cuda::primary_context(device);
    GstCudaContext* ctx = gst_cuda_context_new_wrapped(static_cast<CUcontext>(primary), CUdevice(device));
    if (!ctx) throw std::runtime_error("gst_cuda_context_new_wrapped failed");
    context_ = ctx;
    GST_INFO_OBJECT(element, "sharing CUDA device %d's primary context with neighbours", device);
    return true;
  } catch (const std::exception& e) {
    if (why) *why = e.what();
    return false;
  }
}

bool CudaLink::handle_query(GstElement* element, GstQuery* query) {
  if (GST_QUERY_TYPE(query) != GST_QUERY_CONTEXT) return false;
  const gchar* type = nullptr;
  if (!gst_query_parse_context_type(query, &type) || g_strcmp0(type, GST_CUDA_CONTEXT_TYPE) != 0) return false;
  std::string why;
  if (!ensure(element, &why)) {
    GST_DEBUG_OBJECT(element, "no CUDA context to share: %s", why.c_str());
    return false;
  }
  return gst_cuda_handle_context_query(element, query, static_cast<GstCudaContext*>(context_));
}

bool CudaLink::map(GstBuffer* buf, const GstVideoInfo* info, bool write, GstVideoFrame* frame, FrameView* view,
                   int* device, std::string* why) {
  GstMemory* mem = gst_buffer_n_memory(buf) ? gst_buffer_peek_memory(buf, 0) : nullptr;
  if (!mem || !gst_is_cuda_memory(mem)) {
    *why = "the buffer is not CUDA memory although the caps say memory:CUDAMemory";
    return false;
  }
  GstCudaContext* ctx = GST_CUDA_MEMORY_CAST(mem)->context;
  guint dev = 0;
  g_object_get(ctx, "cuda-device-id", &dev, nullptr);
  void* primary = nullptr;
  try {
    primary = cuda::primary_context(int(dev));
  } catch (const std::exception& e) {
    *why = e.what();
    return false;
  }
  if (gst_cuda_context_get_handle(ctx) != primary) {
    *why = "the frames are CUDA memory of a context of their own, not of device " + std::to_string(dev) +
           "'s primary context (which LibTorch uses); let the CUDA elements share ptm's context (do not set "
           "another gst.cuda.context on the pipeline)";
    return false;
  }
  // Device memory is pitched: without a GstVideoMeta the caps' default
  // strides would be wrong, the memory's own layout is right.
  const GstVideoInfo* layout = info;
  const GstVideoInfo* own = &GST_CUDA_MEMORY_CAST(mem)->info;
  if (!gst_buffer_get_video_meta(buf) && GST_VIDEO_INFO_FORMAT(own) == GST_VIDEO_INFO_FORMAT(info) &&
      GST_VIDEO_INFO_WIDTH(own) == GST_VIDEO_INFO_WIDTH(info) &&
      GST_VIDEO_INFO_HEIGHT(own) == GST_VIDEO_INFO_HEIGHT(info))
    layout = own;
  const GstMapFlags flags = GstMapFlags((write ? GST_MAP_READWRITE : GST_MAP_READ) | GST_MAP_CUDA);
  if (!gst_video_frame_map(frame, layout, buf, flags)) {
    *why = "could not map the CUDA memory for device access";
    return false;
  }
  *view = frame_view(*frame);
  set_colorimetry(*info, view);  // from the caps: the memory's own info need not carry it
  *device = int(dev);
  return true;
}

#else  // no CUDA support in this build

bool cuda_built() { return false; }

std::string cuda_unusable_reason() {
  return "this build of ptm has no CUDA support (the CUDA toolkit and gstreamer-cuda-1.0 were not found when it "
         "was built)";
}

CudaLink::~CudaLink() = default;
void CudaLink::reset() {}
void CudaLink::set_context(GstElement*, GstContext*) {}
bool CudaLink::handle_query(GstElement*, GstQuery*) { return false; }
bool CudaLink::ensure(GstElement*, std::string* why) {
  *why = cuda_unusable_reason();
  return false;
}
bool CudaLink::map(GstBuffer*, const GstVideoInfo*, bool, GstVideoFrame*, FrameView*, int*, std::string* why) {
  *why = cuda_unusable_reason();
  return false;
}

#endif

}  // namespace ptm
