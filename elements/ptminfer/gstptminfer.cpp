/**
 * SECTION:element-ptminfer
 * @title: ptminfer
 *
 * Classifies video frames with a PyTorch image classifier and attaches the
 * top-k classes to each buffer as #GstPtmClassificationMeta. The model is a
 * `.pth` state dict (zip or legacy), safetensors or a TorchScript file; for
 * state dicts the torchvision architecture and class count are detected from
 * the weights. Frames carrying a #GstPtmTensorMeta from an upstream
 * ptmpreprocess are used as they are; other frames are preprocessed here
 * with the model's torchvision eval transform.
 *
 * Results also go out as an element message "ptm-classification" per frame
 * (fields: frame, pts, model, reused, inference-ns, class-ids, labels,
 * scores, top-label, top-score) and, with #GstPtmInfer:results-file, as JSON
 * lines.
 *
 * |[
 * gst-launch-1.0 -m videotestsrc num-buffers=10 ! videoconvert ! ptminfer model=resnet18.pth ! fakesink
 * ]|
 */
#include "gstptminfer.h"

#include <gst/video/video.h>


#include <algorithm>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include "gst/ptm/ptmmeta.h"
#include "gstptmcuda.h"
#include "gstptmutil.h"
#include "infer_core.h"
#include "model_slot.h"
#include "outputs.h"
#include "regions.h"

GST_DEBUG_CATEGORY_STATIC(gst_ptm_infer_debug);
#define GST_CAT_DEFAULT gst_ptm_infer_debug

enum {
  PROP_0,
  PROP_MODEL,
  PROP_ARCHITECTURE,
  PROP_CHECKPOINT_KEY,
  PROP_LABELS,
  PROP_NUM_CLASSES,
  PROP_DEVICE,
  PROP_NUM_THREADS,
  PROP_INTERVAL,
  PROP_TOP_K,
  PROP_THRESHOLD,
  PROP_OUTPUT,
  PROP_SMOOTHING,
  PROP_HYSTERESIS,
  PROP_RESULTS_FILE,
  PROP_POST_MESSAGES,
  PROP_BATCH_SIZE,
  PROP_RELOAD_ON_CHANGE,
  PROP_PRECISION,
  PROP_CHANNELS_LAST,
  PROP_CUDA_GRAPHS,
  PROP_INPUT_SIZE,
  PROP_SHARE_MODEL,
  PROP_CALIBRATION,
  PROP_CALIBRATION_IMAGES,
  PROP_STATS,
  PROP_ANALYTICS_META,
  PROP_INFERENCE_REGION,
  PROP_OBJECT_CLASS,
  PROP_MIN_REGION_SIZE,
  PROP_RECLASSIFY_INTERVAL,
  PROP_PUBLISH,
  PROP_PUBLISH_TOPIC,
  PROP_PUBLISH_QOS,
  PROP_PUBLISH_PER,
  PROP_PUBLISH_QUEUE_SIZE,
  PROP_PUBLISH_CLIENT_ID,
  PROP_PUBLISH_TLS_CA,
  PROP_PUBLISH_TLS_CERT,
  PROP_PUBLISH_TLS_KEY,
};

typedef enum { PTM_DEVICE_AUTO, PTM_DEVICE_CPU, PTM_DEVICE_CUDA } GstPtmDevice;

#define GST_TYPE_PTM_DEVICE (gst_ptm_device_get_type())
static GType gst_ptm_device_get_type(void) {
  static const GEnumValue values[] = {
      {PTM_DEVICE_AUTO, "CUDA when available, else CPU", "auto"},
      {PTM_DEVICE_CPU, "CPU", "cpu"},
      {PTM_DEVICE_CUDA, "CUDA GPU 0 (fails at start when CUDA cannot be used)", "cuda"},
      {0, nullptr, nullptr}};
  static GType type = 0;
  return ptm::enum_type(&type, "GstPtmDevice", values);
}

typedef enum { PTM_REGION_FULL_FRAME, PTM_REGION_ROI_LIST } GstPtmInferenceRegion;

#define GST_TYPE_PTM_INFERENCE_REGION (gst_ptm_inference_region_get_type())
static GType gst_ptm_inference_region_get_type(void) {
  static const GEnumValue values[] = {
      {PTM_REGION_FULL_FRAME, "Classify the whole frame", "full-frame"},
      {PTM_REGION_ROI_LIST,
       "Classify each region a detector attached (GstVideoRegionOfInterestMeta; GstAnalyticsODMtd with "
       "GStreamer >= 1.24)",
       "roi-list"},
      {0, nullptr, nullptr}};
  static GType type = 0;
  return ptm::enum_type(&type, "GstPtmInferenceRegion", values);
}

typedef enum { PTM_PUBLISH_PER_FRAME, PTM_PUBLISH_PER_REGION } GstPtmPublishPer;

#define GST_TYPE_PTM_PUBLISH_PER (gst_ptm_publish_per_get_type())
static GType gst_ptm_publish_per_get_type(void) {
  static const GEnumValue values[] = {
      {PTM_PUBLISH_PER_FRAME, "One document per frame (its regions listed in it)", "frame"},
      {PTM_PUBLISH_PER_REGION, "One document per classified region (inference-region=roi-list)", "region"},
      {0, nullptr, nullptr}};
  static GType type = 0;
  return ptm::enum_type(&type, "GstPtmPublishPer", values);
}

#define GST_TYPE_PTM_PRECISION (gst_ptm_precision_get_type())
static GType gst_ptm_precision_get_type(void) {
  static const GEnumValue values[] = {
      {int(ptm::Precision::Float32), "32-bit float", "fp32"},
      {int(ptm::Precision::Float16), "16-bit float (CUDA)", "fp16"},
      {int(ptm::Precision::BFloat16), "bfloat16 (CUDA; CPUs with AVX-512 BF16 or AMX)", "bf16"},
      {int(ptm::Precision::Int8), "8-bit integers (CPU, built-in architectures; calibrated on frames)", "int8"},
      {0, nullptr, nullptr}};
  static GType type = 0;
  return ptm::enum_type(&type, "GstPtmPrecision", values);
}

#define GST_TYPE_PTM_SCORE_OUTPUT (gst_ptm_score_output_get_type())
static GType gst_ptm_score_output_get_type(void) {
  static const GEnumValue values[] = {
      {int(ptm::ScoreOutput::Softmax), "Softmax probabilities (single-label models)", "softmax"},
      {int(ptm::ScoreOutput::Sigmoid), "Per-class sigmoid probabilities (multi-label models)", "sigmoid"},
      {int(ptm::ScoreOutput::Logits), "Raw logits", "logits"},
      {0, nullptr, nullptr}};
  static GType type = 0;
  return ptm::enum_type(&type, "GstPtmScoreOutput", values);
}

namespace {

// The properties' values; their defaults are the paramspecs' defaults.
struct Settings {
  std::string model, architecture, checkpoint_key, labels, results_file;
  int num_classes = 0;
  GstPtmDevice device = PTM_DEVICE_AUTO;
  int num_threads = 0;
  guint interval = 1;
  ptm::ScoringSettings scoring;  // top-k, threshold, output, smoothing, hysteresis
  bool post_messages = true;
  bool analytics = ptm::have_analytics();
  GstPtmInferenceRegion region = PTM_REGION_FULL_FRAME;
  std::string object_class;  // comma-separated region types; empty: all
  guint min_region_size = 16;
  guint reclassify_interval = 1;  // tracked objects: classified again every Nth frame
  guint batch_size = 1;
  bool reload_on_change = false;
  ptm::Precision precision = ptm::Precision::Float32;
  bool channels_last = true;
  bool cuda_graphs = false;
  int input_size = 0;
  bool share_model = true;
  std::string calibration;  // int8: a folder of images; empty: the first frames
  guint calibration_images = 32;
  // publish: where JSON documents go (publisher.h), and how.
  std::string publish, publish_topic = "ptm/{element}", publish_client_id;
  std::string publish_tls_ca, publish_tls_cert, publish_tls_key;
  guint publish_qos = 1;
  GstPtmPublishPer publish_per = PTM_PUBLISH_PER_FRAME;
  guint publish_queue_size = 1000;
};

// Frames seen, by where they were read from (the "stats" property).
struct Counters {
  guint64 frames = 0, cuda_in_place = 0, cuda_via_host = 0, system_memory = 0;
};

struct State {
  std::shared_ptr<ptm::InferCore> core;
  std::deque<GstBuffer*> pending;  // queued for the current batch, owned
  std::deque<GstBuffer*> ready;    // classified, waiting to be pushed, owned
  // The current batch's frames kept mapped until it runs, where a shared
  // model's thread preprocesses them (queue_buffer).
  std::vector<GstVideoFrame> mapped;
  void unmap() {
    for (GstVideoFrame& f : mapped) gst_video_frame_unmap(&f);
    mapped.clear();
  }
  ~State() {
    if (core) core->drop_queued();
    unmap();
    for (GstBuffer* b : pending) gst_buffer_unref(b);
    for (GstBuffer* b : ready) gst_buffer_unref(b);
  }
  State() = default;
  State(State&& o) noexcept = default;
  std::vector<std::unique_ptr<ptm::ResultOutput>> outputs;  // meta, analytics, messages, JSON lines
  GstVideoInfo info{};
  bool have_info = false;
  bool cuda_memory = false;  // the caps say memory:CUDAMemory
  bool warned_tensor = false;
  bool warned_host_copy = false;
  std::string int8_said;  // the int8 status last reported
  size_t batch = 1;
  bool regions = false;     // inference-region=roi-list
  guint64 region_frames = 0;
  // Tracked objects' last results (reclassify-interval): track id -> result
  // and the frame it was classified on.
  std::unordered_map<gint64, std::pair<ptm::FrameResult, guint64>> tracks;
  std::string stream;  // the current stream's stream-id (publish-topic's {stream})
};

// What the "model-loaded" message tells of a model, read from it before
// the streaming thread can take it (and change it: its input size).
struct Loaded {
  ptm::ModelInfo info;
  bool shared = false;  // an already loaded shared model was taken
};

Loaded loaded_of(const ptm::InferCore& core) { return Loaded{core.info(), core.took_loaded_model()}; }
}  // namespace

