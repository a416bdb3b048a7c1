#include "classifier.h"

#include <torch/script.h>
#include <torch/csrc/jit/frontend/tracer.h>
#include <torch/csrc/jit/passes/freeze_module.h>
#include <torch/csrc/jit/passes/frozen_graph_optimizations.h>
#include <torch/csrc/jit/runtime/graph_executor.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <mutex>
#include <set>
#include <thread>
#include <unistd.h>

#include "architectures.h"
#include "error.h"
#include "labels.h"
#include "registry.h"

namespace ptm {

namespace {

std::string c10_message(const c10::Error& e) { return e.what_without_backtrace(); }

// Mirrors a torch::nn module tree into a torch::jit::Module sharing the same
// tensors, so the tracer can record parameter accesses as attributes.
void mirror(torch::nn::Module& src, torch::jit::Module& dst,
            const std::shared_ptr<torch::jit::CompilationUnit>& cu) {
  dst.register_attribute("training", c10::BoolType::get(), false);
  for (const auto& p : src.named_parameters(false)) dst.register_parameter(p.key(), p.value(), false);
  for (const auto& b : src.named_buffers(false)) dst.register_buffer(b.key(), b.value());
  for (const auto& c : src.named_children()) {
    torch::jit::Module child(c10::QualifiedName("__torch__.ptm." + c.key()), cu, true);
    mirror(*c.value(), child, cu);
    dst.register_module(c.key(), child);
  }
}

torch::jit::Module optimised(ClassifierModuleImpl& model, int64_t size) {
  auto cu = std::make_shared<torch::jit::CompilationUnit>();
  torch::jit::Module m(c10::QualifiedName("__torch__.ptm.Classifier"), cu, true);
  mirror(model, m, cu);
  at::Tensor example = torch::rand({1, 3, size, size});
  auto fn = [&model](torch::jit::Stack in) -> torch::jit::Stack {
    return {model.forward(in.at(0).toTensor())};
  };
  auto traced = torch::jit::tracer::trace(
      {example}, fn, [](const at::Tensor&) { return std::string(); }, true, false, &m);
  auto graph = traced.first->graph;
  auto method = cu->create_function(c10::QualifiedName(*m.type()->name(), "forward"), graph);
  m.type()->addMethod(method);
  m.eval();
  return torch::jit::optimize_for_inference(m);
}

// LibTorch 1.13's optimised graphs repeat one warning on every call (oneDNN
// outputs padded to a channel multiple get resized); PyTorch's Python
// layer shows each warning once. Do the same, process-wide.
class OnceWarningHandler : public c10::WarningHandler {
 public:
  void process(const c10::SourceLocation& loc, const std::string& msg, const bool verbatim) override {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!seen_.insert(msg).second) return;
    }
    previous_->process(loc, msg + " (reported once)", verbatim);
  }
  c10::WarningHandler* previous_ = nullptr;

 private:
  std::mutex mutex_;
  std::set<std::string> seen_;
};

void install_once_warning_handler() {
  static std::once_flag once;
  std::call_once(once, [] {
    static OnceWarningHandler handler;
    handler.previous_ = c10::Warning::get_warning_handler();
    c10::Warning::set_warning_handler(&handler);
  });
}

}  // namespace

struct Classifier::Impl {
  ModelInfo info;
  ClassifierModulePtr eager;
  torch::jit::Module script;
  bool use_script = false;
  // The optimised graph of a built-in model is traced at one image size
  // (oneDNN's adaptive pooling, for one, needs divisible sizes): other
  // sizes run the eager module. 0 = any size (TorchScript files).
  int64_t script_size = 0;
};

