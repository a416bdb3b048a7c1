/**
 * SECTION:element-ptmpreprocess
 * @title: ptmpreprocess
 *
 * Turns each video frame into a model input tensor exactly as torchvision's
 * classification transform does on a PIL image (Resize of the shorter side
 * with antialiasing, CenterCrop, ToTensor, Normalize), and attaches it as
 * #GstPtmTensorMeta. The video itself passes through untouched. Defaults are
 * torchvision's ImageNet transform: resize 256, crop 224, bilinear, ImageNet
 * mean and std, RGB.
 *
 * |[
 * gst-launch-1.0 filesrc location=in.mp4 ! decodebin ! videoconvert ! ptmpreprocess ! ptminfer model=m.pth ! fakesink
 * ]|
 *
 * Frames in CUDA memory (video/x-raw(memory:CUDAMemory), e.g. from
 * cudaupload, cudaconvert or nvh264dec) are preprocessed on the GPU where
 * they lie, by a kernel using the same resampling tables, and the tensor
 * stays in device memory (#GstPtmTensorMeta.cuda_device).
 */
#include "gstptmpreprocess.h"

#include <gst/video/video.h>

#include <cmath>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <vector>

#include "gst/ptm/ptmmeta.h"
#include "gstptmcuda.h"
#include "gstptmutil.h"
#include "preprocess_core.h"

#if PTM_HAVE_CUDA
#include "ptmcuda.h"
#endif

GST_DEBUG_CATEGORY_STATIC(gst_ptm_preprocess_debug);
#define GST_CAT_DEFAULT gst_ptm_preprocess_debug

enum { PROP_0, PROP_SIZE, PROP_RESIZE, PROP_MODE, PROP_INTERPOLATION, PROP_MEAN, PROP_STD, PROP_CHANNEL_ORDER, PROP_PASS_ORDER };

#define GST_TYPE_PTM_RESIZE_MODE (gst_ptm_resize_mode_get_type())
static GType gst_ptm_resize_mode_get_type(void) {
  static const GEnumValue values[] = {
      {int(ptm::ResizeMode::ShorterSide), "Resize the shorter side to 'resize', then centre-crop (torchvision eval)",
       "shorter-side"},
      {int(ptm::ResizeMode::Stretch), "Resize to the output size, ignoring the aspect ratio", "stretch"},
      {int(ptm::ResizeMode::Letterbox), "Fit inside the output keeping the aspect ratio, pad the rest", "letterbox"},
      {0, nullptr, nullptr}};
  static GType type = 0;
  return ptm::enum_type(&type, "GstPtmResizeMode", values);
}

#define GST_TYPE_PTM_INTERPOLATION (gst_ptm_interpolation_get_type())
static GType gst_ptm_interpolation_get_type(void) {
  static const GEnumValue values[] = {{int(ptm::Filter::Bilinear), "Antialiased bilinear (PIL)", "bilinear"},
                                      {int(ptm::Filter::Bicubic), "Antialiased bicubic (PIL)", "bicubic"},
                                      {0, nullptr, nullptr}};
  static GType type = 0;
  return ptm::enum_type(&type, "GstPtmInterpolation", values);
}

#define GST_TYPE_PTM_PASS_ORDER (gst_ptm_pass_order_get_type())
static GType gst_ptm_pass_order_get_type(void) {
  static const GEnumValue values[] = {
      {int(ptm::PassOrder::Pillow13),
       "As Pillow 13 and later: vertically first when the height shrinks by more than twice as many pixels as the "
       "width",
       "pillow13"},
      {int(ptm::PassOrder::Pillow12), "As Pillow 12 and earlier: always horizontally first", "pillow12"},
      {0, nullptr, nullptr}};
  static GType type = 0;
  return ptm::enum_type(&type, "GstPtmPassOrder", values);
}

