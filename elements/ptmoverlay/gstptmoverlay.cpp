/**
 * SECTION:element-ptmoverlay
 * @title: ptmoverlay
 *
 * Draws the #GstPtmClassificationMeta of each frame (from ptminfer) onto
 * the video in place: labels, scores and score bars, optionally the model's
 * latency and the frame rate. Regions ptminfer classified
 * (inference-region=roi-list) get their outline and best class at their
 * box. Frames without results pass unchanged.
 *
 * |[
 * gst-launch-1.0 v4l2src ! videoconvert ! ptminfer model=m.pth ! ptmoverlay show-timing=true ! videoconvert ! autovideosink
 * ]|
 *
 * Frames in CUDA memory stay there: the box is drawn on the host as a small
 * RGBA image and blended into the frame by a kernel (regions are drawn on
 * frames in system memory only).
 */
#include "gstptmoverlay.h"

#include <mutex>

#include "gst/ptm/ptmmeta.h"
#include "gstptmcuda.h"
#include "gstptmutil.h"
#include "overlay_core.h"

#if PTM_HAVE_CUDA
#include "ptmcuda.h"
#endif

GST_DEBUG_CATEGORY_STATIC(gst_ptm_overlay_debug);
#define GST_CAT_DEFAULT gst_ptm_overlay_debug

enum {
  PROP_0,
  PROP_POSITION,
  PROP_FONT_SCALE,
  PROP_TEXT_COLOR,
  PROP_BAR_COLOR,
  PROP_BOX_COLOR,
  PROP_SHOW_SCORES,
  PROP_SHOW_BARS,
  PROP_SHOW_TIMING,
  PROP_MAX_RESULTS,
};

#define GST_TYPE_PTM_CORNER (gst_ptm_corner_get_type())
static GType gst_ptm_corner_get_type(void) {
  static const GEnumValue values[] = {{int(ptm::Corner::TopLeft), "Top left", "top-left"},
                                      {int(ptm::Corner::TopRight), "Top right", "top-right"},
                                      {int(ptm::Corner::BottomLeft), "Bottom left", "bottom-left"},
                                      {int(ptm::Corner::BottomRight), "Bottom right", "bottom-right"},
                                      {0, nullptr, nullptr}};
  static GType type = 0;
  return ptm::enum_type(&type, "GstPtmCorner", values);
}

struct OverlayPrivate {
  std::mutex lock;
  ptm::OverlayStyle style;
  GstClockTime last_pts = GST_CLOCK_TIME_NONE;
  double fps = -1;
  bool cuda_memory = false;  // the caps say memory:CUDAMemory
  ptm::CudaLink cuda;
#if PTM_HAVE_CUDA
  ptm::cuda::Stream stream;
#endif
};

struct _GstPtmOverlay {
  GstVideoFilter parent;
  OverlayPrivate* priv;
};

G_DEFINE_TYPE(GstPtmOverlay, gst_ptm_overlay, GST_TYPE_VIDEO_FILTER)
GST_ELEMENT_REGISTER_DEFINE(ptmoverlay, "ptmoverlay", GST_RANK_NONE, GST_TYPE_PTM_OVERLAY)

static void gst_ptm_overlay_set_property(GObject* object, guint id, const GValue* value, GParamSpec* pspec) {
  auto* self = GST_PTM_OVERLAY(object);
  std::lock_guard<std::mutex> g(self->priv->lock);
  ptm::OverlayStyle& s = self->priv->style;
  switch (id) {
    case PROP_POSITION: s.corner = ptm::Corner(g_value_get_enum(value)); break;
    case PROP_FONT_SCALE: s.font_scale = g_value_get_double(value); break;
    case PROP_TEXT_COLOR: s.text_color = g_value_get_uint(value); break;
    case PROP_BAR_COLOR: s.bar_color = g_value_get_uint(value); break;
    case PROP_BOX_COLOR: s.box_color = g_value_get_uint(value); break;
    case PROP_SHOW_SCORES: s.show_scores = g_value_get_boolean(value); break;
    case PROP_SHOW_BARS: s.show_bars = g_value_get_boolean(value); break;
    case PROP_SHOW_TIMING: s.show_timing = g_value_get_boolean(value); break;
    case PROP_MAX_RESULTS: s.max_results = g_value_get_uint(value); break;
    default: G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec); break;
  }
}

