/**
 * SECTION:element-ptmtrainsink
 * @title: ptmtrainsink
 *
 * Fine-tunes a classifier's head inside a pipeline. Each labelled frame
 * goes through the frozen backbone of #GstPtmTrainSink:model; the pooled
 * features (not the frames) are kept, at most #GstPtmTrainSink:max-samples
 * per class by reservoir sampling, near-duplicates of the previous frame of
 * the same label skipped (#GstPtmTrainSink:min-change). At EOS (or when the
 * "train" action signal is emitted) a new linear head is trained and the
 * full state dict is written to #GstPtmTrainSink:output with torchvision's
 * keys (`torchvision.models.<arch>(num_classes=N).load_state_dict(torch.load(path))`
 * works) with the labels saved inside it (a record torch.load ignores: one
 * rename replaces weights and labels together), plus `<output stem>.labels.txt`
 * beside it for people and other tools; each atomically. Class i is the
 * i-th label in sorted order.
 *
 * Labels: the #GstPtmTrainSink:label property (may change while playing),
 * or a custom downstream event named "ptm-label" with a string field
 * "label" sent by upstream, which sets the label of the frames after it.
 * Frames with an empty label are ignored.
 *
 * Progress is posted as element messages "ptm-training" (epoch, loss,
 * train-accuracy, validation-accuracy) and "ptm-training-done" (output,
 * labels, classes, samples, validation-accuracy, best-epoch).
 *
 * |[
 * gst-launch-1.0 v4l2src ! videoconvert ! ptmtrainsink model=resnet18.pth label=cup output=cup-or-not.pth
 * ]|
 */
#include "gstptmtrainsink.h"

#include <gst/video/video.h>

#include <memory>
#include <mutex>
#include <optional>

#include "gst/ptm/ptmmeta.h"
#include "gstptmutil.h"
#include "train_core.h"

GST_DEBUG_CATEGORY_STATIC(gst_ptm_train_sink_debug);
#define GST_CAT_DEFAULT gst_ptm_train_sink_debug

enum {
  PROP_0,
  PROP_MODEL,
  PROP_ARCHITECTURE,
  PROP_LABEL,
  PROP_OUTPUT,
  PROP_MAX_SAMPLES,
  PROP_MIN_CHANGE,
  PROP_EPOCHS,
  PROP_LEARNING_RATE,
  PROP_BATCH_SIZE,
  PROP_WEIGHT_DECAY,
  PROP_VALIDATION_FRACTION,
  PROP_PATIENCE,
  PROP_SEED,
  PROP_OPTIMIZER,
  PROP_NUM_THREADS,
  PROP_TRAIN_ON_EOS,
  PROP_EXPORT_DIR,
};

enum { SIGNAL_TRAIN, N_SIGNALS };
static guint signals[N_SIGNALS];

#define GST_TYPE_PTM_OPTIMIZER (gst_ptm_optimizer_get_type())
static GType gst_ptm_optimizer_get_type(void) {
  static const GEnumValue values[] = {{int(ptm::OptimizerKind::Adam), "Adam", "adam"},
                                      {int(ptm::OptimizerKind::SGD), "SGD with momentum 0.9", "sgd"},
                                      {0, nullptr, nullptr}};
  static GType type = 0;
  return ptm::enum_type(&type, "GstPtmOptimizer", values);
}

namespace {
struct Settings {
  std::string model, architecture, label, output, export_dir;
  int max_samples = 500, num_threads = 0;
  double min_change = 0.0;
  ptm::TrainSettings train;
  bool train_on_eos = true;
};
struct State {
  std::unique_ptr<ptm::TrainCore> core;
  GstVideoInfo info{};
  bool have_info = false;
  std::string event_label;  // from "ptm-label" events
  bool have_event_label = false;
};
}  // namespace

struct TrainSinkPrivate {
  std::mutex lock;            // settings
  std::mutex state_lock;      // state: streaming thread vs the "train" signal
  Settings settings;
  std::optional<State> state;
};

struct _GstPtmTrainSink {
  GstBaseSink parent;
  TrainSinkPrivate* priv;
};

G_DEFINE_TYPE(GstPtmTrainSink, gst_ptm_train_sink, GST_TYPE_BASE_SINK)
GST_ELEMENT_REGISTER_DEFINE(ptmtrainsink, "ptmtrainsink", GST_RANK_NONE, GST_TYPE_PTM_TRAIN_SINK)

static Settings settings_copy(GstPtmTrainSink* self) {
  std::lock_guard<std::mutex> g(self->priv->lock);
  return self->priv->settings;
}