#define GST_TYPE_PTM_CHANNEL_ORDER (gst_ptm_channel_order_get_type())
static GType gst_ptm_channel_order_get_type(void) {
  static const GEnumValue values[] = {
      {0, "R, G, B planes", "rgb"}, {1, "B, G, R planes", "bgr"}, {0, nullptr, nullptr}};
  static GType type = 0;
  return ptm::enum_type(&type, "GstPtmChannelOrder", values);
}

namespace {
#if PTM_HAVE_CUDA
// The CUDA side: kernel tables, a stream, and a pool of tensor buffers
// that outlives the element while tensors of it travel downstream.
struct Gpu {
  ptm::cuda::Preprocess kernel;
  std::shared_ptr<ptm::cuda::BufferPool> pool;
  ptm::cuda::Stream stream;
  int device = -1;
  bool stale = true;  // the settings changed: new tables
};

struct PooledTensor {
  std::shared_ptr<ptm::cuda::BufferPool> pool;
  void* data;
};
#else
struct Gpu {
  bool stale = true;
};
#endif

// Host tensor buffers of one size, recycled as the CUDA side's are: a
// tensor travelling downstream (a queue may hold several) returns its
// block here when its last reference goes, so a frame in steady state
// allocates none. The pool outlives the element while tensors of it are
// out; it keeps at most kKeep free blocks (a burst held downstream is
// given back beyond that).
class HostPool : public std::enable_shared_from_this<HostPool> {
 public:
  explicit HostPool(size_t bytes) : bytes_(bytes) {}
  ~HostPool() {
    for (void* p : free_) g_free(p);
  }
  HostPool(const HostPool&) = delete;
  HostPool& operator=(const HostPool&) = delete;
  size_t bytes() const { return bytes_; }
  // A block of bytes() (nullptr where the memory cannot be had), as a
  // GBytes that hands it back when freed.
  GBytes* acquire() {
    void* p = nullptr;
    {
      std::lock_guard<std::mutex> g(lock_);
      if (!free_.empty()) {
        p = free_.back();
        free_.pop_back();
      }
    }
    if (!p) p = g_try_malloc(bytes_);
    if (!p) return nullptr;
    auto* h = new Held{shared_from_this(), p};
    return g_bytes_new_with_free_func(p, bytes_, [](gpointer d) {
      auto* held = static_cast<Held*>(d);
      held->pool->release(held->data);
      delete held;
    }, h);
  }

 private:
  struct Held {
    std::shared_ptr<HostPool> pool;
    void* data;
  };
  static constexpr size_t kKeep = 16;
  void release(void* p) {
    {
      std::lock_guard<std::mutex> g(lock_);
      if (free_.size() < kKeep) {
        free_.push_back(p);
        return;
      }
    }
    g_free(p);
  }
  size_t bytes_;
  std::mutex lock_;
  std::vector<void*> free_;
};

struct State {
  std::optional<ptm::Preprocessor> pre;
  std::shared_ptr<HostPool> host;  // the CPU path's tensor buffers
  GstVideoInfo info{};
  std::string description;
  bool cuda_memory = false;
  std::unique_ptr<Gpu> gpu;
};
}  // namespace

// Which settings the application gave (the rest follow the model
// downstream).
struct Explicit {
  bool size = false, resize = false, interpolation = false, mean = false, std = false, mode = false;
  bool all() const { return size && resize && interpolation && mean && std && mode; }
};

struct PreprocessPrivate {
  std::mutex lock;
  ptm::PreprocessConfig settings;
  // Properties the application set; the others follow a downstream
  // ptminfer's model when one answers (else torchvision's ImageNet defaults).
  Explicit set;  // under `lock`
  bool dirty = true;  // settings changed since the core was built
  std::optional<State> state;
  ptm::CudaLink cuda;
};

struct _GstPtmPreprocess {
  GstBaseTransform parent;
  PreprocessPrivate* priv;
};

G_DEFINE_TYPE(GstPtmPreprocess, gst_ptm_preprocess, GST_TYPE_BASE_TRANSFORM)
GST_ELEMENT_REGISTER_DEFINE(ptmpreprocess, "ptmpreprocess", GST_RANK_NONE, GST_TYPE_PTM_PREPROCESS)