static void gst_ptm_overlay_get_property(GObject* object, guint id, GValue* value, GParamSpec* pspec) {
  auto* self = GST_PTM_OVERLAY(object);
  std::lock_guard<std::mutex> g(self->priv->lock);
  const ptm::OverlayStyle& s = self->priv->style;
  switch (id) {
    case PROP_POSITION: g_value_set_enum(value, int(s.corner)); break;
    case PROP_FONT_SCALE: g_value_set_double(value, s.font_scale); break;
    case PROP_TEXT_COLOR: g_value_set_uint(value, s.text_color); break;
    case PROP_BAR_COLOR: g_value_set_uint(value, s.bar_color); break;
    case PROP_BOX_COLOR: g_value_set_uint(value, s.box_color); break;
    case PROP_SHOW_SCORES: g_value_set_boolean(value, s.show_scores); break;
    case PROP_SHOW_BARS: g_value_set_boolean(value, s.show_bars); break;
    case PROP_SHOW_TIMING: g_value_set_boolean(value, s.show_timing); break;
    case PROP_MAX_RESULTS: g_value_set_uint(value, s.max_results); break;
    default: G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec); break;
  }
}

// The regions ptminfer classified (a "ptm-classification" parameter on
// their ROI meta), with their best class.
static std::vector<ptm::OverlayRegion> classified_regions(GstBuffer* buf) {
  std::vector<ptm::OverlayRegion> out;
  gpointer state = nullptr;
  while (GstMeta* m = gst_buffer_iterate_meta_filtered(buf, &state, GST_VIDEO_REGION_OF_INTEREST_META_API_TYPE)) {
    auto* roi = reinterpret_cast<GstVideoRegionOfInterestMeta*>(m);
    const GstStructure* s = gst_video_region_of_interest_meta_get_param(roi, "ptm-classification");
    if (!s) continue;
    ptm::OverlayRegion r;
    r.x = int(roi->x);
    r.y = int(roi->y);
    r.width = int(roi->w);
    r.height = int(roi->h);
    if (const gchar* label = gst_structure_get_string(s, "top-label")) r.label = label;
    double score = 0;
    if (gst_structure_get_double(s, "top-score", &score)) r.score = float(score);
    out.push_back(std::move(r));
  }
  return out;
}

// The frame rate seen so far and the text of this buffer's results; false
// when the buffer has none.
static bool overlay_text(GstPtmOverlay* self, GstBuffer* buf, ptm::OverlayText* text, ptm::OverlayStyle* style) {
  OverlayPrivate& p = *self->priv;
  const GstClockTime pts = GST_BUFFER_PTS(buf);
  if (GST_CLOCK_TIME_IS_VALID(pts) && GST_CLOCK_TIME_IS_VALID(p.last_pts) && pts > p.last_pts) {
    const double fps = double(GST_SECOND) / double(pts - p.last_pts);
    p.fps = p.fps < 0 ? fps : 0.9 * p.fps + 0.1 * fps;
  }
  p.last_pts = pts;
  const auto* meta = gst_buffer_get_ptm_classification_meta(buf);
  if (!meta) return false;
  {
    std::lock_guard<std::mutex> g(p.lock);
    *style = p.style;
  }
  for (guint i = 0; i < meta->n_results; ++i) text->items.push_back({meta->labels[i], meta->scores[i]});
  text->inference_ms = double(meta->inference_ns) / 1e6;
  text->fps = p.fps;
  text->model = meta->model ? meta->model : "";
  return true;
}

static GstFlowReturn gst_ptm_overlay_transform_frame_ip(GstVideoFilter* filter, GstVideoFrame* frame) {
  auto* self = GST_PTM_OVERLAY(filter);
  ptm::OverlayText text;
  ptm::OverlayStyle style;
  const bool whole = overlay_text(self, frame->buffer, &text, &style);
  const std::vector<ptm::OverlayRegion> regions = classified_regions(frame->buffer);
  if (!whole && regions.empty()) return GST_FLOW_OK;
  if (!whole) {
    std::lock_guard<std::mutex> g(self->priv->lock);
    style = self->priv->style;
  }
  ptm::MutableFrame mf;
  ptm::FrameView v = ptm::frame_view(*frame);
  mf.format = v.format;
  mf.width = v.width;
  mf.height = v.height;
  for (int i = 0; i < 3; ++i) {
    mf.planes[i] = const_cast<uint8_t*>(v.planes[i]);
    mf.strides[i] = v.strides[i];
  }
  const bool ok = ptm::guarded(GST_ELEMENT(self), GST_STREAM_ERROR, GST_STREAM_ERROR_FAILED, "Drawing failed",
                               [&] {
                                 if (whole) ptm::draw_overlay(mf, text, style);
                                 ptm::draw_regions(mf, regions, style);
                               });
  return ok ? GST_FLOW_OK : GST_FLOW_ERROR;
}