static void gst_ptm_train_sink_set_property(GObject* object, guint id, const GValue* value, GParamSpec* pspec) {
  auto* self = GST_PTM_TRAIN_SINK(object);
  if (!ptm::settable_now(GST_ELEMENT(self), pspec)) return;
  std::lock_guard<std::mutex> g(self->priv->lock);
  Settings& s = self->priv->settings;
  auto str = [&] { return std::string(g_value_get_string(value) ? g_value_get_string(value) : ""); };
  switch (id) {
    case PROP_MODEL: s.model = str(); break;
    case PROP_ARCHITECTURE: s.architecture = str(); break;
    case PROP_LABEL: s.label = str(); break;
    case PROP_OUTPUT: s.output = str(); break;
    case PROP_MAX_SAMPLES: s.max_samples = g_value_get_int(value); break;
    case PROP_MIN_CHANGE: s.min_change = g_value_get_double(value); break;
    case PROP_EPOCHS: s.train.epochs = g_value_get_int(value); break;
    case PROP_LEARNING_RATE: s.train.learning_rate = g_value_get_double(value); break;
    case PROP_BATCH_SIZE: s.train.batch_size = g_value_get_int(value); break;
    case PROP_WEIGHT_DECAY: s.train.weight_decay = g_value_get_double(value); break;
    case PROP_VALIDATION_FRACTION: s.train.validation_fraction = g_value_get_double(value); break;
    case PROP_PATIENCE: s.train.patience = g_value_get_int(value); break;
    case PROP_SEED: s.train.seed = g_value_get_uint64(value); break;
    case PROP_OPTIMIZER: s.train.optimizer = ptm::OptimizerKind(g_value_get_enum(value)); break;
    case PROP_NUM_THREADS: s.num_threads = g_value_get_int(value); break;
    case PROP_TRAIN_ON_EOS: s.train_on_eos = g_value_get_boolean(value); break;
    case PROP_EXPORT_DIR: s.export_dir = str(); break;
    default: G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec); break;
  }
}

static void gst_ptm_train_sink_get_property(GObject* object, guint id, GValue* value, GParamSpec* pspec) {
  auto* self = GST_PTM_TRAIN_SINK(object);
  std::lock_guard<std::mutex> g(self->priv->lock);
  const Settings& s = self->priv->settings;
  auto str = [&](const std::string& v) { g_value_set_string(value, v.empty() ? nullptr : v.c_str()); };
  switch (id) {
    case PROP_MODEL: str(s.model); break;
    case PROP_ARCHITECTURE: str(s.architecture); break;
    case PROP_LABEL: str(s.label); break;
    case PROP_OUTPUT: str(s.output); break;
    case PROP_MAX_SAMPLES: g_value_set_int(value, s.max_samples); break;
    case PROP_MIN_CHANGE: g_value_set_double(value, s.min_change); break;
    case PROP_EPOCHS: g_value_set_int(value, s.train.epochs); break;
    case PROP_LEARNING_RATE: g_value_set_double(value, s.train.learning_rate); break;
    case PROP_BATCH_SIZE: g_value_set_int(value, s.train.batch_size); break;
    case PROP_WEIGHT_DECAY: g_value_set_double(value, s.train.weight_decay); break;
    case PROP_VALIDATION_FRACTION: g_value_set_double(value, s.train.validation_fraction); break;
    case PROP_PATIENCE: g_value_set_int(value, s.train.patience); break;
    case PROP_SEED: g_value_set_uint64(value, s.train.seed); break;
    case PROP_OPTIMIZER: g_value_set_enum(value, int(s.train.optimizer)); break;
    case PROP_NUM_THREADS: g_value_set_int(value, s.num_threads); break;
    case PROP_TRAIN_ON_EOS: g_value_set_boolean(value, s.train_on_eos); break;
    case PROP_EXPORT_DIR: str(s.export_dir); break;
    default: G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec); break;
  }
}

static gboolean gst_ptm_train_sink_start(GstBaseSink* sink) {
  auto* self = GST_PTM_TRAIN_SINK(sink);
  const Settings s = settings_copy(self);
  if (s.model.empty()) {
    GST_ELEMENT_ERROR(self, RESOURCE, NOT_FOUND, ("No model set: set 'model' to the backbone's weights"), (nullptr));
    return FALSE;
  }
  State st;
  bool ok = false;
  ptm::on_own_thread([&] {  // not on the application's thread (gstptmutil.h)
    ok = ptm::guarded(GST_ELEMENT(self), GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_OPEN_READ,
                      "Could not load model '" + s.model + "'", [&] {
                        ptm::ClassifierOptions o;
                        o.model = s.model;
                        o.architecture = s.architecture;
                        o.threads = s.num_threads;
                        ptm::SampleSettings ss;
                        ss.max_samples = s.max_samples;
                        ss.min_change = s.min_change;
                        ss.seed = s.train.seed;
                        ss.keep_images = !s.export_dir.empty();
                        st.core = std::make_unique<ptm::TrainCore>(o, ss);
                      });
  });
  if (!ok) return FALSE;
  std::lock_guard<std::mutex> g(self->priv->state_lock);
  self->priv->state.emplace(std::move(st));
  return TRUE;
}