static std::string triple_str(const std::array<float, 3>& v) {
  std::ostringstream s;
  s << v[0] << "," << v[1] << "," << v[2];
  return s.str();
}

static bool parse_triple(const char* text, std::array<float, 3>* out) {
  if (!text) return false;
  std::array<float, 3> v{};
  gchar** parts = g_strsplit(text, ",", -1);
  bool ok = g_strv_length(parts) == 3;
  for (int i = 0; ok && i < 3; ++i) {
    gchar* end = nullptr;
    v[size_t(i)] = float(g_ascii_strtod(g_strstrip(parts[i]), &end));
    ok = end && *end == '\0' && end != parts[i];
  }
  g_strfreev(parts);
  if (ok) *out = v;
  return ok;
}

static void gst_ptm_preprocess_set_property(GObject* object, guint id, const GValue* value, GParamSpec* pspec) {
  auto* self = GST_PTM_PREPROCESS(object);
  std::lock_guard<std::mutex> g(self->priv->lock);
  ptm::PreprocessConfig c = self->priv->settings;
  switch (id) {
    case PROP_SIZE: c.crop_width = c.crop_height = g_value_get_int(value); break;
    case PROP_RESIZE: c.resize_size = g_value_get_int(value); break;
    case PROP_MODE: c.mode = ptm::ResizeMode(g_value_get_enum(value)); break;
    case PROP_INTERPOLATION: c.filter = ptm::Filter(g_value_get_enum(value)); break;
    case PROP_MEAN:
    case PROP_STD: {
      std::array<float, 3>& dst = id == PROP_MEAN ? c.mean : c.std;
      if (!parse_triple(g_value_get_string(value), &dst)) {
        GST_WARNING_OBJECT(self, "'%s' wants three comma-separated numbers such as 0.485,0.456,0.406; ignored",
                           pspec->name);
        return;
      }
      break;
    }
    case PROP_CHANNEL_ORDER: c.bgr = g_value_get_enum(value) == 1; break;
    case PROP_PASS_ORDER: c.pass_order = ptm::PassOrder(g_value_get_enum(value)); break;
    default: G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec); return;
  }
  const std::string err = c.validate();
  if (!err.empty()) {
    GST_WARNING_OBJECT(self, "'%s' ignored: %s", pspec->name, err.c_str());
    return;
  }
  self->priv->settings = c;
  self->priv->dirty = true;
  if (id == PROP_SIZE) self->priv->set.size = true;
  if (id == PROP_RESIZE) self->priv->set.resize = true;
  if (id == PROP_INTERPOLATION) self->priv->set.interpolation = true;
  if (id == PROP_MEAN) self->priv->set.mean = true;
  if (id == PROP_MODE) self->priv->set.mode = true;
  if (id == PROP_STD) self->priv->set.std = true;
}