struct Private {
  explicit Private(GstPtmInfer* self);
  std::mutex lock;  // guards settings
  Settings settings;
  std::mutex state_lock;       // guards state's presence and its model's replacement
  std::optional<State> state;  // built in start(), dropped in stop()

  // Live reload: models requested while running load in the background
  // (model_slot.h); the streaming thread takes one between two buffers.
  ptm::ModelSlot<ptm::InferCore, Settings, Loaded> slot;
  ptm::FileWatch watch;  // reload-on-change: the model file's last version read

  ptm::CudaLink cuda;  // the CUDA context shared with neighbours
  std::mutex stats_lock;
  Counters counters;
  // The publisher of the last start (publish); kept after stop so that
  // "stats" still tells what became of every document.
  std::shared_ptr<ptm::Publisher> publisher;

  // Live pipelines. QoS with batch-size > 1 (GstBaseTransform drops late
  // frames itself only when it queues them, at batch-size 1): the earliest
  // running time downstream still wants, from its last QoS event.
  std::mutex qos_lock;
  GstClockTime earliest = GST_CLOCK_TIME_NONE;
  gdouble proportion = 1.0;
  guint64 qos_processed = 0, qos_dropped = 0;
  // The latency this element adds (the latency query): the last
  // kProcessingWindow model runs, and what was last reported for them.
  static constexpr size_t kProcessingWindow = 16;
  std::mutex latency_lock;
  std::deque<GstClockTime> processing;
  GstClockTime reported_processing = 0;
};

struct _GstPtmInfer {
  GstBaseTransform parent;
  Private* priv;
};

G_DEFINE_TYPE(GstPtmInfer, gst_ptm_infer, GST_TYPE_BASE_TRANSFORM)
GST_ELEMENT_REGISTER_DEFINE(ptminfer, "ptminfer", GST_RANK_NONE, GST_TYPE_PTM_INFER)

// How long stop() lets queued results reach the publish destination.
static const int kPublishDrainMs = 5000;

static Settings settings_copy(GstPtmInfer* self) {
  std::lock_guard<std::mutex> g(self->priv->lock);
  return self->priv->settings;
}

static bool playing_or_paused(GstPtmInfer* self) {
  GstState s = GST_STATE(self);
  return s == GST_STATE_PLAYING || s == GST_STATE_PAUSED;
}

// device=auto: CUDA when LibTorch has it and a GPU is there.
static std::string device_name(GstPtmDevice d) {
  if (d == PTM_DEVICE_CPU) return "cpu";
  if (d == PTM_DEVICE_CUDA) return "cuda";
  return ptm::device_unavailable_reason("cuda").empty() ? "cuda" : "cpu";
}

static ptm::InferSettings model_settings(const Settings& s) {
  ptm::InferSettings is;
  static_cast<ptm::ScoringSettings&>(is) = s.scoring;
  is.interval = int(s.interval);
  is.model.device = device_name(s.device);
  is.model.precision = s.precision;
  is.model.channels_last = s.channels_last && is.model.device != "cpu";
  is.model.cuda_graphs = s.cuda_graphs;
  is.model.model = s.model;
  is.model.architecture = s.architecture;
  is.model.wrapper_key = s.checkpoint_key;
  is.model.labels = s.labels;
  is.model.num_classes = s.num_classes;
  is.model.threads = s.num_threads;
  is.model.input_size = s.input_size;
  is.share = s.share_model;
  is.model.calibration = s.calibration;
  is.model.calibration_images = int(s.calibration_images);
  return is;
}

static void post_reload(GstPtmInfer* self, const std::string& model, bool ok, const std::string& reason) {
  gst_element_post_message(
      GST_ELEMENT(self),
      gst_message_new_element(GST_OBJECT(self),
                              gst_structure_new("model-reload", "model", G_TYPE_STRING, model.c_str(), "success",
                                                G_TYPE_BOOLEAN, ok, "reason", G_TYPE_STRING, reason.c_str(),
                                                nullptr)));
}

// What was loaded, with the load report (what was unwrapped, stripped, kept
// inert or left out of the checkpoint): a "model-loaded" element message at
// start and after each reload, and the debug log.
static void post_loaded(GstPtmInfer* self, const std::string& model, const Loaded& loaded) {
  const ptm::ModelInfo& m = loaded.info;
  for (const auto& w : m.warnings)
    GST_ELEMENT_WARNING(self, RESOURCE, SETTINGS, ("%s", w.c_str()), ("model '%s'", model.c_str()));
  std::string report;
  for (const auto& n : m.notes) {
    report += (report.empty() ? "" : "\n") + n;
    GST_INFO_OBJECT(self, "%s", n.c_str());
  }
  gst_element_post_message(
      GST_ELEMENT(self),
      gst_message_new_element(
          GST_OBJECT(self),
          gst_structure_new("model-loaded", "model", G_TYPE_STRING, model.c_str(), "architecture", G_TYPE_STRING,
                            m.architecture.c_str(), "num-classes", G_TYPE_INT64, gint64(m.num_classes), "format",
                            G_TYPE_STRING, m.format.c_str(), "input-size", G_TYPE_INT, m.crop_size, "report",
                            G_TYPE_STRING, report.c_str(), "shared", G_TYPE_BOOLEAN, gboolean(loaded.shared),
                            nullptr)));
}

// The loader: reads the model file (a version reload-on-change then counts
// as seen) and reports the outcome; on failure the old model keeps serving.
Private::Private(GstPtmInfer* self)
    : slot(
          [self](const Settings& s) {
            self->priv->watch.reading(s.model);
            // Runs at its own input size, or at input-size when set (the
            // constructor refuses a model that cannot); upstream tensors
            // are followed again after the swap.
            return std::make_unique<ptm::InferCore>(model_settings(s));
          },
          loaded_of,
          [self](const Settings& s, const Loaded* loaded, const std::string& error) {
            if (loaded) {
              GST_INFO_OBJECT(self, "loaded %s; it takes over at the next frame", s.model.c_str());
              post_loaded(self, s.model, *loaded);
            } else {
              GST_ELEMENT_WARNING(self, RESOURCE, OPEN_READ,
                                  ("Could not reload model '%s'; the previous model keeps running", s.model.c_str()),
                                  ("%s", error.c_str()));
            }
            post_reload(self, s.model, error.empty(), error);
          }) {}

// Asks for a model with these settings while running; returns at once.
static void request_reload(GstPtmInfer* self, const Settings& s) {
  Private& p = *self->priv;
  std::string error;
  {
    std::lock_guard<std::mutex> g(p.state_lock);
    if (!p.state) return;  // not running: start() loads it
    error = p.slot.request(s);
  }
  if (!error.empty()) {
    GST_ELEMENT_WARNING(self, RESOURCE, OPEN_READ,
                        ("Could not reload model '%s'; the previous model keeps running", s.model.c_str()),
                        ("%s", error.c_str()));
    post_reload(self, s.model, false, error);
  }
}

static bool classify_pending(GstPtmInfer* self, State& st);

// Streaming thread, before each buffer: adopt a freshly loaded model, and
// with reload-on-change look for a replaced file (twice a second at most).
static void maybe_swap(GstPtmInfer* self, State& st, const Settings& s) {
  Private& p = *self->priv;
  if (s.reload_on_change && p.watch.changed(s.model, g_get_monotonic_time())) {
    GST_INFO_OBJECT(self, "%s changed on disk: reloading", s.model.c_str());
    request_reload(self, s);
  }
  std::shared_ptr<ptm::InferCore> next = p.slot.take();
  if (!next) return;
  classify_pending(self, st);  // a batch in progress finishes with the old model
  next->set_next_frame(st.core->next_frame());
  std::lock_guard<std::mutex> g(p.state_lock);
  st.core = std::move(next);
  st.warned_tensor = false;
  st.tracks.clear();  // the new model classifies tracked objects afresh
}

static void gst_ptm_infer_set_property(GObject* object, guint id, const GValue* value, GParamSpec* pspec) {
  auto* self = GST_PTM_INFER(object);
  // Model-defining properties take effect at the next start.
  if (playing_or_paused(self) && (id == PROP_MODEL || id == PROP_LABELS)) {
    // A new model (or labels) while running: load it in the background.
    const std::string v = g_value_get_string(value) ? g_value_get_string(value) : "";
    if (id == PROP_MODEL) self->priv->watch.watch(v);  // watched from its request on, so not loaded twice
    {
      std::lock_guard<std::mutex> g(self->priv->lock);
      (id == PROP_MODEL ? self->priv->settings.model : self->priv->settings.labels) = v;
    }
    request_reload(self, settings_copy(self));
    return;
  }
  if (!ptm::settable_now(GST_ELEMENT(self), pspec)) return;
  std::lock_guard<std::mutex> g(self->priv->lock);
  Settings& s = self->priv->settings;
  auto str = [&](const GValue* v) { return std::string(g_value_get_string(v) ? g_value_get_string(v) : ""); };
  switch (id) {
    case PROP_MODEL: s.model = str(value); break;
    case PROP_ARCHITECTURE: s.architecture = str(value); break;
    case PROP_CHECKPOINT_KEY: s.checkpoint_key = str(value); break;
    case PROP_LABELS: s.labels = str(value); break;
    case PROP_NUM_CLASSES: s.num_classes = g_value_get_int(value); break;
    case PROP_DEVICE: s.device = GstPtmDevice(g_value_get_enum(value)); break;
    case PROP_NUM_THREADS: s.num_threads = g_value_get_int(value); break;
    case PROP_INTERVAL: s.interval = g_value_get_uint(value); break;
    case PROP_TOP_K: s.scoring.top_k = int(g_value_get_uint(value)); break;
    case PROP_THRESHOLD: s.scoring.threshold = g_value_get_float(value); break;
    case PROP_OUTPUT: s.scoring.output = ptm::ScoreOutput(g_value_get_enum(value)); break;
    case PROP_SMOOTHING: s.scoring.smoothing = g_value_get_double(value); break;
    case PROP_HYSTERESIS: s.scoring.hysteresis = int(g_value_get_uint(value)); break;
    case PROP_RESULTS_FILE: s.results_file = str(value); break;
    case PROP_POST_MESSAGES: s.post_messages = g_value_get_boolean(value); break;
    case PROP_BATCH_SIZE: s.batch_size = g_value_get_uint(value); break;
    case PROP_RELOAD_ON_CHANGE: s.reload_on_change = g_value_get_boolean(value); break;
    case PROP_PRECISION: s.precision = ptm::Precision(g_value_get_enum(value)); break;
    case PROP_CHANNELS_LAST: s.channels_last = g_value_get_boolean(value); break;
    case PROP_CUDA_GRAPHS: s.cuda_graphs = g_value_get_boolean(value); break;
    case PROP_INPUT_SIZE: s.input_size = g_value_get_int(value); break;
    case PROP_SHARE_MODEL: s.share_model = g_value_get_boolean(value); break;
    case PROP_CALIBRATION: s.calibration = g_value_get_string(value) ? g_value_get_string(value) : ""; break;
    case PROP_CALIBRATION_IMAGES: s.calibration_images = g_value_get_uint(value); break;
    case PROP_ANALYTICS_META: s.analytics = g_value_get_boolean(value); break;
    case PROP_INFERENCE_REGION: s.region = GstPtmInferenceRegion(g_value_get_enum(value)); break;
    case PROP_OBJECT_CLASS: s.object_class = str(value); break;
    case PROP_MIN_REGION_SIZE: s.min_region_size = g_value_get_uint(value); break;
    case PROP_RECLASSIFY_INTERVAL: s.reclassify_interval = g_value_get_uint(value); break;
    case PROP_PUBLISH: s.publish = str(value); break;
    case PROP_PUBLISH_TOPIC: s.publish_topic = str(value); break;
    case PROP_PUBLISH_QOS: s.publish_qos = g_value_get_uint(value); break;
    case PROP_PUBLISH_PER: s.publish_per = GstPtmPublishPer(g_value_get_enum(value)); break;
    case PROP_PUBLISH_QUEUE_SIZE: s.publish_queue_size = g_value_get_uint(value); break;
    case PROP_PUBLISH_CLIENT_ID: s.publish_client_id = str(value); break;
    case PROP_PUBLISH_TLS_CA: s.publish_tls_ca = str(value); break;
    case PROP_PUBLISH_TLS_CERT: s.publish_tls_cert = str(value); break;
    case PROP_PUBLISH_TLS_KEY: s.publish_tls_key = str(value); break;
    default: G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec); break;
  }
}