Classifier::Classifier(const ClassifierOptions& o) : impl_(std::make_unique<Impl>()) {
  ModelInfo& info = impl_->info;
  info.path = o.model;
  at::set_num_threads(o.threads > 0 ? o.threads : std::max(1u, std::thread::hardware_concurrency()));
  torch::jit::getProfilingMode() = false;
  install_once_warning_handler();

  const FileFormat fmt = sniff_format(o.model);
  info.format = format_name(fmt);
  if (fmt == FileFormat::TorchScript) {
    try {
      impl_->script = torch::jit::load(o.model, torch::kCPU);
      impl_->script.eval();
    } catch (const c10::Error& e) {
      throw ModelError("'" + o.model + "' could not be loaded as TorchScript: " + c10_message(e));
    }
    impl_->use_script = true;
    info.architecture = "torchscript";
    for (const auto& p : impl_->script.parameters()) info.parameters += p.numel();
    torch::NoGradGuard ng;
    try {
      at::Tensor out = impl_->script.forward({torch::zeros({1, 3, 224, 224})}).toTensor();
      info.num_classes = out.size(-1);
    } catch (const c10::Error& e) {
      throw ModelError("'" + o.model + "': TorchScript forward on a 1x3x224x224 input failed: " + c10_message(e));
    }
  } else {
    ReadOptions ro;
    ro.wrapper_key = o.wrapper_key;
    Checkpoint ck = read_checkpoint(o.model, ro);
    info.notes = ck.notes;
    std::string arch = o.architecture;
    int64_t classes = 0;
    if (arch.empty()) {
      Candidate c = detect_architecture(ck.state);
      arch = c.name;
      classes = c.num_classes;
    } else {
      const ArchInfo* a = find_architecture(arch);
      if (!a) throw ModelError("unknown architecture '" + arch + "'; known: " + architecture_names());
      if (const at::Tensor* w = ck.state.find(a->head + ".weight"); w && w->dim() > 0) classes = w->size(0);
    }
    if (o.num_classes > 0) classes = o.num_classes;
    if (classes <= 0) throw ModelError("'" + o.model + "': cannot tell the number of classes; set it explicitly");
    impl_->eager = create_architecture(arch, classes);
    LoadOptions lo;
    lo.strict = o.strict;
    lo.num_classes = o.num_classes;
    lo.share_memory = ck.state.nbytes() * 4 >= int64_t(ck.file_bytes) * 3;
    info.report = load_into(*impl_->eager, arch, ck.state, lo);
    impl_->eager->eval();
    info.architecture = arch;
    info.num_classes = classes;
    for (const auto& p : impl_->eager->parameters()) info.parameters += p.numel();
    const ArchInfo* a = find_architecture(arch);
    info.crop_size = a->crop_size;
    info.resize_size = a->resize_size;
    info.bicubic = a->interpolation == Interpolation::Bicubic;
    if (o.optimize) {
      try {
        impl_->script = optimised(*impl_->eager, info.crop_size);
        impl_->use_script = true;
        impl_->script_size = info.crop_size;
      } catch (const c10::Error& e) {
        info.notes.push_back("optimised graph unavailable, running eagerly: " + c10_message(e));
      } catch (const std::exception& e) {
        info.notes.push_back(std::string("optimised graph unavailable, running eagerly: ") + e.what());
      }
    }
  }
  std::string labels_file = o.labels;
  if (labels_file.empty()) {
    // A labels file written beside the model (ptmtrainsink does) is used.
    const std::string beside = labels_path_beside(o.model);
    if (::access(beside.c_str(), R_OK) == 0) {
      labels_file = beside;
      info.notes.push_back("labels from " + beside);
    }
  }
  if (!labels_file.empty()) {
    info.labels = read_labels_file(labels_file);
    if (int64_t(info.labels.size()) != info.num_classes)
      throw ModelError("'" + labels_file + "' has " + std::to_string(info.labels.size()) +
                       " labels but the model has " + std::to_string(info.num_classes) + " classes");
  } else if (info.num_classes == 1000) {
    info.labels = imagenet_labels();
  } else {
    for (int64_t i = 0; i < info.num_classes; ++i) info.labels.push_back("class " + std::to_string(i));
  }
}