// Asks downstream (a ptminfer) for its model's input transform and adopts
// what the application did not set. An output size set without a resize
// size keeps the model's proportion between them (torchvision's 256/224
// when nothing answers): size=64 resizes to 73, then crops 64.
static void adopt_model_input(GstPtmPreprocess* self, const Explicit& set, ptm::PreprocessConfig& c) {
  if (set.all()) return;
  gint size = 224, resize = 256;
  GstQuery* q = gst_query_new_custom(GST_QUERY_CUSTOM, gst_structure_new_empty("ptm-model-input"));
  if (gst_pad_peer_query(GST_BASE_TRANSFORM_SRC_PAD(self), q)) {
    const GstStructure* s = gst_query_get_structure(q);
    gint qs = 0, qr = 0;
    gboolean bicubic = FALSE, stretch = FALSE;
    if (!set.mode && gst_structure_get_boolean(s, "stretch", &stretch) && stretch) c.mode = ptm::ResizeMode::Stretch;
    if (gst_structure_get_int(s, "size", &qs) && gst_structure_get_int(s, "resize", &qr) && qs > 0 && qr >= qs) {
      size = qs;
      resize = qr;
    }
    if (!set.interpolation && gst_structure_get_boolean(s, "bicubic", &bicubic))
      c.filter = bicubic ? ptm::Filter::Bicubic : ptm::Filter::Bilinear;
    // Normalisation: models trained with other statistics (hub configs, .pt2 metadata).
    for (const char* field : {"mean", "std"}) {
      const GValue* arr = gst_structure_get_value(s, field);
      if ((field[0] == 'm' ? set.mean : set.std) || !arr || !GST_VALUE_HOLDS_ARRAY(arr) ||
          gst_value_array_get_size(arr) != 3)
        continue;
      std::array<float, 3> v{};
      for (guint i = 0; i < 3; ++i) v[i] = float(g_value_get_double(gst_value_array_get_value(arr, i)));
      ptm::PreprocessConfig t = c;
      (field[0] == 'm' ? t.mean : t.std) = v;
      if (t.validate().empty()) c = t;
    }
    GST_INFO_OBJECT(self, "downstream model %s takes resize %d, size %d, %s", gst_structure_get_string(s, "model"),
                    resize, size, c.filter == ptm::Filter::Bicubic ? "bicubic" : "bilinear");
  }
  gst_query_unref(q);
  if (!set.size) c.crop_width = c.crop_height = size;
  if (!set.resize)
    c.resize_size = set.size ? std::max(c.crop_width, int(std::lround(double(c.crop_width) * resize / size))) : resize;
}

static void gst_ptm_preprocess_get_property(GObject* object, guint id, GValue* value, GParamSpec* pspec) {
  auto* self = GST_PTM_PREPROCESS(object);
  std::lock_guard<std::mutex> g(self->priv->lock);
  const ptm::PreprocessConfig& c = self->priv->settings;
  switch (id) {
    case PROP_SIZE: g_value_set_int(value, c.crop_width); break;
    case PROP_RESIZE: g_value_set_int(value, c.resize_size); break;
    case PROP_MODE: g_value_set_enum(value, int(c.mode)); break;
    case PROP_INTERPOLATION: g_value_set_enum(value, int(c.filter)); break;
    case PROP_MEAN: g_value_set_string(value, triple_str(c.mean).c_str()); break;
    case PROP_STD: g_value_set_string(value, triple_str(c.std).c_str()); break;
    case PROP_CHANNEL_ORDER: g_value_set_enum(value, c.bgr ? 1 : 0); break;
    case PROP_PASS_ORDER: g_value_set_enum(value, int(c.pass_order)); break;
    default: G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec); break;
  }
}

static gboolean gst_ptm_preprocess_start(GstBaseTransform* trans) {
  auto* self = GST_PTM_PREPROCESS(trans);
  self->priv->state.emplace();
  std::lock_guard<std::mutex> g(self->priv->lock);
  self->priv->dirty = true;
  return TRUE;
}

static gboolean gst_ptm_preprocess_stop(GstBaseTransform* trans) {
  GST_PTM_PREPROCESS(trans)->priv->state.reset();
  return TRUE;
}

static gboolean gst_ptm_preprocess_set_caps(GstBaseTransform* trans, GstCaps* incaps, GstCaps*) {
  auto* self = GST_PTM_PREPROCESS(trans);
  if (!self->priv->state || !gst_video_info_from_caps(&self->priv->state->info, incaps)) {
    GST_ELEMENT_ERROR(self, STREAM, FORMAT, ("Unsupported caps"), ("%" GST_PTR_FORMAT, incaps));
    return FALSE;
  }
  return ptm::accept_memory_caps(GST_ELEMENT(self), incaps, &self->priv->state->cuda_memory);
}