static void gst_ptm_infer_get_property(GObject* object, guint id, GValue* value, GParamSpec* pspec) {
  auto* self = GST_PTM_INFER(object);
  if (id == PROP_STATS) {
    // Everything is read under the element's locks, no reference kept: a
    // getter holding the last one to a shared model or publisher would
    // release it here, on the application's thread (joining their threads).
    Counters c;
    std::optional<ptm::PublishStats> p;
    {
      std::lock_guard<std::mutex> g(self->priv->stats_lock);
      c = self->priv->counters;
      if (self->priv->publisher) p = self->priv->publisher->stats();
    }
    GstStructure* st = gst_structure_new("ptm-infer-stats", "frames", G_TYPE_UINT64, c.frames, "cuda-in-place",
                                         G_TYPE_UINT64, c.cuda_in_place, "cuda-via-host", G_TYPE_UINT64,
                                         c.cuda_via_host, "system-memory", G_TYPE_UINT64, c.system_memory, nullptr);
    std::optional<ptm::SharedModel::Counts> shared;
    std::string int8;
    {
      std::lock_guard<std::mutex> g(self->priv->state_lock);
      if (self->priv->state && self->priv->state->core) {
        if (const auto& model = self->priv->state->core->shared()) shared = model->counts();
        int8 = self->priv->state->core->int8_status();
      }
    }
    if (!int8.empty()) gst_structure_set(st, "int8", G_TYPE_STRING, int8.c_str(), nullptr);
    if (shared)
      gst_structure_set(st, "shared-passes", G_TYPE_UINT64, guint64(shared->passes), "shared-images", G_TYPE_UINT64,
                        guint64(shared->images), nullptr);
    if (p)
      gst_structure_set(st, "published", G_TYPE_UINT64, p->delivered, "publish-dropped", G_TYPE_UINT64, p->dropped,
                        "publish-queued", G_TYPE_UINT64, p->queued, "publish-offered", G_TYPE_UINT64, p->offered,
                        "publish-connected", G_TYPE_BOOLEAN, p->connected, "publish-connects", G_TYPE_UINT64,
                        p->connects, "publish-error", G_TYPE_STRING, p->last_error.c_str(), nullptr);
    g_value_take_boxed(value, st);
    return;
  }
  std::lock_guard<std::mutex> g(self->priv->lock);
  const Settings& s = self->priv->settings;
  auto str = [&](const std::string& v) { g_value_set_string(value, v.empty() ? nullptr : v.c_str()); };
  switch (id) {
    case PROP_MODEL: str(s.model); break;
    case PROP_ARCHITECTURE: str(s.architecture); break;
    case PROP_CHECKPOINT_KEY: str(s.checkpoint_key); break;
    case PROP_LABELS: str(s.labels); break;
    case PROP_NUM_CLASSES: g_value_set_int(value, s.num_classes); break;
    case PROP_DEVICE: g_value_set_enum(value, s.device); break;
    case PROP_NUM_THREADS: g_value_set_int(value, s.num_threads); break;
    case PROP_INTERVAL: g_value_set_uint(value, s.interval); break;
    case PROP_TOP_K: g_value_set_uint(value, guint(s.scoring.top_k)); break;
    case PROP_THRESHOLD: g_value_set_float(value, s.scoring.threshold); break;
    case PROP_OUTPUT: g_value_set_enum(value, int(s.scoring.output)); break;
    case PROP_SMOOTHING: g_value_set_double(value, s.scoring.smoothing); break;
    case PROP_HYSTERESIS: g_value_set_uint(value, guint(s.scoring.hysteresis)); break;
    case PROP_RESULTS_FILE: str(s.results_file); break;
    case PROP_POST_MESSAGES: g_value_set_boolean(value, s.post_messages); break;
    case PROP_BATCH_SIZE: g_value_set_uint(value, s.batch_size); break;
    case PROP_RELOAD_ON_CHANGE: g_value_set_boolean(value, s.reload_on_change); break;
    case PROP_PRECISION: g_value_set_enum(value, int(s.precision)); break;
    case PROP_CHANNELS_LAST: g_value_set_boolean(value, s.channels_last); break;
    case PROP_CUDA_GRAPHS: g_value_set_boolean(value, s.cuda_graphs); break;
    case PROP_INPUT_SIZE: g_value_set_int(value, s.input_size); break;
    case PROP_SHARE_MODEL: g_value_set_boolean(value, s.share_model); break;
    case PROP_CALIBRATION: g_value_set_string(value, s.calibration.c_str()); break;
    case PROP_CALIBRATION_IMAGES: g_value_set_uint(value, s.calibration_images); break;
    case PROP_ANALYTICS_META: g_value_set_boolean(value, s.analytics); break;
    case PROP_INFERENCE_REGION: g_value_set_enum(value, s.region); break;
    case PROP_OBJECT_CLASS: str(s.object_class); break;
    case PROP_MIN_REGION_SIZE: g_value_set_uint(value, s.min_region_size); break;
    case PROP_RECLASSIFY_INTERVAL: g_value_set_uint(value, s.reclassify_interval); break;
    case PROP_PUBLISH: str(s.publish); break;
    case PROP_PUBLISH_TOPIC: str(s.publish_topic); break;
    case PROP_PUBLISH_QOS: g_value_set_uint(value, s.publish_qos); break;
    case PROP_PUBLISH_PER: g_value_set_enum(value, s.publish_per); break;
    case PROP_PUBLISH_QUEUE_SIZE: g_value_set_uint(value, s.publish_queue_size); break;
    case PROP_PUBLISH_CLIENT_ID: str(s.publish_client_id); break;
    case PROP_PUBLISH_TLS_CA: str(s.publish_tls_ca); break;
    case PROP_PUBLISH_TLS_CERT: str(s.publish_tls_cert); break;
    case PROP_PUBLISH_TLS_KEY: str(s.publish_tls_key); break;
    default: G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec); break;
  }
}

// The fields that may change while frames flow.
static ptm::InferSettings scoring_of(const Settings& s) {
  ptm::InferSettings is;
  static_cast<ptm::ScoringSettings&>(is) = s.scoring;
  is.interval = int(s.interval);
  return is;
}

// precision=int8: once calibration ends, an "int8-calibrated" element
// message says how the model runs from now on ("int8", or why float32 runs
// on: also a warning). True when that happened in the run just made.
static bool note_int8(GstPtmInfer* self) {
  if (!self->priv->state || !self->priv->state->core) return false;
  State& st = *self->priv->state;
  const std::string now = st.core->int8_status();
  if (now == st.int8_said) return false;
  const bool was_calibrating = st.int8_said.rfind("calibrating", 0) == 0;
  st.int8_said = now;
  if (now.empty() || now.rfind("calibrating", 0) == 0) return false;
  if (now.rfind("float32", 0) == 0)
    GST_ELEMENT_WARNING(self, RESOURCE, SETTINGS, ("precision int8: %s", now.c_str()), (nullptr));
  else
    GST_INFO_OBJECT(self, "calibrated: the model runs in int8");
  gst_element_post_message(GST_ELEMENT(self),
                           gst_message_new_element(GST_OBJECT(self), gst_structure_new("int8-calibrated", "status",
                                                                                       G_TYPE_STRING, now.c_str(),
                                                                                       nullptr)));
  return was_calibrating;
}

// A model run took `ns`: the latency the element reports is the longest
// recent run with a quarter of headroom, so that it stays at or above
// every run while they vary a little. It grows at once when a run takes
// longer (a latency message makes the pipeline ask again) and shrinks when
// the longest of the window is under half of it.
static void note_processing(GstPtmInfer* self, GstClockTime ns) {
  Private& p = *self->priv;
  bool changed = false;
  {
    std::lock_guard<std::mutex> g(p.latency_lock);
    p.processing.push_back(ns);
    if (p.processing.size() > Private::kProcessingWindow) p.processing.pop_front();
    const GstClockTime longest = *std::max_element(p.processing.begin(), p.processing.end());
    changed = longest > p.reported_processing || longest < p.reported_processing / 2;
    if (changed) p.reported_processing = longest + longest / 4;
  }
  if (changed) gst_element_post_message(GST_ELEMENT(self), gst_message_new_latency(GST_OBJECT(self)));
}

