// ptminfer's GStreamer-free core: model + preprocessing + scoring, top-k,
// thresholds, temporal smoothing and the interval logic, on plain frames.
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "models/classifier.h"
#include "preprocess_core.h"
#include "scoring.h"
#include "shared_model.h"

namespace ptm {

// The scoring fields (scoring.h) and what defines the model and the pace.
struct InferSettings : ScoringSettings {
  ClassifierOptions model;
  int interval = 1;  // run the model on every Nth frame
  // Share the loaded model with every other core in this process asking for
  // the same one (shared_model.h): weights once, forward passes on the
  // model's thread, batched across cores. CPU models only; a CUDA model
  // is always a core's own (its frames are written straight into its input).
  bool share = false;
};

struct FrameResult {
  std::vector<Prediction> top;     // best first
  std::vector<std::string> labels; // of `top`
  bool reused = false;             // carried over (interval)
  uint64_t inference_ns = 0;
  uint64_t frame = 0;
};

// One region of a frame (a detector's box) and its classes.
struct RegionResult {
  Region box;
  std::string type;  // the detector's class of the region; "" when unnamed
  FrameResult result;
  // Where it came from, for the element: its GstVideoRegionOfInterestMeta
  // (or nullptr) and its GstAnalyticsODMtd id (or -1).
  void* roi = nullptr;
  int od_id = -1;
  int64_t track_id = -1;  // the tracker's object id (GstAnalyticsTrackingMtd), or -1
};

// torchvision's eval transform for a model (size, resize, interpolation).
PreprocessConfig preprocess_config_for(const ModelInfo& m);

// `o` with a reader for its int8 calibration folder (when it names one):
// images decoded by OpenCV (where this build has its imgcodecs),
// preprocessed as the model's eval transform (what ptmpreprocess makes for
// it by default).
ClassifierOptions with_calibration_reader(ClassifierOptions o);

class InferCore {
 public:
  // Loads the model (or takes the shared one); throws ModelError.
  explicit InferCore(const InferSettings& s);
  const ModelInfo& info() const { return shared_ ? shared_->info() : classifier_->info(); }
  const InferSettings& settings() const { return settings_; }
  // precision=int8: Classifier::int8_status ("" otherwise). Thread-safe.
  std::string int8_status() const { return shared_ ? shared_->int8_status() : classifier_->int8_status(); }
  // The preprocessing that reproduces torchvision's eval transform for this model.
  PreprocessConfig preprocess_config() const;
  // Runs the model at `size` x `size` from now on (Classifier::set_input_size;
  // the preprocessing follows). Only between batches: nothing may be queued.
  // Returns "" on success, else why not.
  std::string set_input_size(int size);

  // One frame: `tensor` (3 x crop x crop floats) when an upstream
  // ptmpreprocess made one that fits, else the frame is preprocessed here.
  FrameResult process(const FrameView& frame, const float* tensor);

  // Batching in time: queue() takes frames (preprocessed at once, so the
  // frame need not outlive the call); flush() runs the model once on every
  // queued frame that needs inference and returns all results in order;
  // where it throws, the queued frames are dropped with it.
  // `until_flush`: the frame's memory (and `tensor`) stay valid until the
  // next flush() returns; a shared model's thread then preprocesses it
  // within its pass, split across the model's threads, instead of this
  // thread alone (process() does so).
  void queue(const FrameView& frame, const float* tensor, bool until_flush = false);
  // The same for a frame in CUDA memory (device pointers) and a model on
  // that device: the fused kernel writes it straight into the model input.
  // `device_tensor`: a fitting tensor already in device memory, or nullptr.
  // Throws std::runtime_error when this build or model has no CUDA.
  void queue_device(const FrameView& frame, const float* device_tensor);
  bool on_cuda() const { return classifier_ && classifier_->on_cuda(); }
  int cuda_device() const { return classifier_ ? classifier_->cuda_device() : -1; }  // -1 on the CPU
  // The shared model this core runs on (share), or nullptr.
  const std::shared_ptr<SharedModel>& shared() const { return shared_; }
  // True when the shared model was already loaded (nothing was read).
  bool took_loaded_model() const { return took_loaded_; }
  std::vector<FrameResult> flush();
  // Regions of one frame (a detector's boxes), each cropped and preprocessed
  // alone, run in batches of up to `max_batch`: one result per region, in
  // order. Scored without smoothing or hysteresis (those follow whole
  // frames); counts as one frame. Nothing may be queued. Throws
  // std::invalid_argument for a region outside the frame.
  std::vector<FrameResult> classify_regions(const FrameView& frame, const std::vector<Region>& regions,
                                            int max_batch = 16);
  size_t queued() const { return pending_.size(); }
  void drop_queued();

