/* Public metadata of the ptm elements, for applications.
 *
 *   #include <gst/ptm/ptmmeta.h>       pkg-config: gstreamer-ptm-1.0
 *
 * GstPtmClassificationMeta: what ptminfer found in a frame (top-k class ids,
 * labels and scores, best first), the model, and the inference time.
 * GstPtmTensorMeta: the model input tensor ptmpreprocess made from a frame.
 * Both survive gst_buffer_copy() and friends (the data is shared, read-only).
 * The same results reach applications without C as the element message
 * "ptm-classification" on the bus. */
#ifndef __GST_PTM_META_H__
#define __GST_PTM_META_H__

#include <gst/gst.h>

G_BEGIN_DECLS

#ifndef GST_PTM_API
#define GST_PTM_API extern
#endif

/* ---------------------------------------------------------- classification */

#define GST_PTM_CLASSIFICATION_META_API_TYPE (gst_ptm_classification_meta_api_get_type ())
#define GST_PTM_CLASSIFICATION_META_INFO (gst_ptm_classification_meta_get_info ())

typedef struct _GstPtmClassificationMeta GstPtmClassificationMeta;

/**
 * GstPtmClassificationMeta:
 * @meta: parent
 * @n_results: number of entries in @class_ids, @scores and @labels
 * @class_ids: class indices, best first
 * @scores: scores (softmax or sigmoid probabilities, or raw logits) of those classes
 * @labels: label of each class (never NULL; "" when unknown)
 * @model: the model that produced them (architecture name)
 * @inference_ns: model time for this frame in nanoseconds (its batch's time divided by the batch size)
 * @frame_number: index of the frame in the stream (from 0, reset on flush)
 * @reused: TRUE when the result is carried over from an earlier frame
 *   (ptminfer's interval property)
 */
struct _GstPtmClassificationMeta {
  GstMeta meta;
  guint n_results;
  gint *class_ids;
  gfloat *scores;
  gchar **labels;
  gchar *model;
  guint64 inference_ns;
  guint64 frame_number;
  gboolean reused;
};

GST_PTM_API GType gst_ptm_classification_meta_api_get_type (void);
GST_PTM_API const GstMetaInfo *gst_ptm_classification_meta_get_info (void);

/* Copies @class_ids, @scores, @labels (n_results entries each) and @model. */
GST_PTM_API GstPtmClassificationMeta *
gst_buffer_add_ptm_classification_meta (GstBuffer * buffer, guint n_results,
    const gint * class_ids, const gfloat * scores, const gchar * const *labels,
    const gchar * model, guint64 inference_ns, guint64 frame_number, gboolean reused);

#define gst_buffer_get_ptm_classification_meta(b) \
  ((GstPtmClassificationMeta *) gst_buffer_get_meta ((b), GST_PTM_CLASSIFICATION_META_API_TYPE))

/* Functions for bindings (GObject introspection: GstPtm-1.0), and for C
 * callers who prefer them to the fields. */

/**
 * gst_ptm_buffer_get_classification_meta:
 * @buffer: a #GstBuffer
 *
 * Returns: (transfer none) (nullable): the buffer's #GstPtmClassificationMeta
 */
GST_PTM_API GstPtmClassificationMeta *
gst_ptm_buffer_get_classification_meta (GstBuffer * buffer);

/**
 * gst_ptm_classification_meta_get_n_results:
 * @meta: a #GstPtmClassificationMeta
 *
 * Returns: the number of classes reported
 */
GST_PTM_API guint gst_ptm_classification_meta_get_n_results (const GstPtmClassificationMeta * meta);

/**
 * gst_ptm_classification_meta_get_class_id:
 * @meta: a #GstPtmClassificationMeta
 * @index: from 0 (best) to n_results - 1
 *
 * Returns: the class index, or -1 when @index is out of range
 */
GST_PTM_API gint gst_ptm_classification_meta_get_class_id (const GstPtmClassificationMeta * meta, guint index);

/**
 * gst_ptm_classification_meta_get_score:
 * @meta: a #GstPtmClassificationMeta
 * @index: from 0 (best) to n_results - 1
 *
 * Returns: the class's score, or 0 when @index is out of range
 */
GST_PTM_API gfloat gst_ptm_classification_meta_get_score (const GstPtmClassificationMeta * meta, guint index);

