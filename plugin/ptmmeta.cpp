#include "gst/ptm/ptmmeta.h"

#include <gst/video/video.h>

#include <cstring>

/* ---------------------------------------------------------- classification */

GType gst_ptm_classification_meta_api_get_type(void) {
  static GType type = 0;
  static const gchar* tags[] = {nullptr};
  if (g_once_init_enter(&type)) {
    GType t = gst_meta_api_type_register("GstPtmClassificationMetaAPI", tags);
    g_once_init_leave(&type, t);
  }
  return type;
}

static gboolean classification_init(GstMeta* meta, gpointer, GstBuffer*) {
  auto* m = reinterpret_cast<GstPtmClassificationMeta*>(meta);
  m->n_results = 0;
  m->class_ids = nullptr;
  m->scores = nullptr;
  m->labels = nullptr;
  m->model = nullptr;
  m->inference_ns = 0;
  m->frame_number = 0;
  m->reused = FALSE;
  return TRUE;
}

static void classification_free(GstMeta* meta, GstBuffer*) {
  auto* m = reinterpret_cast<GstPtmClassificationMeta*>(meta);
  g_free(m->class_ids);
  g_free(m->scores);
  g_strfreev(m->labels);
  g_free(m->model);
}

static void classification_set(GstPtmClassificationMeta* m, guint n, const gint* ids, const gfloat* scores,
                               const gchar* const* labels, const gchar* model, guint64 ns, guint64 frame,
                               gboolean reused) {
  m->n_results = n;
  m->class_ids = static_cast<gint*>(g_memdup2(ids, sizeof(gint) * n));
  m->scores = static_cast<gfloat*>(g_memdup2(scores, sizeof(gfloat) * n));
  m->labels = g_new0(gchar*, n + 1);
  for (guint i = 0; i < n; ++i) m->labels[i] = g_strdup(labels && labels[i] ? labels[i] : "");
  m->model = g_strdup(model ? model : "");
  m->inference_ns = ns;
  m->frame_number = frame;
  m->reused = reused;
}

static gboolean classification_transform(GstBuffer* dest, GstMeta* meta, GstBuffer*, GQuark type, gpointer) {
  // Results describe the whole picture: they hold for copies, and for
  // scaled or converted frames of it alike.
  (void)type;
  auto* m = reinterpret_cast<GstPtmClassificationMeta*>(meta);
  return gst_buffer_add_ptm_classification_meta(dest, m->n_results, m->class_ids, m->scores, m->labels, m->model,
                                                m->inference_ns, m->frame_number, m->reused) != nullptr;
}

const GstMetaInfo* gst_ptm_classification_meta_get_info(void) {
  static const GstMetaInfo* info = nullptr;
  if (g_once_init_enter(&info)) {
    const GstMetaInfo* i = gst_meta_register(
        GST_PTM_CLASSIFICATION_META_API_TYPE, "GstPtmClassificationMeta", sizeof(GstPtmClassificationMeta),
        classification_init, classification_free, classification_transform);
    g_once_init_leave(&info, i);
  }
  return info;
}

GstPtmClassificationMeta* gst_buffer_add_ptm_classification_meta(GstBuffer* buffer, guint n, const gint* ids,
                                                                 const gfloat* scores, const gchar* const* labels,
                                                                 const gchar* model, guint64 ns, guint64 frame,
                                                                 gboolean reused) {
  g_return_val_if_fail(GST_IS_BUFFER(buffer), nullptr);
  g_return_val_if_fail(n == 0 || (ids && scores), nullptr);
  auto* m = reinterpret_cast<GstPtmClassificationMeta*>(
      gst_buffer_add_meta(buffer, GST_PTM_CLASSIFICATION_META_INFO, nullptr));
  if (m) classification_set(m, n, ids, scores, labels, model, ns, frame, reused);
  return m;
}

GstPtmClassificationMeta* gst_ptm_buffer_get_classification_meta(GstBuffer* buffer) {
  g_return_val_if_fail(GST_IS_BUFFER(buffer), nullptr);
  return gst_buffer_get_ptm_classification_meta(buffer);
}

guint gst_ptm_classification_meta_get_n_results(const GstPtmClassificationMeta* meta) {
  g_return_val_if_fail(meta, 0);
  return meta->n_results;
}

gint gst_ptm_classification_meta_get_class_id(const GstPtmClassificationMeta* meta, guint index) {
  g_return_val_if_fail(meta, -1);
  return index < meta->n_results ? meta->class_ids[index] : -1;
}

gfloat gst_ptm_classification_meta_get_score(const GstPtmClassificationMeta* meta, guint index) {
  g_return_val_if_fail(meta, 0.f);
  return index < meta->n_results ? meta->scores[index] : 0.f;
}

const gchar* gst_ptm_classification_meta_get_label(const GstPtmClassificationMeta* meta, guint index) {
  g_return_val_if_fail(meta, nullptr);
  return index < meta->n_results ? meta->labels[index] : nullptr;
}

const gchar* gst_ptm_classification_meta_get_model(const GstPtmClassificationMeta* meta) {
  g_return_val_if_fail(meta, nullptr);
  return meta->model ? meta->model : "";
}

