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

#include <condition_variable>
#include <deque>
#include <sys/stat.h>
#include <thread>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "gst/ptm/ptmmeta.h"
#include "gstptmcuda.h"
#include "gstptmutil.h"
#include "infer_core.h"

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
  PROP_STATS,
};

typedef enum { PTM_DEVICE_AUTO, PTM_DEVICE_CPU, PTM_DEVICE_CUDA } GstPtmDevice;

#define GST_TYPE_PTM_DEVICE (gst_ptm_device_get_type())
static GType gst_ptm_device_get_type(void) {
  static GType type = 0;
  static const GEnumValue values[] = {
      {PTM_DEVICE_AUTO, "CUDA when available, else CPU", "auto"},
      {PTM_DEVICE_CPU, "CPU", "cpu"},
      {PTM_DEVICE_CUDA, "CUDA GPU 0 (fails at start when CUDA cannot be used)", "cuda"},
      {0, nullptr, nullptr}};
  if (g_once_init_enter(&type)) g_once_init_leave(&type, g_enum_register_static("GstPtmDevice", values));
  return type;
}

#define GST_TYPE_PTM_PRECISION (gst_ptm_precision_get_type())
static GType gst_ptm_precision_get_type(void) {
  static GType type = 0;
  static const GEnumValue values[] = {
      {int(ptm::Precision::Float32), "32-bit float", "fp32"},
      {int(ptm::Precision::Float16), "16-bit float (CUDA)", "fp16"},
      {int(ptm::Precision::BFloat16), "bfloat16 (CUDA)", "bf16"},
      {0, nullptr, nullptr}};
  if (g_once_init_enter(&type)) g_once_init_leave(&type, g_enum_register_static("GstPtmPrecision", values));
  return type;
}

#define GST_TYPE_PTM_SCORE_OUTPUT (gst_ptm_score_output_get_type())
static GType gst_ptm_score_output_get_type(void) {
  static GType type = 0;
  static const GEnumValue values[] = {
      {int(ptm::ScoreOutput::Softmax), "Softmax probabilities (single-label models)", "softmax"},
      {int(ptm::ScoreOutput::Sigmoid), "Per-class sigmoid probabilities (multi-label models)", "sigmoid"},
      {int(ptm::ScoreOutput::Logits), "Raw logits", "logits"},
      {0, nullptr, nullptr}};
  if (g_once_init_enter(&type)) g_once_init_leave(&type, g_enum_register_static("GstPtmScoreOutput", values));
  return type;
}

namespace {

struct Settings {
  std::string model, architecture, checkpoint_key, labels, results_file;
  int num_classes = 0;
  GstPtmDevice device = PTM_DEVICE_AUTO;
  int num_threads = 0;
  guint interval = 1, top_k = 5, hysteresis = 0;
  float threshold = -G_MAXFLOAT;
  ptm::ScoreOutput output = ptm::ScoreOutput::Softmax;
  double smoothing = 0.0;
  bool post_messages = true;
  guint batch_size = 1;
  bool reload_on_change = false;
  ptm::Precision precision = ptm::Precision::Float32;
  bool channels_last = true;
  bool cuda_graphs = false;
  int input_size = 0;
};

// Frames seen, by where they were read from (the "stats" property).
struct Counters {
  guint64 frames = 0, cuda_in_place = 0, cuda_via_host = 0, system_memory = 0;
};

struct State {
  std::unique_ptr<ptm::InferCore> core;
  std::deque<GstBuffer*> pending;  // queued for the current batch, owned
  std::deque<GstBuffer*> ready;    // classified, waiting to be pushed, owned
  ~State() {
    for (GstBuffer* b : pending) gst_buffer_unref(b);
    for (GstBuffer* b : ready) gst_buffer_unref(b);
  }
  State() = default;
  State(State&& o) noexcept = default;
  std::unique_ptr<ptm::ResultsFile> results;
  GstVideoInfo info{};
  bool have_info = false;
  bool cuda_memory = false;  // the caps say memory:CUDAMemory
  bool warned_tensor = false;
  bool warned_host_copy = false;
  size_t batch = 1;
};

}  // namespace