// Runs `f` (a model run) and notes how long it took.
template <typename F>
static bool timed(GstPtmInfer* self, F&& f) {
  const gint64 t0 = g_get_monotonic_time();
  const bool ok = f();
  // The run that ended int8 calibration also converted the model: not
  // a latency the frames will see again.
  if (!note_int8(self)) note_processing(self, GstClockTime(g_get_monotonic_time() - t0) * GST_USECOND);
  return ok;
}

// With QoS on and batch-size > 1: true (and a QoS message posted) when the
// frame is already too late for downstream, as GstBaseTransform decides it
// for the frames it queues itself.
static bool drop_late(GstPtmInfer* self, GstBuffer* buf) {
  auto* trans = GST_BASE_TRANSFORM(self);
  Private& p = *self->priv;
  // Frames in a segment that is not in time (or none: data before a segment
  // event) have no running time to be late by.
  if (!gst_base_transform_is_qos_enabled(trans) || !GST_BUFFER_PTS_IS_VALID(buf) ||
      trans->segment.format != GST_FORMAT_TIME)
    return false;
  const GstClockTime pts = GST_BUFFER_PTS(buf);
  const GstClockTime running = gst_segment_to_running_time(&trans->segment, GST_FORMAT_TIME, pts);
  GstClockTime earliest;
  gdouble proportion;
  guint64 processed, dropped;
  {
    std::lock_guard<std::mutex> g(p.qos_lock);
    earliest = p.earliest;
    proportion = p.proportion;
    const bool late = GST_CLOCK_TIME_IS_VALID(running) && GST_CLOCK_TIME_IS_VALID(earliest) && running <= earliest;
    if (!late) {
      ++p.qos_processed;
      return false;
    }
    processed = p.qos_processed;
    dropped = ++p.qos_dropped;
  }
  GST_DEBUG_OBJECT(self, "frame at %" GST_TIME_FORMAT " is late (downstream wants %" GST_TIME_FORMAT "): dropped",
                   GST_TIME_ARGS(running), GST_TIME_ARGS(earliest));
  const GstClockTime stream_time = gst_segment_to_stream_time(&trans->segment, GST_FORMAT_TIME, pts);
  GstMessage* m = gst_message_new_qos(GST_OBJECT(self), FALSE, running, stream_time, pts, GST_BUFFER_DURATION(buf));
  gst_message_set_qos_values(m, GstClockTimeDiff(earliest) - GstClockTimeDiff(running), proportion, 1000000);
  gst_message_set_qos_stats(m, GST_FORMAT_BUFFERS, processed, dropped);
  gst_element_post_message(GST_ELEMENT(self), m);
  return true;
}

static void reset_qos(Private& p) {
  std::lock_guard<std::mutex> g(p.qos_lock);
  p.earliest = GST_CLOCK_TIME_NONE;
  p.proportion = 1.0;
}

static gboolean gst_ptm_infer_src_event(GstBaseTransform* trans, GstEvent* event) {
  if (GST_EVENT_TYPE(event) == GST_EVENT_QOS) {
    GstQOSType type;
    gdouble proportion;
    GstClockTimeDiff diff;
    GstClockTime timestamp;
    gst_event_parse_qos(event, &type, &proportion, &diff, &timestamp);
    Private& p = *GST_PTM_INFER(trans)->priv;
    std::lock_guard<std::mutex> g(p.qos_lock);
    p.proportion = proportion;
    p.earliest = GST_CLOCK_TIME_IS_VALID(timestamp) ? GstClockTime(std::max<GstClockTimeDiff>(0, GstClockTimeDiff(timestamp) + diff))
                                                    : GST_CLOCK_TIME_NONE;
  }
  return GST_BASE_TRANSFORM_CLASS(gst_ptm_infer_parent_class)->src_event(trans, event);
}

static gboolean gst_ptm_infer_start(GstBaseTransform* trans) {
  auto* self = GST_PTM_INFER(trans);
  const Settings s = settings_copy(self);
  if (s.model.empty()) {
    GST_ELEMENT_ERROR(self, RESOURCE, NOT_FOUND, ("No model set: set the 'model' property to a .pth, .pt or .safetensors file"),
                      (nullptr));
    return FALSE;
  }
  if (s.device == PTM_DEVICE_CUDA) {
    const std::string why = ptm::device_unavailable_reason("cuda");
    if (!why.empty()) {
      GST_ELEMENT_ERROR(self, RESOURCE, SETTINGS, ("device=cuda, but CUDA cannot be used: %s", why.c_str()),
                        (nullptr));
      return FALSE;
    }
  }
  {
    std::lock_guard<std::mutex> g(self->priv->stats_lock);
    self->priv->counters = Counters();
    self->priv->publisher.reset();
  }
  reset_qos(*self->priv);
  {
    std::lock_guard<std::mutex> g(self->priv->qos_lock);
    self->priv->qos_processed = self->priv->qos_dropped = 0;
  }
  {
    std::lock_guard<std::mutex> g(self->priv->latency_lock);
    self->priv->processing.clear();
    self->priv->reported_processing = 0;
  }
  self->priv->watch.watch(s.model);  // a replacement during the load is noticed
  State st;
  // Not on the thread changing the state (the application's): ptm::on_own_thread.
  bool ok = false;
  ptm::on_own_thread([&] {
    ok = ptm::guarded(GST_ELEMENT(self), GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_OPEN_READ,
                      "Could not load model '" + s.model + "'",
                      [&] { st.core = std::make_unique<ptm::InferCore>(model_settings(s)); });
  });
  if (!ok) return FALSE;
  if (s.analytics && !ptm::have_analytics())
    GST_ELEMENT_WARNING(self, RESOURCE, SETTINGS,
                        ("analytics-meta is set, but this build has no GstAnalytics (GStreamer < 1.24): not written"),
                        (nullptr));
  ptm::OutputOptions out;
  out.results_file = s.results_file;
  out.analytics = s.analytics;
  if (!s.publish.empty()) {
    if (s.publish_per == PTM_PUBLISH_PER_REGION && s.region != PTM_REGION_ROI_LIST) {
      GST_ELEMENT_ERROR(self, RESOURCE, SETTINGS,
                        ("publish-per=region needs inference-region=roi-list (whole frames have no regions)"),
                        (nullptr));
      return FALSE;
    }
    ptm::PublishOptions po;
    po.url = s.publish;
    po.qos = int(s.publish_qos);
    po.queue_size = s.publish_queue_size;
    po.client_id = s.publish_client_id;
    po.ca_file = s.publish_tls_ca;
    po.cert_file = s.publish_tls_cert;
    po.key_file = s.publish_tls_key;
    if (!ptm::guarded(GST_ELEMENT(self), GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_SETTINGS,
                      "Cannot publish results to '" + s.publish + "'",
                      [&] { out.publisher = ptm::Publisher::open(po); }))
      return FALSE;
    out.topic = s.publish_topic;
    out.publish_regions = s.publish_per == PTM_PUBLISH_PER_REGION;
  }
  if (!ptm::guarded(GST_ELEMENT(self), GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_OPEN_WRITE,
                    "Could not open results file '" + s.results_file + "'",
                    [&] { st.outputs = ptm::make_outputs(out); }))
    return FALSE;
  st.batch = std::max<guint>(1, s.batch_size);
  st.regions = s.region == PTM_REGION_ROI_LIST;
  const ptm::ModelInfo& m = st.core->info();
  GST_INFO_OBJECT(self, "loaded %s: %s, %" G_GINT64_FORMAT " classes, %s, input %dx%d, on %s", s.model.c_str(),
                  m.architecture.c_str(), m.num_classes, m.format.c_str(), m.crop_size, m.crop_size,
                  st.core->on_cuda() ? "CUDA" : "CPU");
  post_loaded(self, s.model, loaded_of(*st.core));
  {
    std::lock_guard<std::mutex> g(self->priv->stats_lock);
    self->priv->publisher = out.publisher;
  }
  std::lock_guard<std::mutex> g(self->priv->state_lock);
  self->priv->state.emplace(std::move(st));
  return TRUE;
}

static gboolean gst_ptm_infer_stop(GstBaseTransform* trans) {
  auto* self = GST_PTM_INFER(trans);
  Private& p = *self->priv;
  {
    std::lock_guard<std::mutex> g(p.state_lock);
    p.state.reset();  // no new requests from here on
  }
  p.slot.stop();  // waits for a load in progress
  std::shared_ptr<ptm::Publisher> pub;
  {
    std::lock_guard<std::mutex> g(p.stats_lock);
    pub = p.publisher;
  }
  if (pub) {
    // What is still queued gets a few seconds to reach a reachable broker.
    const ptm::PublishStats before = pub->stats();
    pub->close(kPublishDrainMs);
    const ptm::PublishStats after = pub->stats();
    if (after.dropped > before.dropped)
      GST_ELEMENT_WARNING(self, RESOURCE, WRITE,
                          ("%" G_GUINT64_FORMAT " results were not delivered to %s before stopping (%s)",
                           after.dropped - before.dropped, pub->describe().c_str(),
                           after.last_error.empty() ? "not acknowledged in time" : after.last_error.c_str()),
                          (nullptr));
    GST_INFO_OBJECT(self, "published to %s: %" G_GUINT64_FORMAT " delivered, %" G_GUINT64_FORMAT " dropped",
                    pub->describe().c_str(), after.delivered, after.dropped);
  }
  return TRUE;
}

static gboolean gst_ptm_infer_set_caps(GstBaseTransform* trans, GstCaps* incaps, GstCaps*) {
  auto* self = GST_PTM_INFER(trans);
  if (!self->priv->state) return FALSE;
  State& st = *self->priv->state;
  if (!gst_video_info_from_caps(&st.info, incaps)) {
    GST_ELEMENT_ERROR(self, STREAM, FORMAT, ("Unsupported caps"), ("%" GST_PTR_FORMAT, incaps));
    return FALSE;
  }
  if (!ptm::accept_memory_caps(GST_ELEMENT(self), incaps, &st.cuda_memory)) return FALSE;
  if (st.cuda_memory && !st.core->on_cuda())
    GST_WARNING_OBJECT(self, "frames arrive in CUDA memory but the model runs on the CPU: each frame is copied to "
                             "the host (set device=cuda to read them in place)");
  st.have_info = true;
  return TRUE;
}

static GstFlowReturn drain(GstPtmInfer* self);