static gboolean gst_ptm_train_sink_stop(GstBaseSink* sink) {
  auto* self = GST_PTM_TRAIN_SINK(sink);
  std::lock_guard<std::mutex> g(self->priv->state_lock);
  self->priv->state.reset();
  return TRUE;
}

static gboolean gst_ptm_train_sink_set_caps(GstBaseSink* sink, GstCaps* caps) {
  auto* self = GST_PTM_TRAIN_SINK(sink);
  std::lock_guard<std::mutex> g(self->priv->state_lock);
  if (!self->priv->state || !gst_video_info_from_caps(&self->priv->state->info, caps)) return FALSE;
  self->priv->state->have_info = true;
  return TRUE;
}

// Trains on what was collected; posts progress; false with an element error
// (or only a warning when there is nothing at all to train on).
static bool train_now(GstPtmTrainSink* self) {
  const Settings s = settings_copy(self);
  std::lock_guard<std::mutex> g(self->priv->state_lock);
  if (!self->priv->state) return false;
  ptm::TrainCore& core = *self->priv->state->core;
  if (core.samples() == 0) {
    GST_ELEMENT_WARNING(self, STREAM, FAILED, ("Nothing to train on: no labelled frames were received"),
                        ("set the 'label' property or send 'ptm-label' events"));
    return false;
  }
  ptm::TrainOutcome out;
  auto progress = [&](const ptm::EpochReport& r) {
    GST_INFO_OBJECT(self, "epoch %d: loss %.4f, train %.3f, validation %.3f", r.epoch, r.loss, r.train_accuracy,
                    r.validation_accuracy);
    gst_element_post_message(
        GST_ELEMENT(self),
        gst_message_new_element(GST_OBJECT(self),
                                gst_structure_new("ptm-training", "epoch", G_TYPE_INT, r.epoch, "loss", G_TYPE_DOUBLE,
                                                  r.loss, "train-accuracy", G_TYPE_DOUBLE, r.train_accuracy,
                                                  "validation-accuracy", G_TYPE_DOUBLE, r.validation_accuracy,
                                                  nullptr)));
  };
  if (!ptm::guarded(GST_ELEMENT(self), GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_WRITE,
                    "Training failed (an existing '" + s.output + "' is left as it was)",
                    [&] { out = core.train(s.train, s.output, progress); }))
    return false;
  size_t exported = 0;
  if (!s.export_dir.empty() &&
      !ptm::guarded(GST_ELEMENT(self), GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_WRITE,
                    "Could not export the dataset to '" + s.export_dir + "'",
                    [&] { exported = core.export_dataset(s.export_dir); }))
    return false;
  GValue labels = G_VALUE_INIT;
  gst_value_array_init(&labels, out.labels.size());
  for (const auto& l : out.labels) {
    GValue v = G_VALUE_INIT;
    g_value_init(&v, G_TYPE_STRING);
    g_value_set_string(&v, l.c_str());
    gst_value_array_append_and_take_value(&labels, &v);
  }
  GstStructure* st = gst_structure_new(
      "ptm-training-done", "output", G_TYPE_STRING, out.model_path.c_str(), "labels-file", G_TYPE_STRING,
      out.labels_path.c_str(), "classes", G_TYPE_INT, int(out.labels.size()), "samples", G_TYPE_INT,
      int(out.head.train_samples + out.head.validation_samples), "exported", G_TYPE_INT, int(exported),
      "validation-accuracy", G_TYPE_DOUBLE,
      out.head.validation_accuracy, "best-epoch", G_TYPE_INT, out.head.best_epoch, nullptr);
  gst_structure_take_value(st, "labels", &labels);
  gst_element_post_message(GST_ELEMENT(self), gst_message_new_element(GST_OBJECT(self), st));
  GST_INFO_OBJECT(self, "wrote %s (%zu classes)", out.model_path.c_str(), out.labels.size());
  return true;
}

