#include "infer_core.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

#include "models/runtime.h"

#if PTM_HAVE_CUDA
#include "ptmcuda.h"
#endif
#if PTM_HAVE_IMGCODECS
#include <opencv2/imgcodecs.hpp>
#endif

namespace ptm {

PreprocessConfig preprocess_config_for(const ModelInfo& m) {
  PreprocessConfig c;
  c.resize_size = m.resize_size;
  c.crop_width = c.crop_height = m.crop_size;
  c.filter = m.bicubic ? Filter::Bicubic : Filter::Bilinear;
  if (m.stretch) c.mode = ResizeMode::Stretch;
  c.mean = m.mean;
  c.std = m.std;
  return c;
}

#if PTM_HAVE_CUDA
struct InferCore::Gpu {
  cuda::Preprocess preprocess;
};
void InferCore::GpuDeleter::operator()(Gpu* g) const { delete g; }
#else
struct InferCore::Gpu {};
void InferCore::GpuDeleter::operator()(Gpu* g) const { delete g; }
#endif

ClassifierOptions with_calibration_reader(ClassifierOptions o) {
#if PTM_HAVE_IMGCODECS
  if (!o.calibration.empty() && !o.calibration_reader)
    o.calibration_reader = [](const std::string& path, const ModelInfo& m, std::vector<float>& chw) {
      cv::Mat img;
      try {
        img = cv::imread(path, cv::IMREAD_COLOR);
      } catch (const std::exception&) {  // cv::Exception: a file OpenCV took for an image but could not decode
        return false;
      }
      if (img.empty()) return false;
      FrameView f;
      f.format = PixelFormat::BGR;
      f.width = img.cols;
      f.height = img.rows;
      f.planes[0] = img.data;
      f.strides[0] = int(img.step);
      chw.resize(size_t(3) * size_t(m.crop_size) * size_t(m.crop_size));
      Preprocessor(preprocess_config_for(m)).run(f, chw.data());
      return true;
    };
#endif
  return o;
}

// A shared model for CPU models when sharing is asked for.
static bool shares(const InferSettings& s) { return s.share && s.model.device == "cpu"; }

InferCore::InferCore(const InferSettings& s)
    : settings_(s),
      shared_(shares(s) ? SharedModel::get(with_calibration_reader(s.model), &took_loaded_) : nullptr),
      classifier_(shares(s) ? nullptr : std::make_unique<Classifier>(with_calibration_reader(s.model))),
      preprocessor_(make_preprocessor()),
      scorer_(s) {
  static_cast<ScoringSettings&>(settings_) = scorer_.settings();
  settings_.interval = std::max(1, settings_.interval);
}

// A frame is preprocessed on the thread that then runs the CPU model,
// whose OpenMP team (num-threads) would wait meanwhile: the preprocessing is
// split across that team — the caller's own thread and team, or the shared
// model's thread and team for frames queued until_flush (frames queued
// otherwise are preprocessed by the caller's thread alone). Frames for a
// model on the GPU: one thread. PTM_PREPROCESS_THREADS=1 in the environment
// keeps every frame's preprocessing on one thread (for comparisons).
Preprocessor InferCore::make_preprocessor() {
  Preprocessor p(preprocess_config_for(info()));
  const char* one = std::getenv("PTM_PREPROCESS_THREADS");
  const bool alone = one && std::string(one) == "1";
  preprocess_threads_ = alone || on_cuda() ? 1 : runtime::resolve_threads(settings_.model.threads);
  if (!shared_) p.set_threads(preprocess_threads_);
  return p;
}

void InferCore::update_scoring(const InferSettings& s) {
  scorer_.update(s);
  static_cast<ScoringSettings&>(settings_) = scorer_.settings();
  settings_.interval = std::max(1, s.interval);
}

PreprocessConfig InferCore::preprocess_config() const { return preprocessor_.config(); }

std::string InferCore::set_input_size(int size) {
  if (!pending_.empty()) throw std::logic_error("InferCore::set_input_size with frames queued");
  if (shared_) {
    // Not changed under the other holders' feet: the instance at that size
    // (shared with whoever runs it at that size too).
    if (size == info().crop_size) return "";
    ClassifierOptions o = settings_.model;
    o.input_size = size;
    try {
      shared_ = SharedModel::get(o);
    } catch (const std::exception& e) {
      return e.what();
    }
    settings_.model.input_size = size;
  } else {
    const std::string why = classifier_->set_input_size(size);
    if (!why.empty()) return why;
  }
  preprocessor_ = make_preprocessor();
  gpu_.reset();  // its kernel tables are for the old size
  return "";
}

void InferCore::reset() {
  drop_queued();
  frame_ = 0;
  have_last_ = false;
  scorer_.reset();
}

FrameResult InferCore::process(const FrameView& frame, const float* tensor) {
  queue(frame, tensor, true);
  return flush().front();
}

int64_t InferCore::next_slot(bool* infer) {
  const uint64_t index = frame_++;
  // Every interval-th frame is inferred, and the first one after a reset.
  const bool first = !have_last_ && batched_ == 0;
  *infer = first || index % uint64_t(settings_.interval) == 0;
  pending_.push_back({index, *infer});
  return *infer ? int64_t(batched_) : -1;
}

void InferCore::queue(const FrameView& frame, const float* tensor, bool until_flush) {
  bool infer = false;
  const int64_t slot = next_slot(&infer);
  if (!infer) return;
  write_image(slot, frame, tensor, until_flush);
  ++batched_;
}

void InferCore::write_image(int64_t slot, const FrameView& frame, const float* tensor, bool until_flush) {
  const size_t plane = size_t(3) * size_t(info().crop_size) * size_t(info().crop_size);
  if (shared_) {
    // Left for the shared model's thread (until_flush), else preprocessed
    // here, on this thread alone (an OpenMP team here would be a second
    // one beside the model's), and copied into its input there.
    deferred_.resize(size_t(slot + 1));
    deferred_[size_t(slot)] = {frame, tensor, until_flush};
    if (until_flush) return;
    staging_.resize(size_t(slot + 1) * plane);
    float* dst = staging_.data() + size_t(slot) * plane;
    if (tensor) {
      std::copy(tensor, tensor + plane, dst);
    } else {
      preprocessor_.set_threads(1);
      preprocessor_.run(frame, dst);
    }
    return;
  }
  const Classifier::InputBuffer in = classifier_->input_buffer(slot + 1);
  if (!in.cuda && in.type == Precision::Float32 && !in.channels_last) {
    // The model's input is host memory in this layout: preprocess into it.
    float* dst = static_cast<float*>(in.data) + size_t(slot) * plane;
    if (tensor) std::copy(tensor, tensor + plane, dst);
    else preprocessor_.run(frame, dst);
  } else {
    // A frame in system memory for a model on the GPU: preprocessed here,
    // then the tensor (not the frame) goes to the device.
    staging_.resize(plane);
    if (tensor) std::copy(tensor, tensor + plane, staging_.data());
    else preprocessor_.run(frame, staging_.data());
    classifier_->write_input(slot, staging_.data(), false);
  }
}

uint64_t InferCore::run_queued(int64_t n, int k, int fn, std::vector<float>& scores, std::vector<int64_t>& indices) {
  if (!shared_) {
    classifier_->run_input(n, k, fn, scores, indices);
    return 0;
  }
  uint64_t preprocessing = 0;
  const size_t plane = size_t(3) * size_t(info().crop_size) * size_t(info().crop_size);
  std::exception_ptr failed;
  const SharedModel::Fill fill = [&](int64_t i, float* dst) {
    const Deferred& d = deferred_[size_t(i)];
    if (!d.deferred) {
      std::copy(staging_.data() + size_t(i) * plane, staging_.data() + size_t(i + 1) * plane, dst);
    } else if (d.tensor) {
      std::copy(d.tensor, d.tensor + plane, dst);
    } else {
      const auto t0 = std::chrono::steady_clock::now();
      try {
        preprocessor_.set_threads(preprocess_threads_);  // the model's team: this runs on its thread
        preprocessor_.run(d.frame, dst);
      } catch (...) {
        if (!failed) failed = std::current_exception();
      }
      preprocessing += uint64_t(
          std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count());
    }
  };
  shared_->run(fill, n, scores);
  if (failed) std::rethrow_exception(failed);
  return preprocessing;
}

std::vector<FrameResult> InferCore::classify_regions(const FrameView& frame, const std::vector<Region>& regions,
                                                     int max_batch) {
  if (!pending_.empty()) throw std::logic_error("InferCore::classify_regions with frames queued");
  // Each region is scored alone: smoothing and hysteresis follow whole frames.
  ScoringSettings alone = scorer_.settings();
  alone.smoothing = 0;
  alone.hysteresis = 0;
  Scorer scorer(alone);
  const uint64_t index = frame_++;
  std::vector<FrameResult> out;
  const size_t step = size_t(std::max(1, max_batch));
  std::vector<float> logits;
  std::vector<int64_t> indices;
  for (size_t first = 0; first < regions.size(); first += step) {
    const size_t n = std::min(step, regions.size() - first);
    for (size_t i = 0; i < n; ++i) {
      const FrameView crop = crop_view(frame, regions[first + i]);
      if (crop.width == 0) throw std::invalid_argument("region outside the frame");
      write_image(int64_t(i), crop, nullptr, true);
    }
    const auto t0 = std::chrono::steady_clock::now();
    const uint64_t preprocessing = run_queued(int64_t(n), 0, 0, logits, indices);
    const uint64_t ns = uint64_t(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count()) - preprocessing;
    const size_t classes = logits.size() / n;
    for (size_t i = 0; i < n; ++i) {
      out.push_back(labelled(scorer.score(std::vector<float>(logits.begin() + long(i * classes),
                                                             logits.begin() + long((i + 1) * classes))),
                             ns / n));
      out.back().frame = index;
    }
  }
  return out;
}

void InferCore::queue_device(const FrameView& frame, const float* device_tensor) {
#if PTM_HAVE_CUDA
  if (!on_cuda())
    throw std::runtime_error("frames in CUDA memory need the model on a CUDA device (device=cuda)");
  bool infer = false;
  const int64_t slot = next_slot(&infer);
  if (!infer) return;
  const Classifier::InputBuffer in = classifier_->input_buffer(slot + 1);
  if (device_tensor) {
    classifier_->write_input(slot, device_tensor, true);
  } else {
    if (!gpu_) gpu_.reset(new Gpu());
    const ResamplePlan* p = gpu_->preprocess.plan();
    if (!p || p->format != frame.format || p->width != frame.width || p->height != frame.height)
      gpu_->preprocess.set_plan(preprocessor_.plan(frame));
    const size_t elem = in.type == Precision::Float32 ? 4 : 2;
    void* dst = static_cast<uint8_t*>(in.data) + size_t(slot) * size_t(in.image_elements) * elem;
    const cuda::OutputType type = in.type == Precision::Float16    ? cuda::OutputType::Float16
                                  : in.type == Precision::BFloat16 ? cuda::OutputType::BFloat16
                                                                   : cuda::OutputType::Float32;
    // On the model's stream: the forward pass is ordered after the kernel
    // without any synchronisation.
    gpu_->preprocess.run(frame, dst, type, in.channels_last, classifier_->cuda_stream());
  }
  ++batched_;
#else
  (void)frame;
  (void)device_tensor;
  throw std::runtime_error("this build of ptm has no CUDA support");
#endif
}

void InferCore::drop_queued() {
  pending_.clear();
  deferred_.clear();
  batched_ = 0;
}

std::vector<FrameResult> InferCore::flush() {
  std::vector<FrameResult> out;
  if (pending_.empty()) return out;
  std::vector<float> logits;
  std::vector<int64_t> indices;
  uint64_t ns = 0;
  // On a GPU only the top k of each image come back, unless smoothing or
  // hysteresis need every score.
  const bool device_top = on_cuda() && !scorer_.needs_all_scores();
  if (batched_ > 0) {
    const auto t0 = std::chrono::steady_clock::now();
    const int fn = settings_.output == ScoreOutput::Softmax ? 1 : settings_.output == ScoreOutput::Sigmoid ? 2 : 0;
    uint64_t preprocessing = 0;
    try {
      preprocessing = run_queued(int64_t(batched_), device_top ? settings_.top_k : 0, fn, logits, indices);
    } catch (...) {
      drop_queued();  // the batch is lost, not run again with the next one (its frames may be gone)
      throw;
    }
    ns = uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count()) -
         preprocessing;
  }
  const size_t classes = batched_ ? logits.size() / batched_ : 0;
  size_t k = 0;
  for (const Pending& p : pending_) {
    FrameResult r;
    if (p.infer && device_top) {
      std::vector<Prediction> ranked;
      for (size_t j = k * classes; j < (k + 1) * classes; ++j) ranked.push_back({indices[j], logits[j]});
      r = labelled(scorer_.accept(ranked), ns / batched_);
      ++k;
      last_ = r;
      have_last_ = true;
    } else if (p.infer) {
      r = score(std::vector<float>(logits.begin() + long(k * classes), logits.begin() + long((k + 1) * classes)),
                ns / batched_);
      ++k;
      last_ = r;
      have_last_ = true;
    } else {
      r = last_;
      r.reused = true;
    }
    r.frame = p.frame;
    out.push_back(std::move(r));
  }
  drop_queued();
  return out;
}