// Identity of a model file, to notice replacements (reload-on-change).
struct FileStamp {
  dev_t dev = 0;
  ino_t ino = 0;
  off_t size = 0;
  int64_t mtime_ns = 0;
  bool operator==(const FileStamp& o) const {
    return dev == o.dev && ino == o.ino && size == o.size && mtime_ns == o.mtime_ns;
  }
};

static FileStamp stamp_of(const std::string& path) {
  struct stat st {};
  FileStamp f;
  if (::stat(path.c_str(), &st) == 0) {
    f.dev = st.st_dev;
    f.ino = st.st_ino;
    f.size = st.st_size;
    f.mtime_ns = int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  }
  return f;
}

struct Private {
  std::mutex lock;  // guards settings
  Settings settings;
  std::optional<State> state;  // built in start(), dropped in stop()

  // Live reload: one loader thread, started at the first request, loads the
  // requested model in the background (a request not yet started is
  // replaced by a newer one); the streaming thread swaps a loaded model in
  // between two buffers and never waits for a load.
  std::mutex reload_lock;  // guards state's presence and everything below
  std::condition_variable reload_wake;
  std::thread loader;
  std::optional<Settings> request;
  bool loader_quit = false;
  std::unique_ptr<ptm::InferCore> next_core;
  std::string watched;     // the file reload-on-change compares
  FileStamp loaded_stamp;  // its version last loaded, or being loaded
  gint64 last_check_us = 0;

  ptm::CudaLink cuda;  // the CUDA context shared with neighbours
  std::mutex stats_lock;
  Counters counters;
};

struct _GstPtmInfer {
  GstBaseTransform parent;
  Private* priv;
};

G_DEFINE_TYPE(GstPtmInfer, gst_ptm_infer, GST_TYPE_BASE_TRANSFORM)
GST_ELEMENT_REGISTER_DEFINE(ptminfer, "ptminfer", GST_RANK_NONE, GST_TYPE_PTM_INFER)

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
static void post_loaded(GstPtmInfer* self, const std::string& model, const ptm::ModelInfo& m) {
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
                            G_TYPE_STRING, report.c_str(), nullptr)));
}

// The loader thread: loads what is requested; on success the model waits in
// next_core for the streaming thread, on failure the old model keeps serving.
static void loader_main(GstPtmInfer* self) {
  Private& p = *self->priv;
  std::unique_lock<std::mutex> g(p.reload_lock);
  for (;;) {
    p.reload_wake.wait(g, [&] { return p.loader_quit || p.request; });
    if (p.loader_quit) return;
    const Settings s = std::move(*p.request);
    p.request.reset();
    if (p.watched == s.model) p.loaded_stamp = stamp_of(s.model);  // the version read now
    g.unlock();
    std::unique_ptr<ptm::InferCore> core;
    std::string error;
    try {
      // Runs at its own input size, or at input-size when set (the
      // constructor refuses a model that cannot); upstream tensors are
      // followed again after the swap.
      core = std::make_unique<ptm::InferCore>(model_settings(s));
    } catch (const std::exception& e) {
      error = e.what();
    }
    std::optional<ptm::ModelInfo> loaded;
    if (core) {
      loaded = core->info();  // the core itself is the streaming thread's once handed over
      GST_INFO_OBJECT(self, "loaded %s; it takes over at the next frame", s.model.c_str());
    } else {
      GST_ELEMENT_WARNING(self, RESOURCE, OPEN_READ,
                          ("Could not reload model '%s'; the previous model keeps running", s.model.c_str()),
                          ("%s", error.c_str()));
    }
    g.lock();
    if (p.loader_quit) return;  // stopping: the element no longer runs a model
    if (core) p.next_core = std::move(core);  // replaces one loaded but not yet taken
    g.unlock();
    if (loaded) post_loaded(self, s.model, *loaded);
    post_reload(self, s.model, error.empty(), error);
    g.lock();
  }
}