/**
 * gst_ptm_classification_meta_get_label:
 * @meta: a #GstPtmClassificationMeta
 * @index: from 0 (best) to n_results - 1
 *
 * Returns: (transfer none) (nullable): the class's label, or %NULL when
 *   @index is out of range
 */
GST_PTM_API const gchar *gst_ptm_classification_meta_get_label (const GstPtmClassificationMeta * meta,
    guint index);

/**
 * gst_ptm_classification_meta_get_model:
 * @meta: a #GstPtmClassificationMeta
 *
 * Returns: (transfer none): the architecture that produced the result
 */
GST_PTM_API const gchar *gst_ptm_classification_meta_get_model (const GstPtmClassificationMeta * meta);

/**
 * gst_ptm_buffer_get_n_regions:
 * @buffer: a #GstBuffer
 *
 * Regions ptminfer classified (inference-region=roi-list): each is a
 * GstVideoRegionOfInterestMeta with a "ptm-classification" parameter.
 *
 * Returns: how many regions of @buffer carry a classification
 */
GST_PTM_API guint gst_ptm_buffer_get_n_regions (GstBuffer * buffer);

/**
 * gst_ptm_buffer_get_region:
 * @buffer: a #GstBuffer
 * @index: from 0 to gst_ptm_buffer_get_n_regions() - 1
 * @x: (out) (optional): the region's left edge in pixels
 * @y: (out) (optional): its top edge
 * @width: (out) (optional): its width
 * @height: (out) (optional): its height
 * @type: (out) (optional) (transfer none): the detector's class of the region
 *
 * Returns: (transfer none) (nullable): the region's "ptm-classification"
 *   structure (class-ids, labels, scores, top-label, top-score, model,
 *   frame), or %NULL when @index is out of range
 */
GST_PTM_API const GstStructure *gst_ptm_buffer_get_region (GstBuffer * buffer, guint index, guint * x, guint * y,
    guint * width, guint * height, const gchar ** type);

/* ------------------------------------------------------------------ tensor */

#define GST_PTM_TENSOR_META_API_TYPE (gst_ptm_tensor_meta_api_get_type ())
#define GST_PTM_TENSOR_META_INFO (gst_ptm_tensor_meta_get_info ())

typedef struct _GstPtmTensorMeta GstPtmTensorMeta;

/**
 * GstPtmTensorMeta:
 * @meta: parent
 * @channels: tensor channels (3)
 * @height: tensor height
 * @width: tensor width
 * @data: @channels x @height x @width float32 values (CHW), read-only; in
 *   system memory, or in CUDA device memory when @cuda_device >= 0
 * @mean: per-channel mean that was subtracted (after scaling to 0..1)
 * @std: per-channel standard deviation that divided
 * @bgr: TRUE when the channels are in B, G, R order
 * @preprocessing: a short description ("resize 256 bilinear, crop 224x224")
 * @cuda_device: -1: @data is system memory; else the CUDA device whose
 *   memory holds @data (frames that arrived as GstCudaMemory). Set it after
 *   gst_buffer_add_ptm_tensor_meta(); copies keep it.
 */
struct _GstPtmTensorMeta {
  GstMeta meta;
  guint channels, height, width;
  const gfloat *data;
  gfloat mean[3];
  gfloat std[3];
  gboolean bgr;
  gchar *preprocessing;
  gint cuda_device;
  /*< private >*/
  GBytes *bytes;
};

GST_PTM_API GType gst_ptm_tensor_meta_api_get_type (void);
GST_PTM_API const GstMetaInfo *gst_ptm_tensor_meta_get_info (void);

/* Takes a reference to @bytes, which holds channels*height*width floats. */
GST_PTM_API GstPtmTensorMeta *
gst_buffer_add_ptm_tensor_meta (GstBuffer * buffer, GBytes * bytes, guint channels,
    guint height, guint width, const gfloat mean[3], const gfloat std[3], gboolean bgr,
    const gchar * preprocessing);

#define gst_buffer_get_ptm_tensor_meta(b) \
  ((GstPtmTensorMeta *) gst_buffer_get_meta ((b), GST_PTM_TENSOR_META_API_TYPE))

G_END_DECLS

#endif /* __GST_PTM_META_H__ */