static gboolean gst_ptm_infer_sink_event(GstBaseTransform* trans, GstEvent* event) {
  auto* self = GST_PTM_INFER(trans);
  switch (GST_EVENT_TYPE(event)) {
    case GST_EVENT_STREAM_START:
      drain(self);
      if (self->priv->state) {
        const gchar* id = nullptr;
        gst_event_parse_stream_start(event, &id);
        self->priv->state->stream = id ? id : "";
      }
      break;
    case GST_EVENT_FLUSH_STOP:
      reset_qos(*self->priv);
      if (self->priv->state) {
        State& st = *self->priv->state;
        st.core->reset();
        st.unmap();
        for (GstBuffer* b : st.pending) gst_buffer_unref(b);
        for (GstBuffer* b : st.ready) gst_buffer_unref(b);
        st.pending.clear();
        st.ready.clear();
        st.region_frames = 0;
        st.tracks.clear();
      }
      break;
    default:
      // Frames of a batch in progress go out before any serialized event
      // (EOS, caps, segment, gap, tags, custom events): none overtakes a
      // frame that came before it.
      if (GST_EVENT_IS_SERIALIZED(event)) drain(self);
      break;
  }
  return GST_BASE_TRANSFORM_CLASS(gst_ptm_infer_parent_class)->sink_event(trans, event);
}

// Answers ptmpreprocess's "ptm-model-input" query with the model's
// torchvision eval transform, so an unconfigured ptmpreprocess matches it.
static gboolean gst_ptm_infer_query(GstBaseTransform* trans, GstPadDirection dir, GstQuery* query) {
  auto* self = GST_PTM_INFER(trans);
  if (self->priv->cuda.handle_query(GST_ELEMENT(self), query)) return TRUE;
  if (dir == GST_PAD_SINK && GST_QUERY_TYPE(query) == GST_QUERY_CUSTOM) {
    GstStructure* s = gst_query_writable_structure(query);
    if (gst_structure_has_name(s, "ptm-model-input")) {
      std::shared_ptr<ptm::InferCore> core;
      {
        std::lock_guard<std::mutex> g(self->priv->state_lock);
        if (!self->priv->state) return FALSE;
        core = self->priv->state->core;
      }
      const ptm::PreprocessConfig c = core->preprocess_config();
      gst_structure_set(s, "resize", G_TYPE_INT, c.resize_size, "size", G_TYPE_INT, c.crop_width, "bicubic",
                        G_TYPE_BOOLEAN, c.filter == ptm::Filter::Bicubic, "model", G_TYPE_STRING,
                        core->info().architecture.c_str(), "stretch", G_TYPE_BOOLEAN,
                        c.mode == ptm::ResizeMode::Stretch, nullptr);
      for (const char* field : {"mean", "std"}) {
        const auto& v = field[0] == 'm' ? c.mean : c.std;
        GValue arr = G_VALUE_INIT;
        gst_value_array_init(&arr, 3);
        for (float x : v) {
          GValue d = G_VALUE_INIT;
          g_value_init(&d, G_TYPE_DOUBLE);
          g_value_set_double(&d, x);
          gst_value_array_append_and_take_value(&arr, &d);
        }
        gst_structure_take_value(s, field, &arr);
      }
      return TRUE;
    }
  }
  if (dir == GST_PAD_SRC && GST_QUERY_TYPE(query) == GST_QUERY_LATENCY) {
    // Upstream's latency, plus this element's: the frames a batch holds
    // before it runs, and the longest recent model run.
    if (!GST_BASE_TRANSFORM_CLASS(gst_ptm_infer_parent_class)->query(trans, dir, query)) return FALSE;
    gboolean live;
    GstClockTime min, max;
    gst_query_parse_latency(query, &live, &min, &max);
    GstClockTime own = 0;
    {
      std::lock_guard<std::mutex> g(self->priv->state_lock);
      if (self->priv->state && self->priv->state->have_info && !self->priv->state->regions) {
        const GstVideoInfo& info = self->priv->state->info;
        if (GST_VIDEO_INFO_FPS_N(&info) > 0)
          own = gst_util_uint64_scale(GST_SECOND * (self->priv->state->batch - 1), GST_VIDEO_INFO_FPS_D(&info),
                                      GST_VIDEO_INFO_FPS_N(&info));
      }
    }
    {
      std::lock_guard<std::mutex> g(self->priv->latency_lock);
      own += self->priv->reported_processing;
    }
    GST_DEBUG_OBJECT(self, "latency: upstream %" GST_TIME_FORMAT ", own %" GST_TIME_FORMAT, GST_TIME_ARGS(min),
                     GST_TIME_ARGS(own));
    gst_query_set_latency(query, live, min + own, GST_CLOCK_TIME_IS_VALID(max) ? max + own : max);
    return TRUE;
  }
  return GST_BASE_TRANSFORM_CLASS(gst_ptm_infer_parent_class)->query(trans, dir, query);
}

// Frames with an upstream tensor (ptmpreprocess) of another size: the model
// takes that size when input-size is unset and it runs at it; else the
// frames are preprocessed here, and a warning says once why. Called before
// the buffer is queued (a batch of the old size finishes first).
static bool follow_upstream_size(GstPtmInfer* self, State& st, const Settings& s, GstBuffer* buf) {
  const GstPtmTensorMeta* tm = gst_buffer_get_ptm_tensor_meta(buf);
  const int size = st.core->info().crop_size;
  if (!tm || st.warned_tensor || (int(tm->width) == size && int(tm->height) == size)) return true;
  std::string why;
  if (tm->channels != 3 || tm->bgr) why = "the model takes RGB planes";
  else if (tm->width != tm->height) why = "the model takes square inputs";
  else if (s.input_size > 0) why = "input-size is " + std::to_string(s.input_size);
  else {
    if (!classify_pending(self, st)) return false;
    {
      // A shared model is swapped for the instance at that size ("stats" reads it).
      std::lock_guard<std::mutex> g(self->priv->state_lock);
      why = st.core->set_input_size(int(tm->width));
    }
    if (why.empty()) {
      GST_INFO_OBJECT(self, "running the model at the upstream tensors' %ux%u", tm->width, tm->height);
      return true;
    }
  }
  GST_ELEMENT_WARNING(self, STREAM, FORMAT,
                      ("The upstream %ux%ux%u%s tensors are not used, frames are preprocessed here at %dx%d: %s",
                       tm->channels, tm->height, tm->width, tm->bgr ? " BGR" : "", size, size, why.c_str()),
                      (nullptr));
  st.warned_tensor = true;
  return true;
}

// Runs the model on the queued frames (timed; an element error on failure).
static bool flush_core(GstPtmInfer* self, State& st, std::vector<ptm::FrameResult>* results) {
  return timed(self, [&] {
    return ptm::guarded(GST_ELEMENT(self), GST_STREAM_ERROR, GST_STREAM_ERROR_FAILED, "Inference failed",
                        [&] { *results = st.core->flush(); });
  });
}

// Maps the frame and queues it in the core (preprocessed, or its tensor
// meta copied when it fits the model). With `results` (batch size 1) the
// model runs on it before it is unmapped, which lets a shared model's
// thread preprocess it on the model's threads. `hold` (batch size > 1):
// where the model is shared, a frame in system memory stays mapped (in
// st.mapped) until classify_pending() runs the batch, for the same reason.
static bool queue_buffer(GstPtmInfer* self, State& st, const Settings& s, GstBuffer* buf,
                         std::vector<ptm::FrameResult>* results = nullptr, bool hold = false) {
  st.core->update_scoring(scoring_of(s));  // interval decides what is queued
  const int size = st.core->info().crop_size;
  bool unfit = false;
  if (st.cuda_memory && st.core->on_cuda()) {
    // In place: the kernel reads the GstCudaMemory the frame is in.
    GstVideoFrame frame;
    ptm::FrameView view;
    int device = -1, tensor_device = -1;
    std::string why;
    if (!self->priv->cuda.map(buf, &st.info, false, &frame, &view, &device, &why)) {
      GST_ELEMENT_ERROR(self, STREAM, FAILED, ("Cannot read the frame in CUDA memory: %s", why.c_str()), (nullptr));
      return false;
    }
    if (device != st.core->cuda_device()) {
      gst_video_frame_unmap(&frame);
      GST_ELEMENT_ERROR(self, STREAM, FAILED,
                        ("The frames are on CUDA device %d, the model on device %d", device, st.core->cuda_device()),
                        (nullptr));
      return false;
    }
    const float* tensor = ptm::fitting_tensor(buf, size, &unfit, &tensor_device);
    if (tensor && tensor_device != device) tensor = nullptr;
    bool ok = ptm::guarded(GST_ELEMENT(self), GST_STREAM_ERROR, GST_STREAM_ERROR_FAILED, "Preprocessing failed",
                           [&] { st.core->queue_device(view, tensor); });
    if (ok && results) ok = flush_core(self, st, results);  // still mapped
    gst_video_frame_unmap(&frame);
    std::lock_guard<std::mutex> g(self->priv->stats_lock);
    ++self->priv->counters.frames;
    ++self->priv->counters.cuda_in_place;
    return ok;
  }
  {
    std::lock_guard<std::mutex> g(self->priv->stats_lock);
    ++self->priv->counters.frames;
    ++(st.cuda_memory ? self->priv->counters.cuda_via_host : self->priv->counters.system_memory);
  }
  GstVideoFrame frame;
  if (!gst_video_frame_map(&frame, &st.info, buf, GST_MAP_READ)) {
    GST_ELEMENT_ERROR(self, STREAM, FAILED, ("Could not map the video frame"), (nullptr));
    return false;
  }
  const float* tensor = ptm::fitting_tensor(buf, size, &unfit);
  hold = hold && !results && st.core->shared();
  bool ok = ptm::guarded(GST_ELEMENT(self), GST_STREAM_ERROR, GST_STREAM_ERROR_FAILED, "Preprocessing failed",
                         [&] { st.core->queue(ptm::frame_view(frame), tensor, results != nullptr || hold); });
  if (ok && results) ok = flush_core(self, st, results);  // still mapped
  if (hold) {
    st.mapped.push_back(frame);  // the core may hold it whether or not queue() threw
  } else {
    gst_video_frame_unmap(&frame);
  }
  return ok;
}