// Asks the loader thread for a model with these settings; returns at once.
static void request_reload(GstPtmInfer* self, const Settings& s) {
  Private& p = *self->priv;
  std::lock_guard<std::mutex> g(p.reload_lock);
  if (!p.state) return;  // not running: start() loads it
  p.request = s;
  if (!p.loader.joinable()) p.loader = std::thread(loader_main, self);
  p.reload_wake.notify_one();
}

// Stops the loader thread, waiting for a load in progress.
static void stop_loader(Private& p) {
  std::thread t;
  {
    std::lock_guard<std::mutex> g(p.reload_lock);
    p.loader_quit = true;
    p.request.reset();
    t = std::move(p.loader);
  }
  p.reload_wake.notify_all();
  if (t.joinable()) t.join();
  std::lock_guard<std::mutex> g(p.reload_lock);
  p.loader_quit = false;
  p.next_core.reset();
}

static bool classify_pending(GstPtmInfer* self, State& st);

// Streaming thread, before each buffer: adopt a freshly loaded model, and
// with reload-on-change look for a replaced file (twice a second at most).
static void maybe_swap(GstPtmInfer* self, State& st, const Settings& s) {
  Private& p = *self->priv;
  if (s.reload_on_change) {
    const gint64 now = g_get_monotonic_time();
    if (now - p.last_check_us > 500000) {
      p.last_check_us = now;
      const FileStamp current = stamp_of(s.model);
      bool changed;
      {
        std::lock_guard<std::mutex> g(p.reload_lock);
        // A model set while playing is watched from its request on, so it
        // is not loaded twice.
        changed = p.watched == s.model && !(current == p.loaded_stamp) && current.size > 0;
        if (changed) p.loaded_stamp = current;
      }
      if (changed) {
        GST_INFO_OBJECT(self, "%s changed on disk: reloading", s.model.c_str());
        request_reload(self, s);
      }
    }
  }
  std::unique_ptr<ptm::InferCore> next;
  {
    std::lock_guard<std::mutex> g(p.reload_lock);
    next = std::move(p.next_core);
  }
  if (next) {
    classify_pending(self, st);  // a batch in progress finishes with the old model
    next->set_next_frame(st.core->next_frame());
    std::lock_guard<std::mutex> g(p.reload_lock);
    st.core = std::move(next);
    st.warned_tensor = false;
  }
}

static void gst_ptm_infer_set_property(GObject* object, guint id, const GValue* value, GParamSpec* pspec) {
  auto* self = GST_PTM_INFER(object);
  // Model-defining properties take effect at the next start.
  if (playing_or_paused(self) && (id == PROP_MODEL || id == PROP_LABELS)) {
    // A new model (or labels) while running: load it in the background.
    const std::string v = g_value_get_string(value) ? g_value_get_string(value) : "";
    if (id == PROP_MODEL) {
      std::lock_guard<std::mutex> g(self->priv->reload_lock);
      self->priv->watched = v;
      self->priv->loaded_stamp = stamp_of(v);
    }
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
    case PROP_TOP_K: s.top_k = g_value_get_uint(value); break;
    case PROP_THRESHOLD: s.threshold = g_value_get_float(value); break;
    case PROP_OUTPUT: s.output = ptm::ScoreOutput(g_value_get_enum(value)); break;
    case PROP_SMOOTHING: s.smoothing = g_value_get_double(value); break;
    case PROP_HYSTERESIS: s.hysteresis = g_value_get_uint(value); break;
    case PROP_RESULTS_FILE: s.results_file = str(value); break;
    case PROP_POST_MESSAGES: s.post_messages = g_value_get_boolean(value); break;
    case PROP_BATCH_SIZE: s.batch_size = g_value_get_uint(value); break;
    case PROP_RELOAD_ON_CHANGE: s.reload_on_change = g_value_get_boolean(value); break;
    case PROP_PRECISION: s.precision = ptm::Precision(g_value_get_enum(value)); break;
    case PROP_CHANNELS_LAST: s.channels_last = g_value_get_boolean(value); break;
    case PROP_CUDA_GRAPHS: s.cuda_graphs = g_value_get_boolean(value); break;
    case PROP_INPUT_SIZE: s.input_size = g_value_get_int(value); break;
    default: G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec); break;
  }
}