FrameResult InferCore::labelled(std::vector<Prediction> top, uint64_t ns) const {
  FrameResult r;
  r.inference_ns = ns;
  for (const auto& p : top) r.labels.push_back(shared_ ? shared_->label(p.index) : classifier_->label(p.index));
  r.top = std::move(top);
  return r;
}

FrameResult InferCore::score(std::vector<float> v, uint64_t ns) { return labelled(scorer_.score(std::move(v)), ns); }

ResultsFile::ResultsFile(const std::string& path) : path_(path) {
  f_ = std::fopen(path.c_str(), "w");
  if (!f_) throw std::runtime_error("cannot write results file '" + path + "': " + std::strerror(errno));
}

ResultsFile::~ResultsFile() {
  if (f_) std::fclose(f_);
}

static nlohmann::json classes_json(const FrameResult& r) {
  nlohmann::json res = nlohmann::json::array();
  for (size_t i = 0; i < r.top.size(); ++i)
    res.push_back({{"class", r.top[i].index}, {"label", r.labels[i]}, {"score", r.top[i].score}});
  return res;
}

static nlohmann::json source_json(int64_t pts, const DocumentSource* source) {
  nlohmann::json j = nlohmann::json::object();
  if (source) {
    j["element"] = source->element;
    j["stream"] = source->stream;
    j["model"] = source->model;
  }
  j["pts"] = pts >= 0 ? nlohmann::json(pts) : nlohmann::json(nullptr);
  return j;
}