// A frame in CUDA memory: the kernel reads it in place and writes the
// tensor into a pooled device buffer that the tensor meta owns.
static GstFlowReturn preprocess_on_device(GstPtmPreprocess* self, State& st, GstBuffer* buf) {
#if PTM_HAVE_CUDA
  GstVideoFrame frame;
  ptm::FrameView view;
  int device = -1;
  std::string why;
  if (!self->priv->cuda.map(buf, &st.info, false, &frame, &view, &device, &why)) {
    GST_ELEMENT_ERROR(self, STREAM, FAILED, ("Cannot read the frame in CUDA memory: %s", why.c_str()), (nullptr));
    return GST_FLOW_ERROR;
  }
  const ptm::PreprocessConfig& c = st.pre->config();
  const size_t bytes = size_t(3) * size_t(c.crop_width) * size_t(c.crop_height) * sizeof(float);
  void* out = nullptr;
  const bool ok = ptm::guarded(GST_ELEMENT(self), GST_STREAM_ERROR, GST_STREAM_ERROR_FAILED,
                               "Preprocessing on the GPU failed", [&] {
    if (!st.gpu) st.gpu = std::make_unique<Gpu>();
    Gpu& g = *st.gpu;
    if (g.device != device) {
      g.device = device;
      g.stale = true;
    }
    const ptm::ResamplePlan* p = g.kernel.plan();
    if (g.stale || !p || p->format != view.format || p->width != view.width || p->height != view.height) {
      g.kernel.set_plan(st.pre->plan(view));
      g.stale = false;
    }
    if (!g.pool || g.pool->bytes() != bytes || g.pool->device() != device)
      g.pool = std::make_shared<ptm::cuda::BufferPool>(device, bytes);
    out = g.pool->acquire();
    try {
      g.kernel.run(view, out, ptm::cuda::OutputType::Float32, false, g.stream.on(device));
      // The frame must not be released upstream while the kernel reads it:
      // wait for this stream (not the device) before the buffer moves on.
      g.stream.synchronize();
    } catch (...) {
      g.pool->release(out);
      out = nullptr;
      throw;
    }
  });
  gst_video_frame_unmap(&frame);
  if (!ok) return GST_FLOW_ERROR;
  auto* holder = new PooledTensor{st.gpu->pool, out};
  GBytes* data = g_bytes_new_with_free_func(out, bytes, [](gpointer p) {
    auto* h = static_cast<PooledTensor*>(p);
    h->pool->release(h->data);
    delete h;
  }, holder);
  GstPtmTensorMeta* m = gst_buffer_add_ptm_tensor_meta(buf, data, 3, guint(c.crop_height), guint(c.crop_width),
                                                       c.mean.data(), c.std.data(), c.bgr, st.description.c_str());
  if (m) m->cuda_device = device;
  g_bytes_unref(data);
  return GST_FLOW_OK;
#else
  (void)st;
  (void)buf;
  GST_ELEMENT_ERROR(self, CORE, NEGOTIATION, ("%s", ptm::cuda_unusable_reason().c_str()), (nullptr));
  return GST_FLOW_ERROR;
#endif
}