static GstFlowReturn gst_ptm_train_sink_render(GstBaseSink* sink, GstBuffer* buf) {
  auto* self = GST_PTM_TRAIN_SINK(sink);
  std::string label = settings_copy(self).label;
  std::lock_guard<std::mutex> g(self->priv->state_lock);
  if (!self->priv->state || !self->priv->state->have_info) return GST_FLOW_NOT_NEGOTIATED;
  State& st = *self->priv->state;
  if (st.have_event_label) label = st.event_label;
  if (label.empty()) return GST_FLOW_OK;
  GstVideoFrame frame;
  if (!gst_video_frame_map(&frame, &st.info, buf, GST_MAP_READ)) {
    GST_ELEMENT_ERROR(self, STREAM, FAILED, ("Could not map the video frame"), (nullptr));
    return GST_FLOW_ERROR;
  }
  bool unfit = false;
  const float* tensor = ptm::fitting_tensor(buf, st.core->crop_size(), &unfit);
  const bool ok = ptm::guarded(GST_ELEMENT(self), GST_STREAM_ERROR, GST_STREAM_ERROR_FAILED, "Feature extraction failed",
                               [&] { st.core->add(ptm::frame_view(frame), tensor, label); });
  gst_video_frame_unmap(&frame);
  return ok ? GST_FLOW_OK : GST_FLOW_ERROR;
}

static gboolean gst_ptm_train_sink_event(GstBaseSink* sink, GstEvent* event) {
  auto* self = GST_PTM_TRAIN_SINK(sink);
  if (GST_EVENT_TYPE(event) == GST_EVENT_CUSTOM_DOWNSTREAM) {
    const GstStructure* s = gst_event_get_structure(event);
    if (s && gst_structure_has_name(s, "ptm-label")) {
      const gchar* label = gst_structure_get_string(s, "label");
      std::lock_guard<std::mutex> g(self->priv->state_lock);
      if (self->priv->state) {
        self->priv->state->event_label = label ? label : "";
        self->priv->state->have_event_label = true;
      }
    }
  } else if (GST_EVENT_TYPE(event) == GST_EVENT_EOS && settings_copy(self).train_on_eos) {
    train_now(self);
  }
  return GST_BASE_SINK_CLASS(gst_ptm_train_sink_parent_class)->event(sink, event);
}

// On the emitter's thread, so not there (gstptmutil.h, on_own_thread).
static gboolean gst_ptm_train_sink_train_action(GstPtmTrainSink* self) {
  bool ok = false;
  ptm::on_own_thread([&] { ok = train_now(self); });
  return ok;
}

static void gst_ptm_train_sink_finalize(GObject* object) {
  delete GST_PTM_TRAIN_SINK(object)->priv;
  G_OBJECT_CLASS(gst_ptm_train_sink_parent_class)->finalize(object);
}

static void gst_ptm_train_sink_init(GstPtmTrainSink* self) {
  self->priv = new TrainSinkPrivate();
  gst_base_sink_set_sync(GST_BASE_SINK(self), FALSE);
}