// Frames in CUDA memory: the box is rendered on the host (a few kilobytes)
// and blended into the frame where it lies.
static GstFlowReturn gst_ptm_overlay_transform_ip(GstBaseTransform* trans, GstBuffer* buf) {
  auto* self = GST_PTM_OVERLAY(trans);
  OverlayPrivate& p = *self->priv;
  if (!p.cuda_memory) return GST_BASE_TRANSFORM_CLASS(gst_ptm_overlay_parent_class)->transform_ip(trans, buf);
#if PTM_HAVE_CUDA
  ptm::OverlayText text;
  ptm::OverlayStyle style;
  if (!overlay_text(self, buf, &text, &style)) return GST_FLOW_OK;
  GstVideoFrame frame;
  ptm::FrameView view;
  int device = -1;
  std::string why;
  if (!p.cuda.map(buf, &GST_VIDEO_FILTER(self)->in_info, true, &frame, &view, &device, &why)) {
    GST_ELEMENT_ERROR(self, STREAM, FAILED, ("Cannot draw on the frame in CUDA memory: %s", why.c_str()), (nullptr));
    return GST_FLOW_ERROR;
  }
  const bool ok = ptm::guarded(GST_ELEMENT(self), GST_STREAM_ERROR, GST_STREAM_ERROR_FAILED, "Drawing failed", [&] {
    ptm::OverlayPatch patch;
    if (!ptm::render_overlay_patch(view.width, view.height, text, style, &patch)) return;
    const ptm::YuvTable yuv = ptm::yuv_table(view.matrix, view.full_range);
    ptm::cuda::blend_patch(view, patch.rgba.data(), patch.width, patch.height, patch.x, patch.y, yuv.data(),
                           p.stream.on(device));
    p.stream.synchronize();  // done before the frame moves on
  });
  gst_video_frame_unmap(&frame);
  return ok ? GST_FLOW_OK : GST_FLOW_ERROR;
#else
  (void)buf;
  GST_ELEMENT_ERROR(self, CORE, NEGOTIATION, ("%s", ptm::cuda_unusable_reason().c_str()), (nullptr));
  return GST_FLOW_ERROR;
#endif
}

static gboolean gst_ptm_overlay_set_info(GstVideoFilter* filter, GstCaps* incaps, GstVideoInfo*, GstCaps*,
                                         GstVideoInfo*) {
  auto* self = GST_PTM_OVERLAY(filter);
  return ptm::accept_memory_caps(GST_ELEMENT(self), incaps, &self->priv->cuda_memory);
}

static gboolean gst_ptm_overlay_query(GstBaseTransform* trans, GstPadDirection dir, GstQuery* query) {
  auto* self = GST_PTM_OVERLAY(trans);
  if (self->priv->cuda.handle_query(GST_ELEMENT(self), query)) return TRUE;
  return GST_BASE_TRANSFORM_CLASS(gst_ptm_overlay_parent_class)->query(trans, dir, query);
}

static void gst_ptm_overlay_set_context(GstElement* element, GstContext* context) {
  GST_PTM_OVERLAY(element)->priv->cuda.set_context(element, context);
  GST_ELEMENT_CLASS(gst_ptm_overlay_parent_class)->set_context(element, context);
}

static gboolean gst_ptm_overlay_start(GstBaseTransform* trans) {
  auto* self = GST_PTM_OVERLAY(trans);
  self->priv->last_pts = GST_CLOCK_TIME_NONE;
  self->priv->fps = -1;
  return TRUE;
}

static void gst_ptm_overlay_finalize(GObject* object) {
  delete GST_PTM_OVERLAY(object)->priv;
  G_OBJECT_CLASS(gst_ptm_overlay_parent_class)->finalize(object);
}