// The index-th ROI meta with a "ptm-classification" parameter.
static GstVideoRegionOfInterestMeta* classified_region(GstBuffer* buffer, guint index, const GstStructure** s) {
  gpointer state = nullptr;
  guint n = 0;
  while (GstMeta* m = gst_buffer_iterate_meta_filtered(buffer, &state, GST_VIDEO_REGION_OF_INTEREST_META_API_TYPE)) {
    auto* roi = reinterpret_cast<GstVideoRegionOfInterestMeta*>(m);
    const GstStructure* p = gst_video_region_of_interest_meta_get_param(roi, "ptm-classification");
    if (!p) continue;
    if (n++ == index) {
      if (s) *s = p;
      return roi;
    }
  }
  return nullptr;
}

guint gst_ptm_buffer_get_n_regions(GstBuffer* buffer) {
  g_return_val_if_fail(GST_IS_BUFFER(buffer), 0);
  guint n = 0;
  while (classified_region(buffer, n, nullptr)) ++n;
  return n;
}

const GstStructure* gst_ptm_buffer_get_region(GstBuffer* buffer, guint index, guint* x, guint* y, guint* width,
                                              guint* height, const gchar** type) {
  g_return_val_if_fail(GST_IS_BUFFER(buffer), nullptr);
  const GstStructure* s = nullptr;
  GstVideoRegionOfInterestMeta* roi = classified_region(buffer, index, &s);
  if (!roi) return nullptr;
  if (x) *x = roi->x;
  if (y) *y = roi->y;
  if (width) *width = roi->w;
  if (height) *height = roi->h;
  if (type) *type = g_quark_to_string(roi->roi_type);
  return s;
}

/* ------------------------------------------------------------------ tensor */

GType gst_ptm_tensor_meta_api_get_type(void) {
  static GType type = 0;
  static const gchar* tags[] = {nullptr};
  if (g_once_init_enter(&type)) {
    GType t = gst_meta_api_type_register("GstPtmTensorMetaAPI", tags);
    g_once_init_leave(&type, t);
  }
  return type;
}

static gboolean tensor_init(GstMeta* meta, gpointer, GstBuffer*) {
  auto* m = reinterpret_cast<GstPtmTensorMeta*>(meta);
  m->channels = m->height = m->width = 0;
  m->data = nullptr;
  m->bgr = FALSE;
  m->preprocessing = nullptr;
  m->cuda_device = -1;
  m->bytes = nullptr;
  return TRUE;
}

static void tensor_free(GstMeta* meta, GstBuffer*) {
  auto* m = reinterpret_cast<GstPtmTensorMeta*>(meta);
  if (m->bytes) g_bytes_unref(m->bytes);
  g_free(m->preprocessing);
}

static gboolean tensor_transform(GstBuffer* dest, GstMeta* meta, GstBuffer*, GQuark type, gpointer data) {
  // The tensor was made from these exact pixels: keep it on copies only,
  // not on scaled or converted frames.
  if (!GST_META_TRANSFORM_IS_COPY(type)) return FALSE;
  (void)data;
  auto* m = reinterpret_cast<GstPtmTensorMeta*>(meta);
  GstPtmTensorMeta* copy = gst_buffer_add_ptm_tensor_meta(dest, m->bytes, m->channels, m->height, m->width, m->mean,
                                                           m->std, m->bgr, m->preprocessing);
  if (copy) copy->cuda_device = m->cuda_device;
  return copy != nullptr;
}

const GstMetaInfo* gst_ptm_tensor_meta_get_info(void) {
  static const GstMetaInfo* info = nullptr;
  if (g_once_init_enter(&info)) {
    const GstMetaInfo* i = gst_meta_register(GST_PTM_TENSOR_META_API_TYPE, "GstPtmTensorMeta",
                                             sizeof(GstPtmTensorMeta), tensor_init, tensor_free, tensor_transform);
    g_once_init_leave(&info, i);
  }
  return info;
}

GstPtmTensorMeta* gst_buffer_add_ptm_tensor_meta(GstBuffer* buffer, GBytes* bytes, guint channels, guint height,
                                                 guint width, const gfloat mean[3], const gfloat std[3],
                                                 gboolean bgr, const gchar* preprocessing) {
  g_return_val_if_fail(GST_IS_BUFFER(buffer), nullptr);
  g_return_val_if_fail(bytes != nullptr, nullptr);
  g_return_val_if_fail(g_bytes_get_size(bytes) == gsize(channels) * height * width * sizeof(gfloat), nullptr);
  auto* m = reinterpret_cast<GstPtmTensorMeta*>(gst_buffer_add_meta(buffer, GST_PTM_TENSOR_META_INFO, nullptr));
  if (!m) return nullptr;
  m->bytes = g_bytes_ref(bytes);
  m->data = static_cast<const gfloat*>(g_bytes_get_data(bytes, nullptr));
  m->channels = channels;
  m->height = height;
  m->width = width;
  std::memcpy(m->mean, mean, sizeof m->mean);
  std::memcpy(m->std, std, sizeof m->std);
  m->bgr = bgr;
  m->preprocessing = g_strdup(preprocessing ? preprocessing : "");
  m->cuda_device = -1;
  return m;
}