// Publishes the result of the (writable) buffer through every output.
static bool publish(GstPtmInfer* self, State& st, const Settings& s, GstBuffer* buf, const ptm::FrameResult& r,
                    const std::vector<ptm::RegionResult>* regions = nullptr) {
  const ptm::Published p{GST_ELEMENT(self), buf, r, st.core->info().architecture, s.post_messages, regions,
                         &st.stream};
  for (const auto& o : st.outputs)
    if (!ptm::guarded(GST_ELEMENT(self), GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_WRITE, o->failure(),
                      [&] { o->publish(p); }))
      return false;
  return true;
}

// Runs the model on the queued frames; their buffers move to `ready`.
static bool classify_pending(GstPtmInfer* self, State& st) {
  if (st.pending.empty()) return true;
  const Settings s = settings_copy(self);
  st.core->update_scoring(scoring_of(s));
  std::vector<ptm::FrameResult> results;
  const bool ok = flush_core(self, st, &results);
  st.unmap();  // the core is done with the frames either way
  if (!ok) {  // the batch is lost (the error says why), not run again
    for (GstBuffer* b : st.pending) gst_buffer_unref(b);
    st.pending.clear();
    return false;
  }
  for (size_t i = 0; i < st.pending.size(); ++i) {
    GstBuffer* buf = gst_buffer_make_writable(st.pending[i]);
    st.pending[i] = nullptr;
    st.ready.push_back(buf);
    if (!publish(self, st, s, buf, results[i])) {
      for (size_t j = i + 1; j < st.pending.size(); ++j) gst_buffer_unref(st.pending[j]);
      st.pending.clear();
      return false;
    }
  }
  st.pending.clear();
  return true;
}

// inference-region=roi-list: each region of the frame cropped, preprocessed
// and classified alone (batches of up to batch-size regions), on every
// interval-th frame; the results go to each region.
static GstFlowReturn classify_regions(GstPtmInfer* self, State& st, const Settings& s, GstBuffer* buf) {
  {
    std::lock_guard<std::mutex> g(self->priv->stats_lock);
    ++self->priv->counters.frames;
    ++(st.cuda_memory ? self->priv->counters.cuda_via_host : self->priv->counters.system_memory);
  }
  const guint64 index = st.region_frames++;
  if (index % std::max<guint>(1, s.interval) != 0) return GST_FLOW_OK;
  std::vector<ptm::RegionResult> regions = ptm::regions_of(buf, st.info, s.object_class, int(s.min_region_size));
  ptm::FrameResult whole;
  whole.frame = index;
  // A tracked object classified less than reclassify-interval frames ago
  // keeps that result (marked reused); the others are classified now.
  std::vector<size_t> todo;
  for (size_t i = 0; i < regions.size(); ++i) {
    const auto it = regions[i].track_id >= 0 ? st.tracks.find(regions[i].track_id) : st.tracks.end();
    if (it != st.tracks.end() && index - it->second.second < std::max<guint>(1, s.reclassify_interval)) {
      regions[i].result = it->second.first;
      regions[i].result.reused = true;
      regions[i].result.frame = index;
      regions[i].result.inference_ns = 0;
    } else {
      todo.push_back(i);
    }
  }
  if (!todo.empty()) {
    GstVideoFrame frame;
    if (!gst_video_frame_map(&frame, &st.info, buf, GST_MAP_READ)) {
      GST_ELEMENT_ERROR(self, STREAM, FAILED, ("Could not map the video frame"), (nullptr));
      return GST_FLOW_ERROR;
    }
    std::vector<ptm::Region> boxes;
    for (size_t i : todo) boxes.push_back(regions[i].box);
    st.core->update_scoring(scoring_of(s));
    std::vector<ptm::FrameResult> results;
    const bool ok = timed(self, [&] {
      return ptm::guarded(GST_ELEMENT(self), GST_STREAM_ERROR, GST_STREAM_ERROR_FAILED, "Inference failed", [&] {
        results = st.core->classify_regions(ptm::frame_view(frame), boxes, int(st.batch));
      });
    });
    gst_video_frame_unmap(&frame);
    if (!ok) return GST_FLOW_ERROR;
    for (size_t k = 0; k < todo.size(); ++k) {
      ptm::RegionResult& r = regions[todo[k]];
      results[k].frame = index;
      whole.inference_ns += results[k].inference_ns;
      r.result = std::move(results[k]);
      if (r.track_id >= 0) st.tracks[r.track_id] = {r.result, index};
    }
  }
  // Objects not seen for a while are forgotten.
  const guint64 keep = 4 * guint64(std::max<guint>(1, s.reclassify_interval)) + 30;
  for (auto it = st.tracks.begin(); it != st.tracks.end();)
    it = index - it->second.second > keep ? st.tracks.erase(it) : std::next(it);
  return publish(self, st, s, buf, whole, &regions) ? GST_FLOW_OK : GST_FLOW_ERROR;
}

// Batch size 1: classify each buffer in place.
static GstFlowReturn gst_ptm_infer_transform_ip(GstBaseTransform* trans, GstBuffer* buf) {
  auto* self = GST_PTM_INFER(trans);
  if (!self->priv->state || !self->priv->state->have_info) return GST_FLOW_NOT_NEGOTIATED;
  State& st = *self->priv->state;
  const Settings s = settings_copy(self);
  maybe_swap(self, st, s);
  if (st.regions) return classify_regions(self, st, s, buf);
  std::vector<ptm::FrameResult> r;
  if (!follow_upstream_size(self, st, s, buf) || !queue_buffer(self, st, s, buf, &r)) return GST_FLOW_ERROR;
  return publish(self, st, s, buf, r.front()) ? GST_FLOW_OK : GST_FLOW_ERROR;
}

// Batch size > 1: frames wait until `batch-size` of them are queued (or
// any serialized event or a drain query), then run as one batch.
static GstFlowReturn gst_ptm_infer_submit_input_buffer(GstBaseTransform* trans, gboolean discont, GstBuffer* buf) {
  auto* self = GST_PTM_INFER(trans);
  // Frames are batched in time only when whole; regions batch within a frame.
  if (!self->priv->state || self->priv->state->batch <= 1 || self->priv->state->regions)
    return GST_BASE_TRANSFORM_CLASS(gst_ptm_infer_parent_class)->submit_input_buffer(trans, discont, buf);
  State& st = *self->priv->state;
  if (!st.have_info) {
    gst_buffer_unref(buf);
    return GST_FLOW_NOT_NEGOTIATED;
  }
  if (drop_late(self, buf)) {
    gst_buffer_unref(buf);
    return GST_BASE_TRANSFORM_FLOW_DROPPED;
  }
  const Settings s = settings_copy(self);
  maybe_swap(self, st, s);
  if (!follow_upstream_size(self, st, s, buf)) {
    gst_buffer_unref(buf);
    return GST_FLOW_ERROR;
  }
  st.pending.push_back(buf);
  if (!queue_buffer(self, st, s, buf, nullptr, true)) return GST_FLOW_ERROR;
  if (st.pending.size() >= st.batch && !classify_pending(self, st)) return GST_FLOW_ERROR;
  return GST_FLOW_OK;
}

static GstFlowReturn gst_ptm_infer_generate_output(GstBaseTransform* trans, GstBuffer** out) {
  auto* self = GST_PTM_INFER(trans);
  if (!self->priv->state || self->priv->state->batch <= 1 || self->priv->state->regions)
    return GST_BASE_TRANSFORM_CLASS(gst_ptm_infer_parent_class)->generate_output(trans, out);
  State& st = *self->priv->state;
  *out = nullptr;
  if (!st.ready.empty()) {
    *out = st.ready.front();
    st.ready.pop_front();
  }
  return GST_FLOW_OK;
}

// Classifies and pushes whatever is queued (EOS, new caps, drain).
static GstFlowReturn drain(GstPtmInfer* self) {
  if (!self->priv->state) return GST_FLOW_OK;
  State& st = *self->priv->state;
  if (!classify_pending(self, st)) return GST_FLOW_ERROR;
  GstFlowReturn ret = GST_FLOW_OK;
  while (!st.ready.empty()) {
    GstBuffer* b = st.ready.front();
    st.ready.pop_front();
    if (ret == GST_FLOW_OK) ret = gst_pad_push(GST_BASE_TRANSFORM_SRC_PAD(self), b);
    else gst_buffer_unref(b);
  }
  return ret;
}

static void gst_ptm_infer_set_context(GstElement* element, GstContext* context) {
  GST_PTM_INFER(element)->priv->cuda.set_context(element, context);
  GST_ELEMENT_CLASS(gst_ptm_infer_parent_class)->set_context(element, context);
}

static void gst_ptm_infer_finalize(GObject* object) {
  Private* p = GST_PTM_INFER(object)->priv;
  p->slot.stop();
  delete p;
  G_OBJECT_CLASS(gst_ptm_infer_parent_class)->finalize(object);
}

static void gst_ptm_infer_init(GstPtmInfer* self) {
  self->priv = new Private(self);
  gst_base_transform_set_in_place(GST_BASE_TRANSFORM(self), TRUE);
  // As other video filters: frames already late for a sink that sends QoS
  // events are dropped (with a QoS message) instead of classified, so that
  // a live source feeding a model slower than real time keeps a bounded
  // latency. qos=false classifies every frame.
  gst_base_transform_set_qos_enabled(GST_BASE_TRANSFORM(self), TRUE);
}