Classifier::~Classifier() = default;

const ModelInfo& Classifier::info() const { return impl_->info; }

const std::string& Classifier::label(int64_t index) const {
  static const std::string unknown = "?";
  const auto& l = impl_->info.labels;
  return index >= 0 && index < int64_t(l.size()) ? l[size_t(index)] : unknown;
}

at::Tensor Classifier::forward(const at::Tensor& input) {
  if (input.dim() != 4 || input.size(1) != 3)
    throw ModelError("model input must be N x 3 x H x W, got " + shape_str(input.sizes().vec()));
  c10::InferenceMode guard;
  try {
    at::Tensor x = input.to(at::kFloat).contiguous();
    const int64_t s = impl_->script_size;
    if (impl_->use_script && (s == 0 || (x.size(2) == s && x.size(3) == s)))
      return impl_->script.forward({x}).toTensor();
    return impl_->eager->forward(x);
  } catch (const c10::Error& e) {
    throw ModelError("inference failed: " + c10_message(e));
  } catch (const std::exception& e) {
    throw ModelError(std::string("inference failed: ") + e.what());
  }
}

void Classifier::forward(const float* input, int64_t n, int64_t h, int64_t w, std::vector<float>& logits) {
  at::Tensor x = torch::from_blob(const_cast<float*>(input), {n, 3, h, w}, at::kFloat);
  at::Tensor y = forward(x).contiguous();
  logits.assign(y.data_ptr<float>(), y.data_ptr<float>() + y.numel());
}

namespace {
void require_linear_head(const ClassifierModulePtr& m, const ModelInfo& info) {
  if (!m) throw ModelError("fine-tuning needs a built-in architecture, not " + info.format);
  const ArchInfo* a = find_architecture(info.architecture);
  auto p = m->named_parameters();
  if (!a || !p.contains(a->head + ".weight") || p[a->head + ".weight"].dim() != 2)
    throw ModelError(info.architecture + " has no linear classification head to fine-tune");
}
}  // namespace

at::Tensor Classifier::features(const at::Tensor& input) {
  require_linear_head(impl_->eager, impl_->info);
  c10::InferenceMode guard;
  return impl_->eager->embed(input.to(at::kFloat).contiguous());
}

int64_t Classifier::feature_size() const {
  require_linear_head(impl_->eager, impl_->info);
  return impl_->eager->named_parameters()[head_prefix() + ".weight"].size(1);
}

std::string Classifier::head_prefix() const {
  const ArchInfo* a = find_architecture(impl_->info.architecture);
  return a ? a->head : "";
}

StateDict Classifier::state_dict() const {
  require_linear_head(impl_->eager, impl_->info);
  StateDict sd;
  for (const auto& p : impl_->eager->named_parameters(true)) sd.entries.push_back({p.key(), p.value().detach()});
  for (const auto& b : impl_->eager->named_buffers(true)) sd.entries.push_back({b.key(), b.value().detach()});
  return sd;
}

std::vector<Prediction> top_k(const float* scores, int64_t count, int k) {
  std::vector<Prediction> all;
  all.reserve(size_t(count));
  for (int64_t i = 0; i < count; ++i) all.push_back({i, scores[i]});
  k = int(std::min<int64_t>(std::max(k, 0), count));
  std::partial_sort(all.begin(), all.begin() + k, all.end(), [](const Prediction& a, const Prediction& b) {
    return a.score != b.score ? a.score > b.score : a.index < b.index;
  });
  all.resize(size_t(k));
  return all;
}

void softmax_inplace(float* s, int64_t n) {
  if (n <= 0) return;
  const float m = *std::max_element(s, s + n);
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += (s[i] = std::exp(s[i] - m));
  for (int64_t i = 0; i < n; ++i) s[i] = float(s[i] / sum);
}

}  // namespace ptm