static GstFlowReturn gst_ptm_preprocess_transform_ip(GstBaseTransform* trans, GstBuffer* buf) {
  auto* self = GST_PTM_PREPROCESS(trans);
  if (!self->priv->state) return GST_FLOW_NOT_NEGOTIATED;
  State& st = *self->priv->state;
  bool rebuild;
  ptm::PreprocessConfig wanted;
  Explicit set;
  {
    std::lock_guard<std::mutex> g(self->priv->lock);
    rebuild = self->priv->dirty || !st.pre;
    wanted = self->priv->settings;
    set = self->priv->set;
    self->priv->dirty = false;
  }
  if (rebuild) {
    {
      ptm::PreprocessConfig& c = wanted;
      adopt_model_input(self, set, c);
      st.pre.emplace(c);
      std::ostringstream d;
      d << (c.mode == ptm::ResizeMode::ShorterSide ? "resize " + std::to_string(c.resize_size) + " + crop"
            : c.mode == ptm::ResizeMode::Stretch   ? std::string("stretch")
                                                   : std::string("letterbox"))
        << " " << c.crop_width << "x" << c.crop_height << (c.filter == ptm::Filter::Bicubic ? " bicubic" : " bilinear");
      st.description = d.str();
      if (st.gpu) st.gpu->stale = true;
    }
  }
  const ptm::PreprocessConfig& c = st.pre->config();
  if (st.cuda_memory) return preprocess_on_device(self, st, buf);
  GstVideoFrame frame;
  if (!gst_video_frame_map(&frame, &st.info, buf, GST_MAP_READ)) {
    GST_ELEMENT_ERROR(self, STREAM, FAILED, ("Could not map the video frame"), (nullptr));
    return GST_FLOW_ERROR;
  }
  const gsize n = gsize(3) * gsize(c.crop_width) * gsize(c.crop_height);
  if (!st.host || st.host->bytes() != n * sizeof(float)) st.host = std::make_shared<HostPool>(n * sizeof(float));
  GBytes* bytes = st.host->acquire();
  if (!bytes) {
    gst_video_frame_unmap(&frame);
    GST_ELEMENT_ERROR(self, RESOURCE, NO_SPACE_LEFT,
                      ("Out of memory for a %dx%d input tensor (%zu bytes)", c.crop_width, c.crop_height,
                       size_t(n * sizeof(float))),
                      (nullptr));
    return GST_FLOW_ERROR;
  }
  float* data = static_cast<float*>(const_cast<void*>(g_bytes_get_data(bytes, nullptr)));
  const bool ok = ptm::guarded(GST_ELEMENT(self), GST_STREAM_ERROR, GST_STREAM_ERROR_FAILED, "Preprocessing failed",
                               [&] { st.pre->run(ptm::frame_view(frame), data); });
  gst_video_frame_unmap(&frame);
  if (!ok) {
    g_bytes_unref(bytes);
    return GST_FLOW_ERROR;
  }
  gst_buffer_add_ptm_tensor_meta(buf, bytes, 3, guint(c.crop_height), guint(c.crop_width), c.mean.data(),
                                 c.std.data(), c.bgr, st.description.c_str());
  g_bytes_unref(bytes);
  return GST_FLOW_OK;
}

static gboolean gst_ptm_preprocess_query(GstBaseTransform* trans, GstPadDirection dir, GstQuery* query) {
  auto* self = GST_PTM_PREPROCESS(trans);
  if (self->priv->cuda.handle_query(GST_ELEMENT(self), query)) return TRUE;
  return GST_BASE_TRANSFORM_CLASS(gst_ptm_preprocess_parent_class)->query(trans, dir, query);
}

static void gst_ptm_preprocess_set_context(GstElement* element, GstContext* context) {
  GST_PTM_PREPROCESS(element)->priv->cuda.set_context(element, context);
  GST_ELEMENT_CLASS(gst_ptm_preprocess_parent_class)->set_context(element, context);
}

static void gst_ptm_preprocess_finalize(GObject* object) {
  delete GST_PTM_PREPROCESS(object)->priv;
  G_OBJECT_CLASS(gst_ptm_preprocess_parent_class)->finalize(object);
}

static void gst_ptm_preprocess_init(GstPtmPreprocess* self) {
  self->priv = new PreprocessPrivate();
  gst_base_transform_set_in_place(GST_BASE_TRANSFORM(self), TRUE);
}