static void gst_ptm_infer_class_init(GstPtmInferClass* klass) {
  GObjectClass* gobject_class = G_OBJECT_CLASS(klass);
  GstElementClass* element_class = GST_ELEMENT_CLASS(klass);
  GstBaseTransformClass* bt = GST_BASE_TRANSFORM_CLASS(klass);
  gobject_class->set_property = gst_ptm_infer_set_property;
  gobject_class->get_property = gst_ptm_infer_get_property;
  gobject_class->finalize = gst_ptm_infer_finalize;

  const auto ready = ptm::kParamReady;
  const auto live = ptm::kParamLive;
  const Settings d;  // the defaults
  /**
   * GstPtmInfer:model:
   *
   * The model file: a `.pth`/`.pt` state dict or training checkpoint (zip or
   * legacy format), a safetensors file, or a TorchScript export (TorchScript
   * runs code from the file: trusted files only). Loaded at start.
   */
  g_object_class_install_property(
      gobject_class, PROP_MODEL,
      g_param_spec_string("model", "Model file",
                          "Model file (.pth/.pt state dict or checkpoint, .safetensors, or TorchScript). "
                          "Loaded at start; set while playing, the new model loads in the background and takes "
                          "over between two frames (the newest value replaces one not yet loading; a file that fails "
                          "to load or needs another input size leaves the old model running, with a warning and a "
                          "'model-reload' message)",
                          nullptr, live));
  g_object_class_install_property(
      gobject_class, PROP_ARCHITECTURE,
      g_param_spec_string("architecture", "Architecture",
                          "torchvision architecture name (e.g. resnet50); empty: detected from the weights",
                          nullptr, ready));
  g_object_class_install_property(
      gobject_class, PROP_CHECKPOINT_KEY,
      g_param_spec_string("checkpoint-key", "Checkpoint key",
                          "Entry of a training checkpoint that holds the weights to use (e.g. state_dict, "
                          "state_dict_ema, model); empty: found automatically, EMA weights first where a "
                          "checkpoint has both (the load report names the other)",
                          nullptr, ready));
  g_object_class_install_property(
      gobject_class, PROP_LABELS,
      g_param_spec_string("labels", "Labels file",
                          "Text file with one label per line; empty: the labels saved inside the model file "
                          "(ptmtrainsink saves them with the weights), else <model stem>.labels.txt when it exists, "
                          "else ImageNet names for 1000-class models, else 'class N'. "
                          "Set while playing, the model reloads with these labels",
                          nullptr, live));
  g_object_class_install_property(
      gobject_class, PROP_NUM_CLASSES,
      g_param_spec_int("num-classes", "Number of classes",
                       "Classes of the model; 0: as in the file. Another count keeps the backbone and starts "
                       "a new, untrained head",
                       0, 1 << 20, d.num_classes, ready));
  g_object_class_install_property(
      gobject_class, PROP_DEVICE,
      g_param_spec_enum("device", "Device", "Where the model runs", GST_TYPE_PTM_DEVICE, d.device, ready));
  g_object_class_install_property(
      gobject_class, PROP_NUM_THREADS,
      g_param_spec_int("num-threads", "Threads",
                       "CPU threads for inference and for preprocessing the frames before it; 0: every core", 0,
                       1024, d.num_threads, ready));
  g_object_class_install_property(
      gobject_class, PROP_INTERVAL,
      g_param_spec_uint("interval", "Interval",
                        "Run the model on every Nth frame; frames in between carry the last result "
                        "(marked reused); with inference-region=roi-list, the regions of every Nth frame are "
                        "classified and the frames in between pass without results",
                        1, G_MAXINT, d.interval, live));
  g_object_class_install_property(
      gobject_class, PROP_TOP_K,
      g_param_spec_uint("top-k", "Top k", "Number of classes reported per frame", 1, 1000, guint(d.scoring.top_k), live));
  g_object_class_install_property(
      gobject_class, PROP_THRESHOLD,
      g_param_spec_float("threshold", "Threshold",
                         "Classes scoring below this are not reported (e.g. 0.5 with sigmoid output); "
                         "default: every top-k class",
                         -G_MAXFLOAT, G_MAXFLOAT, d.scoring.threshold, live));
  g_object_class_install_property(
      gobject_class, PROP_OUTPUT,
      g_param_spec_enum("output", "Scores", "How logits become scores", GST_TYPE_PTM_SCORE_OUTPUT,
                        int(d.scoring.output), live));
  g_object_class_install_property(
      gobject_class, PROP_SMOOTHING,
      g_param_spec_double("smoothing", "Smoothing",
                          "Weight of past scores in an exponential moving average over inferred frames; "
                          "0: off",
                          0.0, 0.999, d.scoring.smoothing, live));
  g_object_class_install_property(
      gobject_class, PROP_HYSTERESIS,
      g_param_spec_uint("hysteresis", "Hysteresis",
                        "Inferred frames a new top class must lead before it is reported first; 0: off", 0,
                        10000, guint(d.scoring.hysteresis), live));
  g_object_class_install_property(
      gobject_class, PROP_RESULTS_FILE,
      g_param_spec_string("results-file", "Results file",
                          "Write one JSON line per frame here (pts, frame, reused, inference_ms, results)",
                          nullptr, ready));
  g_object_class_install_property(
      gobject_class, PROP_BATCH_SIZE,
      g_param_spec_uint("batch-size", "Batch size",
                        "Frames classified together in one forward pass (batched in time: a frame waits until "
                        "the batch is full or a serialized event (EOS, caps, segment, gap, tags) comes); results "
                        "equal batch size 1",
                        1, 256, d.batch_size, ready));
  g_object_class_install_property(
      gobject_class, PROP_RELOAD_ON_CHANGE,
      g_param_spec_boolean("reload-on-change", "Reload on change",
                           "Reload the model when its file is replaced (checked twice a second), e.g. by "
                           "ptmtrainsink writing new weights",
                           d.reload_on_change, live));
  /**
   * GstPtmInfer:precision:
   *
   * Number format of the model. On a CUDA device fp16 and bf16 use the
   * GPU's tensor cores. On the CPU, bf16 runs where the CPU has bfloat16
   * instructions (AVX-512 BF16 or AMX: Cooper Lake, Sapphire Rapids and
   * later Xeons, AMD Zen 4 and later), in channels-last layout, and runs
   * the model faster than fp32: a built-in architecture's load times both
   * in turns and keeps bf16 where it runs at least 1.1x as fast, as for
   * int8 (AMX: 2-5x fp32; AVX-512 BF16 alone may lose), a warning giving
   * both times where fp32 stays. Without the instructions
   * the model runs in fp32 and a warning says so. fp16 on the CPU is an
   * error.
   *
   * int8 (CPU; weights in a built-in architecture: .pth, .safetensors, a
   * model folder) quantizes the model after training: weights per output
   * channel, activations per tensor with ranges measured on
   * #GstPtmInfer:calibration-images images (the first frames, or the
   * images of #GstPtmInfer:calibration), results meanwhile from fp32. The
   * run that ends calibration converts the model (a fraction of a second
   * to seconds); an "int8-calibrated" element message then gives the
   * outcome: "int8", or why fp32 runs on (also a warning) — the int8 graph
   * is kept only where it runs at least 1.1x as fast as fp32 (timed in
   * turns with it; where the two are as fast fp32 keeps its own accuracy)
   * (convolutional networks
   * with ReLU: resnets, mobilenet_v2; not SiLU networks such as
   * efficientnet on LibTorch's kernels). On a CPU with VNNI whose fp32
   * path is ptm's oneDNN executor, int8 runs on that executor (8-bit
   * convolutions requantized in place; resnets about 2.5-3.5x fp32), else
   * on LibTorch's quantized graph (PTM_INT8_EXECUTOR=0 asks for the
   * latter). Agreement with fp32: docs/performance.md.
   */
  g_object_class_install_property(
      gobject_class, PROP_PRECISION,
      g_param_spec_enum("precision", "Precision",
                        "Number format of the model: fp16 on CUDA; bf16 on CUDA and on CPUs with bfloat16 "
                        "instructions (AVX-512 BF16, AMX) where it runs 1.1x as fast as fp32, timed at load (AMX: "
                        "2-5x fp32 for convolutional networks; elsewhere fp32 runs, with a warning); int8 on the "
                        "CPU, calibrated on frames (calibration, calibration-images)",
                        GST_TYPE_PTM_PRECISION, int(d.precision), ready));
  /**
   * GstPtmInfer:calibration:
   *
   * precision=int8: a folder of images (any OpenCV reads; files in name
   * order, others skipped) to measure the activations' ranges on while the
   * model loads, preprocessed as the model's eval transform. Empty: the
   * first #GstPtmInfer:calibration-images frames of the stream (live
   * sources: a folder spares the conversion pause on the stream).
   */
  g_object_class_install_property(
      gobject_class, PROP_CALIBRATION,
      g_param_spec_string("calibration", "Calibration folder",
                          "precision=int8: a folder of images calibrated on at load; empty: the stream's first "
                          "calibration-images frames",
                          nullptr, ready));
  g_object_class_install_property(
      gobject_class, PROP_CALIBRATION_IMAGES,
      g_param_spec_uint("calibration-images", "Calibration images",
                        "precision=int8: images the activations' ranges are measured on (frames run in fp32 "
                        "until then)",
                        1, 100000, d.calibration_images, ready));
  g_object_class_install_property(
      gobject_class, PROP_CHANNELS_LAST,
      g_param_spec_boolean("channels-last", "Channels last",
                           "On CUDA: run the model in NHWC (channels-last) memory format, which tensor cores "
                           "prefer; the preprocessing kernel writes that layout directly",
                           d.channels_last, ready));
  g_object_class_install_property(
      gobject_class, PROP_CUDA_GRAPHS,
      g_param_spec_boolean("cuda-graphs", "CUDA graphs",
                           "On CUDA: capture the forward pass once per batch size and replay it (less launch "
                           "overhead for small models and batches); falls back to plain runs if capture fails",
                           d.cuda_graphs, ready));
  /**
   * GstPtmInfer:input-size:
   *
   * Height and width of the model input. 0 takes, in order: the size of the
   * tensors an upstream ptmpreprocess attaches (when the model runs at it),
   * the model's own (a .pt2 package's, the architecture's default). A model
   * that cannot run at the size asked fails to start, saying why.
   */
  g_object_class_install_property(
      gobject_class, PROP_INPUT_SIZE,
      g_param_spec_int("input-size", "Input size",
                       "Height and width of the model input (0: an upstream ptmpreprocess's tensor size, else "
                       "the model's own)",
                       0, 4096, d.input_size, ready));
  /**
   * GstPtmInfer:share-model:
   *
   * ptminfer elements of one process that run the same model file (the same
   * version of it) with the same model-defining properties (architecture,
   * num-classes, checkpoint-key, labels, num-threads, precision,
   * input-size) on the CPU share one loaded instance: its weights are in
   * memory once, and its forward passes run on one thread of its own that
   * takes the frames of every element waiting at that moment in one pass
   * (batching across streams, without waiting for more). Each element keeps
   * its own preprocessing, scoring, smoothing and outputs. The
   * "model-loaded" message's "shared" field tells whether this element took
   * an instance another had loaded. A reloaded file is a new version: the
   * elements that reload it share the new instance. CUDA models are not
   * shared (each element loads its own).
   */
  g_object_class_install_property(
      gobject_class, PROP_SHARE_MODEL,
      g_param_spec_boolean("share-model", "Share model",
                           "On the CPU, share one loaded instance of the model (weights once, forward passes "
                           "batched across the elements) with every ptminfer in the process that runs the same "
                           "file with the same model properties; FALSE: a model of this element's own, run on "
                           "its streaming thread",
                           d.share_model, ready));
  g_object_class_install_property(
      gobject_class, PROP_STATS,
      g_param_spec_boxed("stats", "Statistics",
                         "Frames seen since start: frames, cuda-in-place (read where they lie in CUDA memory), "
                         "cuda-via-host (CUDA memory mapped to the host because the model is on the CPU), "
                         "system-memory; with share-model (CPU): shared-passes and shared-images (the forward "
                         "passes of the shared instance, for every element using it, and the images they ran); "
                         "with precision=int8: int8 (calibrating, int8, or why float32 runs); "
                         "with publish: published (delivered: acknowledged by the broker with "
                         "QoS 1, else written), publish-dropped, publish-queued, publish-offered, "
                         "publish-connected, publish-connects, publish-error",
                         GST_TYPE_STRUCTURE, GParamFlags(G_PARAM_READABLE | G_PARAM_STATIC_STRINGS)));
  g_object_class_install_property(
      gobject_class, PROP_POST_MESSAGES,
      g_param_spec_boolean("post-messages", "Post messages",
                           "Post a 'ptm-classification' element message per frame", d.post_messages, live));
  /**
   * GstPtmInfer:analytics-meta:
   *
   * Also attach each frame's classes as a GstAnalyticsClsMtd in the
   * buffer's GstAnalyticsRelationMeta (GStreamer >= 1.24 builds), where
   * upstream GStreamer's analytics elements and DL Streamer read them:
   * the reported classes best first, label quarks with their scores.
   */
  g_object_class_install_property(
      gobject_class, PROP_ANALYTICS_META,
      g_param_spec_boolean("analytics-meta", "Analytics meta",
                           "Attach each frame's classes as a GstAnalyticsClsMtd in the buffer's analytics relation "
                           "meta (on by default in builds with GStreamer >= 1.24, which have it)",
                           d.analytics, ready));
  /**
   * GstPtmInfer:inference-region:
   *
   * What is classified: the whole frame, or each region a detector upstream
   * attached (roi-list: GstVideoRegionOfInterestMeta, and GstAnalyticsODMtd
   * with GStreamer >= 1.24; a box both describe counts once). Each region is
   * cropped and preprocessed alone with the model's transform, exactly as
   * torchvision would transform that crop; up to batch-size regions run in
   * one forward pass. Results go to each region: a "ptm-classification"
   * parameter on its GstVideoRegionOfInterestMeta (one is added for a
   * region that had none), a GstAnalyticsClsMtd related to its
   * GstAnalyticsODMtd (analytics-meta), a "ptm-region-classification"
   * message, and the JSON line's "regions".
   */
  g_object_class_install_property(
      gobject_class, PROP_INFERENCE_REGION,
      g_param_spec_enum("inference-region", "Inference region",
                        "Classify the whole frame, or each region a detector attached (roi-list; batch-size "
                        "regions per forward pass)",
                        GST_TYPE_PTM_INFERENCE_REGION, d.region, ready));
  g_object_class_install_property(
      gobject_class, PROP_OBJECT_CLASS,
      g_param_spec_string("object-class", "Object class",
                          "roi-list: classify only regions of these types (comma-separated, e.g. face,person: the "
                          "ROI meta's roi-type or the detection's class); empty: every region",
                          nullptr, live));
  g_object_class_install_property(
      gobject_class, PROP_MIN_REGION_SIZE,
      g_param_spec_uint("min-region-size", "Minimum region size",
                        "roi-list: regions narrower or shorter than this (in pixels, after clipping to the frame) "
                        "are not classified",
                        1, 16384, d.min_region_size, live));
  g_object_class_install_property(
      gobject_class, PROP_RECLASSIFY_INTERVAL,
      g_param_spec_uint("reclassify-interval", "Reclassify interval",
                        "roi-list: a tracked object (a detection related to a GstAnalyticsTrackingMtd, GStreamer "
                        ">= 1.24) is classified again every Nth frame and keeps its last result in between "
                        "(marked reused); untracked regions are classified on every frame",
                        1, G_MAXINT, d.reclassify_interval, live));

  /**
   * GstPtmInfer:publish:
   *
   * Sends each frame's results (or each region's, see
   * #GstPtmInfer:publish-per) as a JSON document: to an MQTT broker
   * (`mqtt://[user[:password]@]host[:port]`, port 1883;
   * `mqtts://...` with TLS, port 8883), to a file as JSON lines
   * (`file:///path`, truncated at start) or to stdout. The document is a
   * results-file line plus "element", "stream" and "model".
   *
   * Publishing never holds up the stream: documents wait in a queue of
   * #GstPtmInfer:publish-queue-size while the broker is away or slow (the
   * oldest are dropped when it is full, with one warning per outage); the
   * connection is retried with a backoff from 0.25 s doubling to 8 s, and
   * QoS 1 documents the broker had not acknowledged are sent again. The
   * "stats" property counts what was delivered, dropped and is queued.
   * At stop, queued documents get up to 5 s to reach a connected broker.
   */
  g_object_class_install_property(
      gobject_class, PROP_PUBLISH,
      g_param_spec_string("publish", "Publish",
                          "Send results as JSON documents to mqtt://[user[:password]@]host[:port], "
                          "mqtts://host[:port] (TLS), file:///path (JSON lines) or stdout; never blocks the "
                          "stream (see publish-queue-size and the stats property); empty: nowhere",
                          nullptr, ready));
  g_object_class_install_property(
      gobject_class, PROP_PUBLISH_TOPIC,
      g_param_spec_string("publish-topic", "Publish topic",
                          "MQTT topic of the documents; {element}, {stream} (the stream-id) and {model} (the "
                          "architecture) are replaced, with '/', '+' and '#' in their values made '_'",
                          d.publish_topic.c_str(), ready));
  g_object_class_install_property(
      gobject_class, PROP_PUBLISH_QOS,
      g_param_spec_uint("publish-qos", "Publish QoS",
                        "MQTT quality of service: 0 (at most once) or 1 (at least once: documents the broker did "
                        "not acknowledge are sent again after a reconnect)",
                        0, 1, d.publish_qos, ready));
  g_object_class_install_property(
      gobject_class, PROP_PUBLISH_PER,
      g_param_spec_enum("publish-per", "Publish per",
                        "One document per frame, or per classified region (inference-region=roi-list)",
                        GST_TYPE_PTM_PUBLISH_PER, d.publish_per, ready));
  g_object_class_install_property(
      gobject_class, PROP_PUBLISH_QUEUE_SIZE,
      g_param_spec_uint("publish-queue-size", "Publish queue size",
                        "Documents held while the destination is unreachable or slow; when full the oldest is "
                        "dropped (counted in stats as publish-dropped)",
                        1, 1000000, d.publish_queue_size, ready));
  g_object_class_install_property(
      gobject_class, PROP_PUBLISH_CLIENT_ID,
      g_param_spec_string("publish-client-id", "Publish client id",
                          "MQTT client id; empty: ptm-<process id>-<n>", nullptr, ready));
  g_object_class_install_property(
      gobject_class, PROP_PUBLISH_TLS_CA,
      g_param_spec_string("publish-tls-ca", "Publish TLS CA",
                          "mqtts://: PEM file of the CA that signed the broker's certificate; empty: the system's "
                          "CA store",
                          nullptr, ready));
  g_object_class_install_property(
      gobject_class, PROP_PUBLISH_TLS_CERT,
      g_param_spec_string("publish-tls-cert", "Publish TLS certificate",
                          "mqtts://: PEM client certificate, for brokers that ask for one (with publish-tls-key)",
                          nullptr, ready));
  g_object_class_install_property(
      gobject_class, PROP_PUBLISH_TLS_KEY,
      g_param_spec_string("publish-tls-key", "Publish TLS key", "mqtts://: PEM key of publish-tls-cert", nullptr,
                          ready));

  gst_element_class_set_static_metadata(element_class, "PyTorch classifier", "Filter/Analyzer/Video",
                                        "Classifies frames with a PyTorch image classifier (LibTorch)",
                                        "ptm developers");
  ptm::add_video_pad_templates_with_cuda(element_class);
  element_class->set_context = GST_DEBUG_FUNCPTR(gst_ptm_infer_set_context);

  bt->start = GST_DEBUG_FUNCPTR(gst_ptm_infer_start);
  bt->stop = GST_DEBUG_FUNCPTR(gst_ptm_infer_stop);
  bt->set_caps = GST_DEBUG_FUNCPTR(gst_ptm_infer_set_caps);
  bt->sink_event = GST_DEBUG_FUNCPTR(gst_ptm_infer_sink_event);
  bt->query = GST_DEBUG_FUNCPTR(gst_ptm_infer_query);
  bt->src_event = GST_DEBUG_FUNCPTR(gst_ptm_infer_src_event);
  bt->submit_input_buffer = GST_DEBUG_FUNCPTR(gst_ptm_infer_submit_input_buffer);
  bt->generate_output = GST_DEBUG_FUNCPTR(gst_ptm_infer_generate_output);
  bt->transform_ip = GST_DEBUG_FUNCPTR(gst_ptm_infer_transform_ip);
  bt->passthrough_on_same_caps = FALSE;

  gst_type_mark_as_plugin_api(GST_TYPE_PTM_DEVICE, GstPluginAPIFlags(0));
  gst_type_mark_as_plugin_api(GST_TYPE_PTM_SCORE_OUTPUT, GstPluginAPIFlags(0));
  gst_type_mark_as_plugin_api(GST_TYPE_PTM_PRECISION, GstPluginAPIFlags(0));
  gst_type_mark_as_plugin_api(GST_TYPE_PTM_INFERENCE_REGION, GstPluginAPIFlags(0));
  gst_type_mark_as_plugin_api(GST_TYPE_PTM_PUBLISH_PER, GstPluginAPIFlags(0));
  GST_DEBUG_CATEGORY_INIT(gst_ptm_infer_debug, "ptminfer", 0, "PyTorch classifier");
}