static void gst_ptm_infer_get_property(GObject* object, guint id, GValue* value, GParamSpec* pspec) {
  auto* self = GST_PTM_INFER(object);
  if (id == PROP_STATS) {
    Counters c;
    {
      std::lock_guard<std::mutex> g(self->priv->stats_lock);
      c = self->priv->counters;
    }
    g_value_take_boxed(value, gst_structure_new("ptm-infer-stats", "frames", G_TYPE_UINT64, c.frames,
                                                "cuda-in-place", G_TYPE_UINT64, c.cuda_in_place, "cuda-via-host",
                                                G_TYPE_UINT64, c.cuda_via_host, "system-memory", G_TYPE_UINT64,
                                                c.system_memory, nullptr));
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
    case PROP_TOP_K: g_value_set_uint(value, s.top_k); break;
    case PROP_THRESHOLD: g_value_set_float(value, s.threshold); break;
    case PROP_OUTPUT: g_value_set_enum(value, int(s.output)); break;
    case PROP_SMOOTHING: g_value_set_double(value, s.smoothing); break;
    case PROP_HYSTERESIS: g_value_set_uint(value, s.hysteresis); break;
    case PROP_RESULTS_FILE: str(s.results_file); break;
    case PROP_POST_MESSAGES: g_value_set_boolean(value, s.post_messages); break;
    case PROP_BATCH_SIZE: g_value_set_uint(value, s.batch_size); break;
    case PROP_RELOAD_ON_CHANGE: g_value_set_boolean(value, s.reload_on_change); break;
    case PROP_PRECISION: g_value_set_enum(value, int(s.precision)); break;
    case PROP_CHANNELS_LAST: g_value_set_boolean(value, s.channels_last); break;
    case PROP_CUDA_GRAPHS: g_value_set_boolean(value, s.cuda_graphs); break;
    case PROP_INPUT_SIZE: g_value_set_int(value, s.input_size); break;
    default: G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec); break;
  }
}

static ptm::InferSettings scoring_of(const Settings& s) {
  ptm::InferSettings is;
  is.top_k = int(s.top_k);
  is.threshold = s.threshold;
  is.output = s.output;
  is.interval = int(s.interval);
  is.smoothing = s.smoothing;
  is.hysteresis = int(s.hysteresis);
  return is;
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
  }
  const FileStamp stamp = stamp_of(s.model);
  State st;
  const bool ok = ptm::guarded(GST_ELEMENT(self), GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_OPEN_READ,
                               "Could not load model '" + s.model + "'",
                               [&] { st.core = std::make_unique<ptm::InferCore>(model_settings(s)); });
  if (!ok) return FALSE;
  if (!s.results_file.empty() &&
      !ptm::guarded(GST_ELEMENT(self), GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_OPEN_WRITE,
                    "Could not open results file '" + s.results_file + "'",
                    [&] { st.results = std::make_unique<ptm::ResultsFile>(s.results_file); }))
    return FALSE;
  st.batch = std::max<guint>(1, s.batch_size);
  const ptm::ModelInfo& m = st.core->info();
  GST_INFO_OBJECT(self, "loaded %s: %s, %" G_GINT64_FORMAT " classes, %s, input %dx%d, on %s", s.model.c_str(),
                  m.architecture.c_str(), m.num_classes, m.format.c_str(), m.crop_size, m.crop_size,
                  st.core->on_cuda() ? "CUDA" : "CPU");
  post_loaded(self, s.model, m);
  std::lock_guard<std::mutex> g(self->priv->reload_lock);
  self->priv->watched = s.model;
  self->priv->loaded_stamp = stamp;
  self->priv->state.emplace(std::move(st));
  return TRUE;
}

