// Shared by the element adapters: GstVideoFrame -> FrameView, and the one
// boundary where C++ exceptions become element errors.
#pragma once

#include <gst/gst.h>
#include <gst/video/video.h>

#include <exception>
#include <string>
#include <system_error>
#include <thread>

#include "gst/ptm/ptmmeta.h"
#include "models/error.h"
#include "models/runtime.h"
#include "preprocess_core.h"

namespace ptm {

// Property flags: changeable only in NULL/READY, or at any time.
constexpr GParamFlags kParamReady =
    GParamFlags(G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | GST_PARAM_MUTABLE_READY);
constexpr GParamFlags kParamLive =
    GParamFlags(G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | GST_PARAM_MUTABLE_PLAYING);

// One rule for every element, from the flags above: a kParamReady property
// set in PAUSED or PLAYING is refused with a warning (its value stays the
// one that runs, and reading it says so). Call first in set_property.
inline bool settable_now(GstElement* element, const GParamSpec* pspec) {
  if (!(pspec->flags & GST_PARAM_MUTABLE_READY)) return true;
  GST_OBJECT_LOCK(element);
  const GstState state = GST_STATE(element);
  GST_OBJECT_UNLOCK(element);
  if (state != GST_STATE_PAUSED && state != GST_STATE_PLAYING) return true;
  GST_WARNING_OBJECT(element, "'%s' can only change in the NULL or READY state; ignored (it keeps its value)",
                     pspec->name);
  return false;
}

// A GEnum type registered once (thread-safe); `values` ends with a zero entry.
//   static GType t = 0; return ptm::enum_type(&t, "GstPtmDevice", values);
inline GType enum_type(GType* once, const char* name, const GEnumValue* values) {
  if (g_once_init_enter(once)) g_once_init_leave(once, g_enum_register_static(name, values));
  return *once;
}

// The raw formats every ptm element accepts, for caps strings.
#define PTM_VIDEO_FORMATS "{ RGB, BGR, RGBA, BGRA, RGBx, BGRx, xRGB, xBGR, ARGB, ABGR, GRAY8, I420, NV12 }"

inline bool pixel_format_of(GstVideoFormat f, PixelFormat* out) {
  switch (f) {
    case GST_VIDEO_FORMAT_RGB: *out = PixelFormat::RGB; return true;
    case GST_VIDEO_FORMAT_BGR: *out = PixelFormat::BGR; return true;
    case GST_VIDEO_FORMAT_RGBA: *out = PixelFormat::RGBA; return true;
    case GST_VIDEO_FORMAT_BGRA: *out = PixelFormat::BGRA; return true;
    case GST_VIDEO_FORMAT_RGBx: *out = PixelFormat::RGBx; return true;
    case GST_VIDEO_FORMAT_BGRx: *out = PixelFormat::BGRx; return true;
    case GST_VIDEO_FORMAT_xRGB: *out = PixelFormat::xRGB; return true;
    case GST_VIDEO_FORMAT_xBGR: *out = PixelFormat::xBGR; return true;
    case GST_VIDEO_FORMAT_ARGB: *out = PixelFormat::ARGB; return true;
    case GST_VIDEO_FORMAT_ABGR: *out = PixelFormat::ABGR; return true;
    case GST_VIDEO_FORMAT_GRAY8: *out = PixelFormat::GRAY8; return true;
    case GST_VIDEO_FORMAT_I420: *out = PixelFormat::I420; return true;
    case GST_VIDEO_FORMAT_NV12: *out = PixelFormat::NV12; return true;
    default: return false;
  }
}

// The always sink and src pads every ptm element has: raw video in the
// formats above, system memory.
inline void add_video_pad_templates(GstElementClass* klass) {
  static GstStaticPadTemplate sink = GST_STATIC_PAD_TEMPLATE(
      "sink", GST_PAD_SINK, GST_PAD_ALWAYS, GST_STATIC_CAPS(GST_VIDEO_CAPS_MAKE(PTM_VIDEO_FORMATS)));
  static GstStaticPadTemplate src = GST_STATIC_PAD_TEMPLATE(
      "src", GST_PAD_SRC, GST_PAD_ALWAYS, GST_STATIC_CAPS(GST_VIDEO_CAPS_MAKE(PTM_VIDEO_FORMATS)));
  gst_element_class_add_static_pad_template(klass, &sink);
  gst_element_class_add_static_pad_template(klass, &src);
}

// The YUV matrix and range of `info` (for I420/NV12 frames).
inline void set_colorimetry(const GstVideoInfo& info, FrameView* v) {
  const GstVideoColorimetry& c = info.colorimetry;
  v->matrix = c.matrix == GST_VIDEO_COLOR_MATRIX_BT709    ? YuvMatrix::BT709
              : c.matrix == GST_VIDEO_COLOR_MATRIX_BT2020 ? YuvMatrix::BT2020
                                                          : YuvMatrix::BT601;
  v->full_range = c.range == GST_VIDEO_COLOR_RANGE_0_255;
}

// A view of a mapped frame for the preprocessing core.
inline FrameView frame_view(const GstVideoFrame& f) {
  FrameView v;
  pixel_format_of(GST_VIDEO_FRAME_FORMAT(&f), &v.format);
  v.width = GST_VIDEO_FRAME_WIDTH(&f);
  v.height = GST_VIDEO_FRAME_HEIGHT(&f);
  for (guint p = 0; p < GST_VIDEO_FRAME_N_PLANES(&f) && p < 3; ++p) {
    v.planes[p] = static_cast<const uint8_t*>(GST_VIDEO_FRAME_PLANE_DATA(&f, p));
    v.strides[p] = GST_VIDEO_FRAME_PLANE_STRIDE(&f, p);
  }
  set_colorimetry(f.info, &v);
  return v;
}

// The tensor an upstream ptmpreprocess attached, when it is what a model
// with `size` x `size` RGB input expects; else nullptr (the element then
// preprocesses the frame itself). `*unfit` says a tensor was there but did
// not fit. A tensor in CUDA memory is returned only to callers that give
// `cuda_device` (which receives the device, or -1 for system memory).
inline const float* fitting_tensor(GstBuffer* buf, int size, bool* unfit, int* cuda_device = nullptr) {
  const GstPtmTensorMeta* tm = gst_buffer_get_ptm_tensor_meta(buf);
  *unfit = false;
  if (!tm) return nullptr;
  if (tm->cuda_device >= 0 && !cuda_device) return nullptr;  // frames in CUDA memory: preprocessed again on the host
  if (cuda_device) *cuda_device = tm->cuda_device;
  if (tm->channels == 3 && int(tm->width) == size && int(tm->height) == size && !tm->bgr) return tm->data;
  *unfit = true;
  return nullptr;
}

// Runs `fn`; an exception becomes GST_ELEMENT_ERROR (domain/code given) with
// `what` as the message and the exception text as the debug detail.
template <typename F>
bool guarded(GstElement* element, GQuark domain, gint code, const std::string& what, F&& fn) {
  try {
    fn();
    return true;
  } catch (const std::exception& e) {
    gst_element_message_full(element, GST_MESSAGE_ERROR, domain, code,
                             g_strdup((what + ": " + ptm::error_text(e)).c_str()), g_strdup(e.what()), __FILE__,
                             GST_FUNCTION, __LINE__);
  } catch (...) {
    gst_element_message_full(element, GST_MESSAGE_ERROR, domain, code, g_strdup(what.c_str()),
                             g_strdup("unknown exception"), __FILE__, GST_FUNCTION, __LINE__);
  }
  return false;
}

// Runs `fn` on a thread of its own and waits for it (models/runtime.h).
using runtime::on_own_thread;

}  // namespace ptm