static void gst_ptm_overlay_init(GstPtmOverlay* self) { self->priv = new OverlayPrivate(); }

static void gst_ptm_overlay_class_init(GstPtmOverlayClass* klass) {
  GObjectClass* gobject_class = G_OBJECT_CLASS(klass);
  GstElementClass* element_class = GST_ELEMENT_CLASS(klass);
  gobject_class->set_property = gst_ptm_overlay_set_property;
  gobject_class->get_property = gst_ptm_overlay_get_property;
  gobject_class->finalize = gst_ptm_overlay_finalize;
  const auto live = ptm::kParamLive;
  g_object_class_install_property(gobject_class, PROP_POSITION,
                                  g_param_spec_enum("position", "Position", "Corner of the frame for the results",
                                                    GST_TYPE_PTM_CORNER, int(ptm::Corner::TopLeft), live));
  g_object_class_install_property(gobject_class, PROP_FONT_SCALE,
                                  g_param_spec_double("font-scale", "Font scale", "Text size (OpenCV font scale)",
                                                      0.1, 10.0, 0.6, live));
  g_object_class_install_property(gobject_class, PROP_TEXT_COLOR,
                                  g_param_spec_uint("text-color", "Text colour", "Text colour, 0xAARRGGBB", 0,
                                                    G_MAXUINT32, 0xFFFFFFFF, live));
  g_object_class_install_property(gobject_class, PROP_BAR_COLOR,
                                  g_param_spec_uint("bar-color", "Bar colour", "Score bar colour, 0xAARRGGBB", 0,
                                                    G_MAXUINT32, 0xFF30C030, live));
  g_object_class_install_property(gobject_class, PROP_BOX_COLOR,
                                  g_param_spec_uint("box-color", "Box colour",
                                                    "Background box colour, 0xAARRGGBB (alpha 0: no box)", 0,
                                                    G_MAXUINT32, 0xA0000000, live));
  g_object_class_install_property(gobject_class, PROP_SHOW_SCORES,
                                  g_param_spec_boolean("show-scores", "Show scores", "Print scores as percentages",
                                                       TRUE, live));
  g_object_class_install_property(gobject_class, PROP_SHOW_BARS,
                                  g_param_spec_boolean("show-bars", "Show bars", "Draw a score bar per class", TRUE,
                                                       live));
  g_object_class_install_property(gobject_class, PROP_SHOW_TIMING,
                                  g_param_spec_boolean("show-timing", "Show timing",
                                                       "Print the model, its latency and the frame rate", FALSE,
                                                       live));
  g_object_class_install_property(gobject_class, PROP_MAX_RESULTS,
                                  g_param_spec_uint("max-results", "Max results",
                                                    "Classes drawn per frame; 0: all in the metadata", 0, 1000, 0,
                                                    live));
  gst_element_class_set_static_metadata(element_class, "PyTorch classification overlay", "Filter/Effect/Video",
                                        "Draws ptminfer's labels and scores on the video", "ptm developers");
  ptm::add_video_pad_templates_with_cuda(element_class);
  element_class->set_context = GST_DEBUG_FUNCPTR(gst_ptm_overlay_set_context);
  GST_BASE_TRANSFORM_CLASS(klass)->start = GST_DEBUG_FUNCPTR(gst_ptm_overlay_start);
  GST_BASE_TRANSFORM_CLASS(klass)->query = GST_DEBUG_FUNCPTR(gst_ptm_overlay_query);
  GST_VIDEO_FILTER_CLASS(klass)->set_info = GST_DEBUG_FUNCPTR(gst_ptm_overlay_set_info);
  GST_VIDEO_FILTER_CLASS(klass)->transform_frame_ip = GST_DEBUG_FUNCPTR(gst_ptm_overlay_transform_frame_ip);
  // After GstVideoFilter's: CUDA frames are handled without its host mapping.
  GST_BASE_TRANSFORM_CLASS(klass)->transform_ip = GST_DEBUG_FUNCPTR(gst_ptm_overlay_transform_ip);
  gst_type_mark_as_plugin_api(GST_TYPE_PTM_CORNER, GstPluginAPIFlags(0));
  GST_DEBUG_CATEGORY_INIT(gst_ptm_overlay_debug, "ptmoverlay", 0, "PyTorch classification overlay");
}