static nlohmann::json region_json(const RegionResult& g) {
  nlohmann::json j = {{"x", g.box.x},
                      {"y", g.box.y},
                      {"width", g.box.width},
                      {"height", g.box.height},
                      {"type", g.type},
                      {"reused", g.result.reused},
                      {"inference_ms", double(g.result.inference_ns) / 1e6},
                      {"results", classes_json(g.result)}};
  if (g.track_id >= 0) j["track_id"] = g.track_id;
  return j;
}

std::string frame_document(int64_t pts, const FrameResult& r, const std::vector<RegionResult>* regions,
                           const DocumentSource* source) {
  nlohmann::json j = source_json(pts, source);
  j["frame"] = r.frame;
  j["reused"] = r.reused;
  j["inference_ms"] = double(r.inference_ns) / 1e6;
  j["results"] = classes_json(r);
  if (regions) {
    nlohmann::json list = nlohmann::json::array();
    for (const RegionResult& g : *regions) list.push_back(region_json(g));
    j["regions"] = list;
  }
  return j.dump();
}

std::string region_document(int64_t pts, const RegionResult& g, size_t index, const DocumentSource* source) {
  nlohmann::json j = source_json(pts, source);
  j["frame"] = g.result.frame;
  j["region"] = index;
  j.update(region_json(g));
  return j.dump();
}

void ResultsFile::write(int64_t pts, const FrameResult& r, const std::vector<RegionResult>* regions) {
  const std::string line = frame_document(pts, r, regions) + "\n";
  if (std::fwrite(line.data(), 1, line.size(), f_) != line.size() || std::fflush(f_) != 0)
    throw std::runtime_error("cannot write results file '" + path_ + "': " + std::strerror(errno));
}

}  // namespace ptm