static void gst_ptm_train_sink_class_init(GstPtmTrainSinkClass* klass) {
  GObjectClass* gobject_class = G_OBJECT_CLASS(klass);
  GstElementClass* element_class = GST_ELEMENT_CLASS(klass);
  GstBaseSinkClass* bs = GST_BASE_SINK_CLASS(klass);
  gobject_class->set_property = gst_ptm_train_sink_set_property;
  gobject_class->get_property = gst_ptm_train_sink_get_property;
  gobject_class->finalize = gst_ptm_train_sink_finalize;
  const auto ready = ptm::kParamReady;
  const auto live = ptm::kParamLive;
  g_object_class_install_property(gobject_class, PROP_MODEL,
      g_param_spec_string("model", "Model file", "Weights of the backbone (a built-in architecture with a linear head)",
                          nullptr, ready));
  g_object_class_install_property(gobject_class, PROP_ARCHITECTURE,
      g_param_spec_string("architecture", "Architecture", "torchvision architecture; empty: detected", nullptr, ready));
  g_object_class_install_property(gobject_class, PROP_LABEL,
      g_param_spec_string("label", "Label", "Label of the frames arriving now; empty: frames are ignored", nullptr, live));
  g_object_class_install_property(gobject_class, PROP_OUTPUT,
      g_param_spec_string("output", "Output file",
                          "Where the fine-tuned state dict goes (written atomically, its labels inside), with <stem>.labels.txt beside it",
                          nullptr, live));
  g_object_class_install_property(gobject_class, PROP_MAX_SAMPLES,
      g_param_spec_int("max-samples", "Max samples", "Features kept per class (reservoir sampling beyond)", 1,
                       1000000, 500, ready));
  g_object_class_install_property(gobject_class, PROP_MIN_CHANGE,
      g_param_spec_double("min-change", "Min change",
                          "Skip a frame whose features differ from the previous frame of its label by less than "
                          "this (relative L2 distance); 0: keep every frame",
                          0.0, 10.0, 0.0, ready));
  g_object_class_install_property(gobject_class, PROP_EPOCHS,
      g_param_spec_int("epochs", "Epochs", "Training epochs", 1, 100000, 20, live));
  g_object_class_install_property(gobject_class, PROP_LEARNING_RATE,
      g_param_spec_double("learning-rate", "Learning rate", "Optimizer step size", 1e-9, 100.0, 1e-3, live));
  g_object_class_install_property(gobject_class, PROP_BATCH_SIZE,
      g_param_spec_int("batch-size", "Batch size", "Samples per optimizer step", 1, 65536, 32, live));
  g_object_class_install_property(gobject_class, PROP_WEIGHT_DECAY,
      g_param_spec_double("weight-decay", "Weight decay", "L2 penalty", 0.0, 10.0, 0.0, live));
  g_object_class_install_property(gobject_class, PROP_VALIDATION_FRACTION,
      g_param_spec_double("validation-fraction", "Validation fraction",
                          "Share of each class held out to measure accuracy and stop early", 0.0, 0.9, 0.2, live));
  g_object_class_install_property(gobject_class, PROP_PATIENCE,
      g_param_spec_int("patience", "Patience", "Epochs without validation gain before stopping; 0: run all epochs",
                       0, 100000, 5, live));
  g_object_class_install_property(gobject_class, PROP_SEED,
      g_param_spec_uint64("seed", "Seed", "Seed of sampling, the split, initialisation and shuffling", 0,
                          G_MAXUINT64, 0, ready));
  g_object_class_install_property(gobject_class, PROP_OPTIMIZER,
      g_param_spec_enum("optimizer", "Optimizer", "Optimizer", GST_TYPE_PTM_OPTIMIZER, int(ptm::OptimizerKind::Adam),
                        live));
  g_object_class_install_property(gobject_class, PROP_NUM_THREADS,
      g_param_spec_int("num-threads", "Threads", "CPU threads; 0: every core", 0, 1024, 0, ready));
  g_object_class_install_property(gobject_class, PROP_TRAIN_ON_EOS,
      g_param_spec_boolean("train-on-eos", "Train on EOS", "Train and write the output when the stream ends", TRUE,
                           live));
  g_object_class_install_property(gobject_class, PROP_EXPORT_DIR,
      g_param_spec_string("export-dir", "Export directory",
                          "Also write the kept frames (the model's input crops) as an ImageFolder dataset, "
                          "<dir>/<label>/<n>.jpg, for training elsewhere; empty: off",
                          nullptr, ready));
  /**
   * GstPtmTrainSink::train:
   *
   * Trains on the features collected so far and writes the output now.
   * Returns TRUE when the output was written.
   */
  signals[SIGNAL_TRAIN] = g_signal_new_class_handler(
      "train", G_TYPE_FROM_CLASS(klass), GSignalFlags(G_SIGNAL_RUN_LAST | G_SIGNAL_ACTION),
      G_CALLBACK(gst_ptm_train_sink_train_action), nullptr, nullptr, nullptr, G_TYPE_BOOLEAN, 0);

  gst_element_class_set_static_metadata(element_class, "PyTorch head fine-tuning sink", "Sink/Analyzer/Video",
                                        "Collects labelled frames and fine-tunes a classifier's head",
                                        "ptm developers");
  static GstStaticPadTemplate sink_template = GST_STATIC_PAD_TEMPLATE(
      "sink", GST_PAD_SINK, GST_PAD_ALWAYS, GST_STATIC_CAPS(GST_VIDEO_CAPS_MAKE(PTM_VIDEO_FORMATS)));
  gst_element_class_add_static_pad_template(element_class, &sink_template);
  bs->start = GST_DEBUG_FUNCPTR(gst_ptm_train_sink_start);
  bs->stop = GST_DEBUG_FUNCPTR(gst_ptm_train_sink_stop);
  bs->set_caps = GST_DEBUG_FUNCPTR(gst_ptm_train_sink_set_caps);
  bs->render = GST_DEBUG_FUNCPTR(gst_ptm_train_sink_render);
  bs->event = GST_DEBUG_FUNCPTR(gst_ptm_train_sink_event);
  gst_type_mark_as_plugin_api(GST_TYPE_PTM_OPTIMIZER, GstPluginAPIFlags(0));
  GST_DEBUG_CATEGORY_INIT(gst_ptm_train_sink_debug, "ptmtrainsink", 0, "PyTorch head fine-tuning sink");
}