static gboolean gst_ptm_infer_stop(GstBaseTransform* trans) {
  Private& p = *GST_PTM_INFER(trans)->priv;
  {
    std::lock_guard<std::mutex> g(p.reload_lock);
    p.state.reset();  // no new requests from here on
  }
  stop_loader(p);
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
    case GST_EVENT_FLUSH_STOP:
      if (self->priv->state) {
        State& st = *self->priv->state;
        for (GstBuffer* b : st.pending) gst_buffer_unref(b);
        for (GstBuffer* b : st.ready) gst_buffer_unref(b);
        st.pending.clear();
        st.ready.clear();
        st.core->reset();
      }
      break;
    case GST_EVENT_EOS:
    case GST_EVENT_CAPS:
    case GST_EVENT_SEGMENT:
      // Frames of a batch in progress go out before the stream changes.
      drain(self);
      break;
    default:
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
      if (!self->priv->state) return FALSE;
      const ptm::PreprocessConfig c = self->priv->state->core->preprocess_config();
      gst_structure_set(s, "resize", G_TYPE_INT, c.resize_size, "size", G_TYPE_INT, c.crop_width, "bicubic",
                        G_TYPE_BOOLEAN, c.filter == ptm::Filter::Bicubic, "model", G_TYPE_STRING,
                        self->priv->state->core->info().architecture.c_str(), "stretch", G_TYPE_BOOLEAN,
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
  return GST_BASE_TRANSFORM_CLASS(gst_ptm_infer_parent_class)->query(trans, dir, query);
}

static void post_result(GstPtmInfer* self, GstBuffer* buf, const ptm::FrameResult& r, const std::string& model) {
  GValue ids = G_VALUE_INIT, labels = G_VALUE_INIT, scores = G_VALUE_INIT;
  gst_value_array_init(&ids, r.top.size());
  gst_value_array_init(&labels, r.top.size());
  gst_value_array_init(&scores, r.top.size());
  for (size_t i = 0; i < r.top.size(); ++i) {
    GValue v = G_VALUE_INIT;
    g_value_init(&v, G_TYPE_INT);
    g_value_set_int(&v, int(r.top[i].index));
    gst_value_array_append_and_take_value(&ids, &v);
    g_value_init(&v, G_TYPE_STRING);
    g_value_set_string(&v, r.labels[i].c_str());
    gst_value_array_append_and_take_value(&labels, &v);
    g_value_init(&v, G_TYPE_FLOAT);
    g_value_set_float(&v, r.top[i].score);
    gst_value_array_append_and_take_value(&scores, &v);
  }
  GstStructure* s = gst_structure_new("ptm-classification", "frame", G_TYPE_UINT64, r.frame, "pts", G_TYPE_UINT64,
                                      GST_BUFFER_PTS(buf), "model", G_TYPE_STRING, model.c_str(), "reused",
                                      G_TYPE_BOOLEAN, r.reused, "inference-ns", G_TYPE_UINT64, r.inference_ns,
                                      "top-label", G_TYPE_STRING, r.top.empty() ? "" : r.labels[0].c_str(),
                                      "top-score", G_TYPE_DOUBLE, r.top.empty() ? 0.0 : double(r.top[0].score),
                                      nullptr);
  gst_structure_take_value(s, "class-ids", &ids);
  gst_structure_take_value(s, "labels", &labels);
  gst_structure_take_value(s, "scores", &scores);
  gst_element_post_message(GST_ELEMENT(self), gst_message_new_element(GST_OBJECT(self), s));
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
    why = st.core->set_input_size(int(tm->width));
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

// Maps the frame and queues it in the core (preprocessed, or its tensor
// meta copied when it fits the model).
static bool queue_buffer(GstPtmInfer* self, State& st, const Settings& s, GstBuffer* buf) {
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
    const bool ok = ptm::guarded(GST_ELEMENT(self), GST_STREAM_ERROR, GST_STREAM_ERROR_FAILED, "Preprocessing failed",
                                 [&] { st.core->queue_device(view, tensor); });
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
  const bool ok = ptm::guarded(GST_ELEMENT(self), GST_STREAM_ERROR, GST_STREAM_ERROR_FAILED, "Preprocessing failed",
                               [&] { st.core->queue(ptm::frame_view(frame), tensor); });
  gst_video_frame_unmap(&frame);
  return ok;
}

// Attaches the result to the (writable) buffer, posts it, writes its JSON line.
static bool publish(GstPtmInfer* self, State& st, const Settings& s, GstBuffer* buf, const ptm::FrameResult& r) {
  std::vector<gint> ids;
  std::vector<gfloat> scores;
  std::vector<const gchar*> labels;
  for (size_t i = 0; i < r.top.size(); ++i) {
    ids.push_back(gint(r.top[i].index));
    scores.push_back(r.top[i].score);
    labels.push_back(r.labels[i].c_str());
  }
  const std::string& model = st.core->info().architecture;
  gst_buffer_add_ptm_classification_meta(buf, guint(ids.size()), ids.data(), scores.data(), labels.data(),
                                         model.c_str(), r.inference_ns, r.frame, r.reused);
  if (s.post_messages) post_result(self, buf, r, model);
  return !st.results ||
         ptm::guarded(GST_ELEMENT(self), GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_WRITE, "Could not write results", [&] {
           st.results->write(GST_BUFFER_PTS_IS_VALID(buf) ? int64_t(GST_BUFFER_PTS(buf)) : -1, r);
         });
}

// Runs the model on the queued frames; their buffers move to `ready`.
static bool classify_pending(GstPtmInfer* self, State& st) {
  if (st.pending.empty()) return true;
  const Settings s = settings_copy(self);
  st.core->update_scoring(scoring_of(s));
  std::vector<ptm::FrameResult> results;
  if (!ptm::guarded(GST_ELEMENT(self), GST_STREAM_ERROR, GST_STREAM_ERROR_FAILED, "Inference failed",
                    [&] { results = st.core->flush(); }))
    return false;
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

// Batch size 1: classify each buffer in place.
static GstFlowReturn gst_ptm_infer_transform_ip(GstBaseTransform* trans, GstBuffer* buf) {
  auto* self = GST_PTM_INFER(trans);
  if (!self->priv->state || !self->priv->state->have_info) return GST_FLOW_NOT_NEGOTIATED;
  State& st = *self->priv->state;
  const Settings s = settings_copy(self);
  maybe_swap(self, st, s);
  if (!follow_upstream_size(self, st, s, buf) || !queue_buffer(self, st, s, buf)) return GST_FLOW_ERROR;
  std::vector<ptm::FrameResult> r;
  if (!ptm::guarded(GST_ELEMENT(self), GST_STREAM_ERROR, GST_STREAM_ERROR_FAILED, "Inference failed",
                    [&] { r = st.core->flush(); }))
    return GST_FLOW_ERROR;
  return publish(self, st, s, buf, r.front()) ? GST_FLOW_OK : GST_FLOW_ERROR;
}

// Batch size > 1: frames wait until `batch-size` of them are queued (or
// EOS, a caps change or a drain query), then run as one batch.
static GstFlowReturn gst_ptm_infer_submit_input_buffer(GstBaseTransform* trans, gboolean discont, GstBuffer* buf) {
  auto* self = GST_PTM_INFER(trans);
  if (!self->priv->state || self->priv->state->batch <= 1)
    return GST_BASE_TRANSFORM_CLASS(gst_ptm_infer_parent_class)->submit_input_buffer(trans, discont, buf);
  State& st = *self->priv->state;
  if (!st.have_info) {
    gst_buffer_unref(buf);
    return GST_FLOW_NOT_NEGOTIATED;
  }
  const Settings s = settings_copy(self);
  maybe_swap(self, st, s);
  if (!follow_upstream_size(self, st, s, buf)) {
    gst_buffer_unref(buf);
    return GST_FLOW_ERROR;
  }
  st.pending.push_back(buf);
  if (!queue_buffer(self, st, s, buf)) return GST_FLOW_ERROR;
  if (st.pending.size() >= st.batch && !classify_pending(self, st)) return GST_FLOW_ERROR;
  return GST_FLOW_OK;
}

static GstFlowReturn gst_ptm_infer_generate_output(GstBaseTransform* trans, GstBuffer** out) {
  auto* self = GST_PTM_INFER(trans);
  if (!self->priv->state || self->priv->state->batch <= 1)
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
  stop_loader(*p);
  delete p;
  G_OBJECT_CLASS(gst_ptm_infer_parent_class)->finalize(object);
}

static void gst_ptm_infer_init(GstPtmInfer* self) {
  self->priv = new Private();
  gst_base_transform_set_in_place(GST_BASE_TRANSFORM(self), TRUE);
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
                          "Text file with one label per line; empty: <model stem>.labels.txt when it exists "
                          "(ptmtrainsink writes one), else ImageNet names for 1000-class models, else 'class N'. "
                          "Set while playing, the model reloads with these labels",
                          nullptr, live));
  g_object_class_install_property(
      gobject_class, PROP_NUM_CLASSES,
      g_param_spec_int("num-classes", "Number of classes",
                       "Classes of the model; 0: as in the file. Another count keeps the backbone and starts "
                       "a new, untrained head",
                       0, 1 << 20, 0, ready));
  g_object_class_install_property(
      gobject_class, PROP_DEVICE,
      g_param_spec_enum("device", "Device", "Where the model runs", GST_TYPE_PTM_DEVICE, PTM_DEVICE_AUTO, ready));
  g_object_class_install_property(
      gobject_class, PROP_NUM_THREADS,
      g_param_spec_int("num-threads", "Threads", "CPU threads for inference; 0: every core", 0, 1024, 0, ready));
  g_object_class_install_property(
      gobject_class, PROP_INTERVAL,
      g_param_spec_uint("interval", "Interval",
                        "Run the model on every Nth frame; frames in between carry the last result "
                        "(marked reused)",
                        1, G_MAXINT, 1, live));
  g_object_class_install_property(
      gobject_class, PROP_TOP_K,
      g_param_spec_uint("top-k", "Top k", "Number of classes reported per frame", 1, 1000, 5, live));
  g_object_class_install_property(
      gobject_class, PROP_THRESHOLD,
      g_param_spec_float("threshold", "Threshold",
                         "Classes scoring below this are not reported (e.g. 0.5 with sigmoid output); "
                         "default: every top-k class",
                         -G_MAXFLOAT, G_MAXFLOAT, -G_MAXFLOAT, live));
  g_object_class_install_property(
      gobject_class, PROP_OUTPUT,
      g_param_spec_enum("output", "Scores", "How logits become scores", GST_TYPE_PTM_SCORE_OUTPUT,
                        int(ptm::ScoreOutput::Softmax), live));
  g_object_class_install_property(
      gobject_class, PROP_SMOOTHING,
      g_param_spec_double("smoothing", "Smoothing",
                          "Weight of past scores in an exponential moving average over inferred frames; "
                          "0: off",
                          0.0, 0.999, 0.0, live));
  g_object_class_install_property(
      gobject_class, PROP_HYSTERESIS,
      g_param_spec_uint("hysteresis", "Hysteresis",
                        "Inferred frames a new top class must lead before it is reported first; 0: off", 0,
                        10000, 0, live));
  g_object_class_install_property(
      gobject_class, PROP_RESULTS_FILE,
      g_param_spec_string("results-file", "Results file",
                          "Write one JSON line per frame here (pts, frame, reused, inference_ms, results)",
                          nullptr, ready));
  g_object_class_install_property(
      gobject_class, PROP_BATCH_SIZE,
      g_param_spec_uint("batch-size", "Batch size",
                        "Frames classified together in one forward pass (batched in time: a frame waits until "
                        "the batch is full, EOS or a caps change); results equal batch size 1",
                        1, 256, 1, ready));
  g_object_class_install_property(
      gobject_class, PROP_RELOAD_ON_CHANGE,
      g_param_spec_boolean("reload-on-change", "Reload on change",
                           "Reload the model when its file is replaced (checked twice a second), e.g. by "
                           "ptmtrainsink writing new weights",
                           FALSE, live));
  /**
   * GstPtmInfer:precision:
   *
   * Number format of the model on a CUDA device. fp16 and bf16 use the
   * GPU's tensor cores; the CPU runs fp32.
   */
  g_object_class_install_property(
      gobject_class, PROP_PRECISION,
      g_param_spec_enum("precision", "Precision", "Number format of the model (fp16/bf16: CUDA only)",
                        GST_TYPE_PTM_PRECISION, int(ptm::Precision::Float32), ready));
  g_object_class_install_property(
      gobject_class, PROP_CHANNELS_LAST,
      g_param_spec_boolean("channels-last", "Channels last",
                           "On CUDA: run the model in NHWC (channels-last) memory format, which tensor cores "
                           "prefer; the preprocessing kernel writes that layout directly",
                           TRUE, ready));
  g_object_class_install_property(
      gobject_class, PROP_CUDA_GRAPHS,
      g_param_spec_boolean("cuda-graphs", "CUDA graphs",
                           "On CUDA: capture the forward pass once per batch size and replay it (less launch "
                           "overhead for small models and batches); falls back to plain runs if capture fails",
                           FALSE, ready));
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
                       0, 4096, 0, ready));
  g_object_class_install_property(
      gobject_class, PROP_STATS,
      g_param_spec_boxed("stats", "Statistics",
                         "Frames seen since start: frames, cuda-in-place (read where they lie in CUDA memory), "
                         "cuda-via-host (CUDA memory mapped to the host because the model is on the CPU), "
                         "system-memory",
                         GST_TYPE_STRUCTURE, GParamFlags(G_PARAM_READABLE | G_PARAM_STATIC_STRINGS)));
  g_object_class_install_property(
      gobject_class, PROP_POST_MESSAGES,
      g_param_spec_boolean("post-messages", "Post messages",
                           "Post a 'ptm-classification' element message per frame", TRUE, live));

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
  bt->submit_input_buffer = GST_DEBUG_FUNCPTR(gst_ptm_infer_submit_input_buffer);
  bt->generate_output = GST_DEBUG_FUNCPTR(gst_ptm_infer_generate_output);
  bt->transform_ip = GST_DEBUG_FUNCPTR(gst_ptm_infer_transform_ip);
  bt->passthrough_on_same_caps = FALSE;

  gst_type_mark_as_plugin_api(GST_TYPE_PTM_DEVICE, GstPluginAPIFlags(0));
  gst_type_mark_as_plugin_api(GST_TYPE_PTM_SCORE_OUTPUT, GstPluginAPIFlags(0));
  gst_type_mark_as_plugin_api(GST_TYPE_PTM_PRECISION, GstPluginAPIFlags(0));
  GST_DEBUG_CATEGORY_INIT(gst_ptm_infer_debug, "ptminfer", 0, "PyTorch classifier");
}