static void gst_ptm_preprocess_class_init(GstPtmPreprocessClass* klass) {
  GObjectClass* gobject_class = G_OBJECT_CLASS(klass);
  GstElementClass* element_class = GST_ELEMENT_CLASS(klass);
  GstBaseTransformClass* bt = GST_BASE_TRANSFORM_CLASS(klass);
  gobject_class->set_property = gst_ptm_preprocess_set_property;
  gobject_class->get_property = gst_ptm_preprocess_get_property;
  gobject_class->finalize = gst_ptm_preprocess_finalize;
  const auto live = ptm::kParamLive;
  g_object_class_install_property(
      gobject_class, PROP_SIZE,
      g_param_spec_int("size", "Size", "Width and height of the tensor (torchvision's CenterCrop size)", 1, 8192,
                       224, live));
  g_object_class_install_property(
      gobject_class, PROP_RESIZE,
      g_param_spec_int("resize", "Resize", "Shorter side after resizing, before the crop (torchvision's Resize)", 1,
                       16384, 256, live));
  g_object_class_install_property(
      gobject_class, PROP_MODE,
      g_param_spec_enum("resize-mode", "Resize mode", "How the frame is fitted to the tensor",
                        GST_TYPE_PTM_RESIZE_MODE, int(ptm::ResizeMode::ShorterSide), live));
  g_object_class_install_property(
      gobject_class, PROP_INTERPOLATION,
      g_param_spec_enum("interpolation", "Interpolation", "Resampling filter", GST_TYPE_PTM_INTERPOLATION,
                        int(ptm::Filter::Bilinear), live));
  g_object_class_install_property(
      gobject_class, PROP_MEAN,
      g_param_spec_string("mean", "Mean", "Per-channel mean subtracted after scaling to 0..1, in tensor channel order",
                          "0.485,0.456,0.406", live));
  g_object_class_install_property(
      gobject_class, PROP_STD,
      g_param_spec_string("std", "Std", "Per-channel standard deviation, in tensor channel order",
                          "0.229,0.224,0.225", live));
  g_object_class_install_property(
      gobject_class, PROP_CHANNEL_ORDER,
      g_param_spec_enum("channel-order", "Channel order", "Channel order of the tensor", GST_TYPE_PTM_CHANNEL_ORDER,
                        0, live));
  g_object_class_install_property(
      gobject_class, PROP_PASS_ORDER,
      g_param_spec_enum("pass-order", "Pass order",
                        "Order of the resize's horizontal and vertical passes, as the Pillow version the model was "
                        "trained with does it (a frame shrunk much more in height than in width can differ by one "
                        "level in some pixels)",
                        GST_TYPE_PTM_PASS_ORDER, int(ptm::PassOrder::Pillow13), live));
  gst_element_class_set_static_metadata(element_class, "PyTorch preprocessing", "Filter/Converter/Video",
                                        "Attaches the model input tensor (torchvision transform) to each frame",
                                        "ptm developers");
  ptm::add_video_pad_templates_with_cuda(element_class);
  element_class->set_context = GST_DEBUG_FUNCPTR(gst_ptm_preprocess_set_context);
  bt->query = GST_DEBUG_FUNCPTR(gst_ptm_preprocess_query);
  bt->start = GST_DEBUG_FUNCPTR(gst_ptm_preprocess_start);
  bt->stop = GST_DEBUG_FUNCPTR(gst_ptm_preprocess_stop);
  bt->set_caps = GST_DEBUG_FUNCPTR(gst_ptm_preprocess_set_caps);
  bt->transform_ip = GST_DEBUG_FUNCPTR(gst_ptm_preprocess_transform_ip);
  bt->passthrough_on_same_caps = FALSE;
  gst_type_mark_as_plugin_api(GST_TYPE_PTM_RESIZE_MODE, GstPluginAPIFlags(0));
  gst_type_mark_as_plugin_api(GST_TYPE_PTM_PASS_ORDER, GstPluginAPIFlags(0));
  gst_type_mark_as_plugin_api(GST_TYPE_PTM_INTERPOLATION, GstPluginAPIFlags(0));
  gst_type_mark_as_plugin_api(GST_TYPE_PTM_CHANNEL_ORDER, GstPluginAPIFlags(0));
  GST_DEBUG_CATEGORY_INIT(gst_ptm_preprocess_debug, "ptmpreprocess", 0, "PyTorch preprocessing");
}