  // Scores one frame's logits: output function, smoothing, top-k,
  // hysteresis, threshold (what flush() does per inferred frame).
  FrameResult rank(std::vector<float> logits, uint64_t inference_ns = 0) { return score(std::move(logits), inference_ns); }
  void reset();  // new segment / flush: frame count and smoothing restart
  // Frame numbering continues across a model swap.
  uint64_t next_frame() const { return frame_; }
  void set_next_frame(uint64_t f) { frame_ = f; }
  // Changes top_k, threshold, output, interval, smoothing and hysteresis
  // (the fields that may change while frames flow); the model stays.
  void update_scoring(const InferSettings& s);

 private:
  FrameResult score(std::vector<float> logits, uint64_t ns);
  FrameResult labelled(std::vector<Prediction> top, uint64_t ns) const;

  struct Pending {
    uint64_t frame;
    bool infer;  // else the result of the latest inferred frame is reused
  };

  struct Gpu;
  struct GpuDeleter {
    void operator()(Gpu* g) const;
  };

  // Image `slot` of the model input from a frame (or a fitting tensor);
  // `until_flush` as queue()'s.
  void write_image(int64_t slot, const FrameView& frame, const float* tensor, bool until_flush = false);
  // Runs images [0, n) of the model input (Classifier::run_input), or the
  // n queued (staging_, deferred_) through the shared model (all logits);
  // returns the nanoseconds the shared model's thread spent preprocessing
  // them (not the model's time).
  uint64_t run_queued(int64_t n, int k, int fn, std::vector<float>& scores, std::vector<int64_t>& indices);
  // The next model input slot; returns its index.
  int64_t next_slot(bool* infer);
  // A preprocessor for the model's input size, on the model's threads
  // (sets preprocess_threads_).
  Preprocessor make_preprocessor();

  InferSettings settings_;
  bool took_loaded_ = false;  // before shared_: its initialiser sets it
  // The model: a shared one (settings_.share on the CPU), else its own.
  std::shared_ptr<SharedModel> shared_;
  std::unique_ptr<Classifier> classifier_;
  std::unique_ptr<Gpu, GpuDeleter> gpu_;
  int preprocess_threads_ = 1;  // before preprocessor_: make_preprocessor sets it
  Preprocessor preprocessor_;
  Scorer scorer_;
  // One image on its way to a model on the GPU; the queued images for a
  // shared model.
  std::vector<float> staging_;
  // A shared model's queued images that its thread preprocesses (frame
  // set) or copies (tensor set) in its pass; the others are in staging_.
  struct Deferred {
    FrameView frame;
    const float* tensor = nullptr;
    bool deferred = false;
  };
  std::vector<Deferred> deferred_;
  std::vector<Pending> pending_;
  size_t batched_ = 0;  // images written into the model input
  FrameResult last_;
  uint64_t frame_ = 0;
  bool have_last_ = false;
};

// JSON lines: one object per frame {"pts":..,"frame":..,"reused":..,
// "inference_ms":..,"results":[{"class":..,"label":..,"score":..}]}, and
// "regions" when regions were classified.
// Where a published document comes from (ptminfer's publish property).
struct DocumentSource {
  std::string element, stream, model;
};

// A frame's results as one JSON object, as a results-file line holds it:
// pts (null when none), frame, reused, inference_ms, results [{class,
// label, score}], and with `regions` its "regions" (x, y, width, height,
// type, reused, inference_ms, results, track_id when tracked). With
// `source`, also "element", "stream" and "model".
std::string frame_document(int64_t pts_ns, const FrameResult& r, const std::vector<RegionResult>* regions = nullptr,
                           const DocumentSource* source = nullptr);
// One region's results alone: the frame's pts and number, the region's
// index in the frame, and the fields of a "regions" entry above.
std::string region_document(int64_t pts_ns, const RegionResult& g, size_t index,
                            const DocumentSource* source = nullptr);

class ResultsFile {
 public:
  explicit ResultsFile(const std::string& path);  // truncates; throws std::runtime_error
  ~ResultsFile();
  // pts_ns < 0: none. With `regions`, the frame's "regions" too:
  // [{"x","y","width","height","type","results":[...]}].
  void write(int64_t pts_ns, const FrameResult& r, const std::vector<RegionResult>* regions = nullptr);

 private:
  std::FILE* f_ = nullptr;
  std::string path_;
};

}  // namespace ptm
