#include "classifier.h"

#include <torch/script.h>
#include <torch/csrc/jit/frontend/tracer.h>
#include <torch/csrc/jit/passes/freeze_module.h>
#include <torch/csrc/jit/passes/constant_propagation.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>
#include <torch/csrc/jit/passes/frozen_graph_optimizations.h>
#include <torch/csrc/jit/passes/quantization/finalize.h>
#include <torch/csrc/jit/passes/quantization/insert_observers.h>
#include <torch/csrc/jit/passes/quantization/insert_quant_dequant.h>
#include <torch/csrc/jit/passes/remove_mutation.h>
#include <torch/csrc/jit/runtime/graph_executor.h>
#include <ATen/Parallel.h>
#include <torch/cuda.h>
#include <torch/version.h>

#if PTM_HAVE_AOTI
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#endif
#if PTM_TORCH_CUDA
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include <dlfcn.h>
#include <link.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <atomic>
#include <cmath>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <system_error>
#include <tuple>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "architectures.h"
#include "dnnl_graph.h"
#include "error.h"
#include "labels.h"
#include "model_folder.h"
#include "registry.h"
#include "runtime.h"

namespace ptm {

namespace {

// A LibTorch message shortened to its cause: an op failing inside a
// TorchScript graph (the optimised path, TorchScript models) comes wrapped
// in the interpreter's traceback, whose last line is the op's own error; an
// allocation failure starts with the check that failed ("[enforce fail at
// alloc_cpu.cpp:75] err == 0. ").
std::string shortened(std::string m) {
  if (m.rfind("The following operation failed in the TorchScript interpreter.", 0) == 0) {
    const size_t end = m.find_last_not_of(" \n\r\t");
    const size_t start = end == std::string::npos ? end : m.rfind('\n', end);
    if (start != std::string::npos) {
      std::string cause = m.substr(start + 1, end - start);
      const size_t colon = cause.find(": ");  // "RuntimeError: ..."
      if (colon != std::string::npos && colon >= 5 && cause.compare(colon - 5, 5, "Error") == 0)
        cause = cause.substr(colon + 2);
      if (!cause.empty()) m = cause;
    }
  }
  if (m.rfind("[enforce fail at ", 0) == 0) {
    const size_t close = m.find("] ");
    const size_t dot = close == std::string::npos ? close : m.find(". ", close);
    if (dot != std::string::npos) m = m.substr(dot + 2);
  }
  // What is left of a backtrace ("Exception raised from ... frame #0: ...").
  for (const char* tail : {"\nException raised from ", "\nframe #0: "}) {
    const size_t at = m.find(tail);
    if (at != std::string::npos) m.erase(at);
  }
  return m;
}

std::string c10_message(const c10::Error& e) { return shortened(e.what_without_backtrace()); }

}  // namespace

std::string error_text(const std::exception& e) {
  if (const auto* c = dynamic_cast<const c10::Error*>(&e)) return c10_message(*c);
  if (dynamic_cast<const std::bad_alloc*>(&e)) return "out of memory (an allocation failed)";
  if (const auto* s = dynamic_cast<const std::system_error*>(&e);
      s && (s->code() == std::errc::resource_unavailable_try_again || s->code() == std::errc::not_enough_memory))
    return std::string("out of memory or threads (a thread could not be started: ") + s->what() + ")";
  return shortened(e.what());
}

namespace {

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

#if TORCH_VERSION_MAJOR < 2
// LibTorch 1.13's oneDNN conversion replaces hardswish, hardsigmoid,
// hardtanh (ReLU6) and clamp by element-wise ops of its own
// (prim::MKLDNNHardSwish_ and the like) that compute part of the tensor
// wrongly where the channel count is not a multiple of oneDNN's channel
// block (16 with AVX-512): a 1x1 conv 40 -> 120 + hardswish is off by 40-100%
// of its largest output, 40 -> 240 by 4e-7; timm's mobilenetv3_small_100 ends
// 35% off. Graphs with these ops are checked against the eager model once at
// load; where they differ, the ops run on dense tensors (aten's own kernels).
bool dnnl_eltwise(c10::Symbol k) {
  static const std::set<std::string> names = {
      "prim::MKLDNNHardSwish", "prim::MKLDNNHardSwish_", "prim::MKLDNNHardSigmoid", "prim::MKLDNNHardSigmoid_",
      "prim::MKLDNNHardTanh",  "prim::MKLDNNHardTanh_",  "prim::MKLDNNClamp",       "prim::MKLDNNClamp_"};
  return names.count(k.toQualString()) > 0;
}

std::vector<torch::jit::Node*> dnnl_eltwise_nodes(const std::shared_ptr<torch::jit::Graph>& g) {
  std::vector<torch::jit::Node*> found;
  for (torch::jit::Node* n : g->nodes())
    if (dnnl_eltwise(n->kind())) found.push_back(n);
  return found;
}

// Each such op becomes to_dense -> aten op -> to_mkldnn.
void densify(const std::shared_ptr<torch::jit::Graph>& g) {
  for (torch::jit::Node* n : dnnl_eltwise_nodes(g)) {
    const std::string kind = n->kind().toQualString();
    torch::jit::WithInsertPoint at_node(n);
    torch::jit::Value* x = n->input(0);
    torch::jit::Value* none = g->insertConstant(c10::IValue());
    torch::jit::Value* dense = g->insert(c10::Symbol::fromQualString("aten::to_dense"), {x, none});
    torch::jit::Value* y = nullptr;
    if (kind.rfind("prim::MKLDNNHardSwish", 0) == 0) {
      y = g->insert(c10::Symbol::fromQualString("aten::hardswish"), {dense});
    } else if (kind.rfind("prim::MKLDNNHardSigmoid", 0) == 0) {
      y = g->insert(c10::Symbol::fromQualString("aten::hardsigmoid"), {dense});
    } else {
      const double lo = n->f(c10::Symbol::attr("min_val")), hi = n->f(c10::Symbol::attr("max_val"));
      y = g->insert(c10::Symbol::fromQualString("aten::clamp"),
                    {dense, g->insertConstant(c10::Scalar(lo)), g->insertConstant(c10::Scalar(hi))});
    }
    torch::jit::Value* back = g->insert(c10::Symbol::fromQualString("aten::to_mkldnn"), {y, none});
    n->output()->replaceAllUsesWith(back);
    if (kind.back() == '_') x->replaceAllUsesAfterNodeWith(back->node(), back);  // in place: x was the result
    n->destroy();
  }
}

#endif

// The value a GetAttr chain from the graph's `self` (or a constant) holds.
std::optional<c10::IValue> attr_value(torch::jit::Module& root, torch::jit::Value* v) {
  torch::jit::Node* n = v->node();
  if (v == v->owningGraph()->inputs().at(0)) return c10::IValue(root._ivalue());
  if (n->kind() == c10::prim::Constant) return torch::jit::toIValue(v);
  if (n->kind() != c10::prim::GetAttr) return std::nullopt;
  const auto owner = attr_value(root, n->input(0));
  if (!owner || !owner->isObject()) return std::nullopt;
  const auto& obj = owner->toObjectRef();
  const std::string name = n->s(c10::attr::name);
  if (!obj.type()->hasAttribute(name)) return std::nullopt;
  return obj.getAttr(name);
}

#if TORCH_VERSION_MAJOR >= 2
// LibTorch 2.x sends a float32 batch-1 convolution with a 3x3 (or smaller)
// kernel and an input of at most 20,480 values to its native im2col kernel
// instead of oneDNN (a heuristic in `use_mkldnn`); with Debian's BLAS that
// runs ~10x slower (resnet18 at 112x112: 8 such convolutions took 76 of 83
// ms). The frozen graph's convolutions call oneDNN's on dense tensors
// directly (aten::mkldnn_convolution, the kernel the heuristic picks
// otherwise). Returns how many were rewritten.
int mkldnn_convolutions(const std::shared_ptr<torch::jit::Graph>& g) {
  int rewritten = 0;
  std::vector<torch::jit::Node*> convs;
  for (torch::jit::Node* n : g->nodes()) {
    const std::string kind = n->kind().toQualString();
    if ((kind == "aten::conv2d" && n->inputs().size() == 7) ||
        (kind == "aten::_convolution" && n->inputs().size() >= 9))
      convs.push_back(n);
  }
  for (torch::jit::Node* n : convs) {
    const bool plain = n->kind() == c10::Symbol::fromQualString("aten::conv2d");
    // conv2d: input, weight, bias, stride, padding, dilation, groups;
    // _convolution: ..., dilation, transposed, output_padding, groups, ...
    torch::jit::Value* padding = n->input(4);
    if (!padding->type()->isSubtypeOf(*c10::ListType::ofInts())) continue;  // padding="same"
    if (!plain) {
      const auto transposed = torch::jit::toIValue(n->input(6));
      if (!transposed || !transposed->isBool() || transposed->toBool()) continue;
    }
    torch::jit::Value* groups = plain ? n->input(6) : n->input(8);
    torch::jit::WithInsertPoint at_node(n);
    torch::jit::Value* y = g->insert(c10::Symbol::fromQualString("aten::mkldnn_convolution"),
                                     {n->input(0), n->input(1), n->input(2), padding, n->input(3), n->input(5), groups});
    n->output()->replaceAllUsesWith(y);
    n->destroy();
    ++rewritten;
  }
  return rewritten;
}

// Whether an int-list argument the tracer recorded (a constant, or a list
// of int constants) holds only ones.
bool all_ones(torch::jit::Value* v) {
  std::vector<torch::jit::Value*> items{v};
  if (v->node()->kind() == c10::prim::ListConstruct) items.assign(v->node()->inputs().begin(), v->node()->inputs().end());
  for (torch::jit::Value* item : items) {
    const auto x = torch::jit::toIValue(item);
    if (!x || !(x->isInt() || x->isIntList())) return false;
    for (const int64_t i : x->isInt() ? std::vector<int64_t>{x->toInt()} : x->toIntVector())
      if (i != 1) return false;
  }
  return true;
}

// How many of the traced graph's convolutions LibTorch's `use_mkldnn`
// heuristic sends to im2col, from the shapes the tracer recorded: float32 on
// the CPU at batch 1 with groups 1, not both kernel sides above 3 and an
// input of at most 20,480 values; or, on one thread, a 1x1 kernel with
// stride and dilation 1 at a batch under 16 (resnet50 at 224 on one thread,
// Debian 13: 1.0-1.6 s a frame with those through Debian's reference BLAS,
// 0.1 s through oneDNN). A convolution whose shapes are unknown counts.
int im2col_convolutions(torch::jit::Module& m) {
  const bool one_thread = at::get_num_threads() == 1;
  int found = 0;
  for (torch::jit::Node* n : m.get_method("forward").graph()->nodes()) {
    const std::string kind = n->kind().toQualString();
    const bool plain = kind == "aten::conv2d" && n->inputs().size() == 7;
    if (!plain && !(kind == "aten::_convolution" && n->inputs().size() >= 9)) continue;
    const auto groups = torch::jit::toIValue(plain ? n->input(6) : n->input(8));
    const auto weight = attr_value(m, n->input(1));
    const auto input = n->input(0)->type()->cast<c10::TensorType>();
    const auto sizes = input ? input->sizes().concrete_sizes() : std::nullopt;
    if (!groups || !groups->isInt() || !weight || !weight->isTensor() || !sizes || sizes->size() != 4) {
      ++found;
      continue;
    }
    const at::Tensor w = weight->toTensor();
    const auto& s = *sizes;
    if (w.dim() != 4) continue;
    const bool small = groups->toInt() == 1 && !(w.size(2) > 3 && w.size(3) > 3) && s[0] == 1 &&
                       s[0] * s[1] * s[2] * s[3] <= 20480;
    const bool pointwise_one_thread = one_thread && w.size(2) == 1 && w.size(3) == 1 && s[0] < 16 &&
                                      all_ones(n->input(3)) && all_ones(n->input(5));
    if (small || pointwise_one_thread) ++found;
  }
  return found;
}
#endif

// Largest difference of `got` from `want` relative to max(1, max |want|):
// how every fast path is held to the model.
double relative_error(const at::Tensor& got, const at::Tensor& want) {
  const at::Tensor w = want.to(at::kFloat);
  return (got.to(at::kFloat) - w).abs().max().item<double>() / std::max(1.0, w.abs().max().item<double>());
}

// The input every candidate graph of a load is checked and timed on, with
// the model's own output for it: computed on first use and kept for the rest
// of the load (paths that check no candidate never run the eager model).
struct Example {
  at::Tensor x;
  ClassifierModuleImpl* model;
  mutable at::Tensor output;
  const at::Tensor& want() const {
    if (!output.defined()) {
      torch::NoGradGuard no_grad;
      output = model->forward(x);
    }
    return output;
  }
};

Example example_of(ClassifierModuleImpl& model, int64_t size, const at::TensorOptions& options, bool channels_last) {
  at::Tensor x = torch::rand({1, 3, size, size}, options);
  if (channels_last) x = x.contiguous(at::MemoryFormat::ChannelsLast);
  return {x, &model, at::Tensor()};
}

// relative_error of graph `m` from the model on the example.
double graph_error(torch::jit::Module& m, const Example& e) {
  torch::NoGradGuard no_grad;
  return relative_error(m.forward({e.x}).toTensor(), e.want());
}

// The model traced from its torch::nn modules into a graph whose parameters
// are the module tree's attributes (not yet frozen).
torch::jit::Module traced(ClassifierModuleImpl& model, const at::Tensor& example) {
  auto cu = std::make_shared<torch::jit::CompilationUnit>();
  torch::jit::Module m(c10::QualifiedName("__torch__.ptm.Classifier"), cu, true);
  mirror(model, m, cu);
  // Without gradients, as the graph runs: ops that decide per call (the
  // transformers' oneDNN products, models/arch/matmul.cpp) take the path
  // they take at inference while tracing too.
  torch::NoGradGuard no_grad;
  auto fn = [&model](torch::jit::Stack in) -> torch::jit::Stack {
    return {model.forward(in.at(0).toTensor())};
  };
  auto traced = torch::jit::tracer::trace(
      {example}, fn, [](const at::Tensor&) { return std::string(); }, true, false, &m);
  auto graph = traced.first->graph;
  auto method = cu->create_function(c10::QualifiedName(*m.type()->name(), "forward"), graph);
  m.type()->addMethod(method);
  m.eval();
  return m;
}

#if TORCH_VERSION_MAJOR < 2
// LibTorch 1.13: the model as a frozen graph, BatchNorm folded into
// convolutions and converted to oneDNN (optimize_for_inference). `plain`,
// when given, gets the traced graph frozen alone (what the oneDNN executor
// reads), from the same trace.
torch::jit::Module traced_optimised(ClassifierModuleImpl& model, const at::Tensor& example, bool densified,
                                    torch::jit::Module* plain = nullptr) {
  torch::jit::Module m = traced(model, example);
  // Frozen once: optimize_for_inference takes a frozen module as it is and
  // rewrites its graph in place, so the executor's copy is a clone (graphs
  // copied, constants shared and left as they are).
  if (plain) {
    m = torch::jit::freeze(m);
    *plain = m.clone();
  }
  torch::jit::Module o = torch::jit::optimize_for_inference(m);
  if (densified) densify(o.get_method("forward").graph());
  return o;
}
#endif

#if TORCH_VERSION_MAJOR >= 2
// Median milliseconds an image of `m` on `x` (after a warm-up run):
// LibTorch 2.x's candidate graphs, timed at load (optimised_graph).
double ms_per_image(torch::jit::Module& m, const at::Tensor& x) {
  std::vector<double> t;
  for (int i = 0; i < 4; ++i) {
    const auto start = std::chrono::steady_clock::now();
    m.forward({x});
    if (i > 0) t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2] / double(x.size(0));
}
#endif

// Median milliseconds an image of `a` and of `b` on `x`, timed in turns
// (a, b, a, b, ...; one warm-up run each): a slow moment of a shared
// machine falls on both rather than on whichever ran then.
template <typename A, typename B>
std::pair<double, double> ms_per_image_in_turns(const A& a, const B& b, const at::Tensor& x) {
  std::vector<double> ta, tb;
  const auto ms = [](const auto& run) {
    const auto start = std::chrono::steady_clock::now();
    run();
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  };
  a();
  b();
  for (int i = 0; i < 5; ++i) {
    ta.push_back(ms(a));
    tb.push_back(ms(b));
  }
  std::sort(ta.begin(), ta.end());
  std::sort(tb.begin(), tb.end());
  return {ta[ta.size() / 2] / double(x.size(0)), tb[tb.size() / 2] / double(x.size(0))};
}

// A reduced precision (int8, bfloat16) is kept only where it runs at least
// this much faster than float32: where the two are as fast, float32 gives
// the same speed at its own accuracy (a model whose float ops between
// convolutions outweigh the 8-bit products, e.g. EfficientNet's
// squeeze-and-excitation and SiLU; depthwise convolutions in bfloat16
// without AMX).
constexpr double kReducedGain = 1.1;

// The optimised graph of `model`, checked on the example where LibTorch
// 1.13 is known to compute wrongly (see dnnl_eltwise).
// `plain`, when given, gets the traced graph frozen alone. On LibTorch 2.x
// `enough`, when given with it, is asked with the frozen graph before any
// other candidate is built: true returns that graph as it is (the caller
// runs something faster than it and needs no other). 1.13 has one
// candidate, the conversion, and its frozen graph runs depthwise
// convolutions so slowly that timing it cost more than the conversion
// saved (mobilenet_v2's load 290 -> 467 ms): `enough` is not asked there.
torch::jit::Module optimised_graph(ClassifierModuleImpl& model, const Example& ex, const at::TensorOptions& options,
                                   bool channels_last, std::vector<std::string>* notes, torch::jit::Module* plain,
                                   const std::function<bool(torch::jit::Module&)>& enough = nullptr) {
#if TORCH_VERSION_MAJOR < 2
  (void)channels_last;
  (void)enough;
  torch::jit::Module m = traced_optimised(model, ex.x, false, plain);
  if (dnnl_eltwise_nodes(m.get_method("forward").graph()).empty()) return m;
  // float32: what oneDNN got wrong was far off; reduced precision rounds
  // differently along the fused graph by itself.
  const double kTolerance = options.dtype() == at::kFloat ? 1e-4 : 5e-2;
  const double err = graph_error(m, ex);
  if (err <= kTolerance) return m;
  // A fresh module: a graph that has run keeps its executor's plan.
  torch::jit::Module fixed = traced_optimised(model, ex.x, true);
  const double fixed_err = graph_error(fixed, ex);
  if (fixed_err > kTolerance)
    throw ModelError("the optimised graph differs from the model (" + std::to_string(fixed_err) +
                     " of the largest logit)");
  if (notes)
    notes->push_back("oneDNN's hardswish/hardsigmoid/clamp gave wrong results on this model (" +
                     std::to_string(err) + " of the largest logit): those run on dense tensors");
  return fixed;
#else
  // LibTorch 2.x's oneDNN conversion runs some graphs 3-10x faster than the
  // frozen graph alone (mobilenet_v2 4.7 against 48 ms on Debian 13's 2.6:
  // its depthwise convolutions), but leaves ops that cannot take oneDNN
  // tensors in others (resnets' max_pool2d raises): the converted graph is
  // used when it runs, matches the model on the example and runs faster
  // than the frozen graph (BatchNorm folded, constants propagated; its
  // small convolutions sent to oneDNN where that is faster, see
  // mkldnn_convolutions).
  // Every candidate is frozen from the one trace: freezing works on a
  // clone, so each is a fresh module (a graph that has run keeps its plan)
  // and the trace itself is never run.
  torch::jit::Module traced_model = traced(model, ex.x);
  const int im2col = im2col_convolutions(traced_model);
  torch::jit::Module frozen = torch::jit::freeze(traced_model);
  if (plain) {
    *plain = frozen;
    if (enough && enough(frozen)) return frozen;
  }
  const bool cpu = ex.x.device().is_cpu();
  double frozen_ms = 0;  // the frozen graph's time, measured once where a candidate needs it
  auto frozen_time = [&] {
    if (frozen_ms == 0) frozen_ms = ms_per_image(frozen, ex.x);
    return frozen_ms;
  };
  bool direct_convolutions = false;
  // Tried only where a convolution would go to im2col.
  if (cpu && options.dtype() == at::kFloat && !channels_last && im2col > 0) {
    try {
      torch::jit::Module direct = torch::jit::freeze(traced_model);
      if (mkldnn_convolutions(direct.get_method("forward").graph()) > 0 && graph_error(direct, ex) <= 1e-4) {
        const double ms = ms_per_image(direct, ex.x);
        if (ms < frozen_time()) {
          frozen = direct;
          frozen_ms = ms;
          direct_convolutions = true;
        }
      }
    } catch (const std::exception&) {  // a convolution oneDNN does not take
    }
  }
  if (cpu) {
    const double kTolerance = options.dtype() == at::kFloat ? 1e-4 : 5e-2;
    try {
      torch::jit::Module o = torch::jit::optimize_for_inference(traced_model);
      if (graph_error(o, ex) <= kTolerance && ms_per_image(o, ex.x) < frozen_time()) return o;
    } catch (const std::exception&) {  // an op that takes no oneDNN tensor
    }
  }
  if (direct_convolutions && notes)
    notes->push_back("convolutions call oneDNN directly (LibTorch's heuristic would run them as im2col and BLAS)");
  return frozen;
#endif
}


std::string ms_text(double ms) {
  char b[32];
  std::snprintf(b, sizeof b, "%.2f", ms);
  return b;
}

#if PTM_HAVE_DNNL
// The model's graph on ptm's oneDNN executor (models/dnnl_graph.h), kept
// where it matches the model as LibTorch's graph must (1e-4 of the largest
// logit in float32, 5e-2 in bfloat16) and runs faster than `chosen` on this
// machine: timed in turns, median of three each (one each where it runs
// twice as fast at the first). nullptr otherwise, with a note where it
// differed. `chosen_name` names `chosen` in the note.
std::shared_ptr<DnnlGraph> dnnl_graph(const Example& ex, const at::TensorOptions& options, torch::jit::Module& frozen,
                                      torch::jit::Module& chosen, std::vector<std::string>* notes,
                                      const std::string& chosen_name = "LibTorch's graph") {
  torch::NoGradGuard no_grad;
  const at::Tensor& example = ex.x;
  const double tolerance = options.dtype() == at::kFloat ? 1e-4 : 5e-2;
  std::string why;
  std::shared_ptr<DnnlGraph> g;
  try {
    g = DnnlGraph::compile(frozen, &why);
    if (!g) return nullptr;  // an op it does not take: LibTorch's graph runs
    const double err = relative_error(g->run(example), ex.want());
    if (!(err <= tolerance)) {
      if (notes)
        notes->push_back("oneDNN graph executor not used: it differed from the model by " + std::to_string(err) +
                         " of the largest logit");
      return nullptr;
    }
    std::vector<double> mine, theirs;
    for (int i = 0; i < 4; ++i) {
      auto t0 = std::chrono::steady_clock::now();
      g->run(example);
      auto t1 = std::chrono::steady_clock::now();
      chosen.forward({example});
      auto t2 = std::chrono::steady_clock::now();
      if (i == 0) continue;  // warm-up
      mine.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
      theirs.push_back(std::chrono::duration<double, std::milli>(t2 - t1).count());
      // Twice as fast at the first timed turn: the other graph (often
      // LibTorch's frozen one, 10-100 ms an image) is not run twice more.
      if (i == 1 && theirs[0] > 2 * mine[0]) break;
    }
    std::sort(mine.begin(), mine.end());
    std::sort(theirs.begin(), theirs.end());
    const double my_ms = mine[mine.size() / 2], their_ms = theirs[theirs.size() / 2];
    if (!(my_ms < their_ms)) return nullptr;
    if (notes)
      notes->push_back(std::string("runs on ptm's oneDNN graph executor (") +
                       (options.dtype() == at::kFloat ? "float32" : "bfloat16") + ", oneDNN " + DnnlGraph::version() + ": " +
                       std::to_string(g->fused_activations()) + " convolutions with their activation fused, " +
                       std::to_string(g->fused_adds()) + " with their residual add" +
                       (g->winograd_convolutions() > 0
                            ? ", " + std::to_string(g->winograd_convolutions()) + " as Winograd"
                            : std::string()) +
                       "; " + ms_text(my_ms) + " against " + chosen_name + "'s " + ms_text(their_ms) +
                       " ms at load)");
    return g;
  } catch (const std::exception& e) {
    if (notes) notes->push_back("oneDNN graph executor not used: " + error_text(e));
    return nullptr;
  }
}
#endif

// The optimised graph (optimised_graph) and, on the CPU in float32 (not
// channels-last) or bfloat16, the oneDNN executor where it matches the
// model and is faster (`dnnl` null: not wanted).
torch::jit::Module optimised(ClassifierModuleImpl& model, int64_t size, const at::TensorOptions& options,
                             bool channels_last, std::vector<std::string>* notes,
                             std::shared_ptr<DnnlGraph>* dnnl) {
  if (dnnl) *dnnl = nullptr;
#if PTM_HAVE_DNNL
  const char* off = std::getenv("PTM_DNNL_GRAPH");  // "0": LibTorch's graph only
  const bool want = dnnl && !(off && std::string(off) == "0") && options.device().is_cpu() &&
                    ((options.dtype() == at::kFloat && !channels_last) || options.dtype() == at::kBFloat16);
  const Example ex = example_of(model, size, options, channels_last);
  torch::jit::Module plain;
  // LibTorch 2.x builds, checks and times up to three graphs of its own
  // (im2col or direct convolutions, its oneDNN conversion: half of a
  // load's time), none of which runs once the executor is taken. There the
  // executor is tried first, against the frozen graph: where it runs the
  // model and beats that, the others are not built (wherever measured the
  // executor beat the fastest of them, by 1.7-3.9x on ten models); where
  // it loses it is dropped, and LibTorch's candidates decide as before.
  // PTM_DNNL_FIRST=0 builds them all first, as before (comparisons).
  const char* first = std::getenv("PTM_DNNL_FIRST");
  bool decided = false;
  std::function<bool(torch::jit::Module&)> executor_first;
  if (want && !(first && std::string(first) == "0"))
    executor_first = [&](torch::jit::Module& frozen) {
      decided = true;
      *dnnl = dnnl_graph(ex, options, frozen, frozen, notes, "LibTorch's frozen graph");
      return *dnnl != nullptr;
    };
  torch::jit::Module m =
      optimised_graph(model, ex, options, channels_last, notes, want ? &plain : nullptr, executor_first);
  if (want && !decided) *dnnl = dnnl_graph(ex, options, plain, m, notes);
#else
  torch::jit::Module m = optimised_graph(model, example_of(model, size, options, channels_last), options, channels_last,
                                         notes, nullptr);
#endif
  return m;
}

// ---- int8: LibTorch's graph-mode post-training quantization ----
//
// The traced graph, BatchNorm folded into the convolutions before it, gets
// observers on the values LibTorch's quantization passes quantize (every
// convolution's and linear layer's input, weight and output, the adds'
// outputs); calibration runs the observed graph on real images (results as
// fp32's); the passes then put quantize/dequantize pairs around the values
// and fuse them into quantized ops (quantized::conv2d, add_relu, linear:
// oneDNN or QNNPACK kernels, weights prepacked), ops without a quantized
// kernel staying float32 between a dequantize and a quantize.

// Folds each eval-mode batch_norm that alone reads a convolution's output
// into that convolution (new weight and bias attributes on `m`; the model's
// own tensors are left alone). Returns how many were folded.
int fold_batch_norms(torch::jit::Module& m) {
  torch::NoGradGuard no_grad;
  auto g = m.get_method("forward").graph();
  torch::jit::Value* self = g->inputs().at(0);
  std::vector<torch::jit::Node*> norms;
  for (torch::jit::Node* n : g->nodes())
    if (n->kind() == c10::Symbol::fromQualString("aten::batch_norm")) norms.push_back(n);
  int folded = 0;
  for (torch::jit::Node* bn : norms) {
    torch::jit::Value* x = bn->input(0);
    torch::jit::Node* conv = x->node();
    const std::string kind = conv->kind().toQualString();
    if ((kind != "aten::conv2d" && kind != "aten::_convolution") || x->uses().size() != 1) continue;
    const auto w = attr_value(m, conv->input(1)), b = attr_value(m, conv->input(2));
    const auto gamma = attr_value(m, bn->input(1)), beta = attr_value(m, bn->input(2));
    const auto mean = attr_value(m, bn->input(3)), var = attr_value(m, bn->input(4));
    const auto training = torch::jit::toIValue(bn->input(5)), eps = torch::jit::toIValue(bn->input(7));
    if (!w || !w->isTensor() || !b || !(b->isNone() || b->isTensor()) || !gamma || !beta || !mean ||
        !mean->isTensor() || !var || !var->isTensor() || !training || !training->isBool() || training->toBool() ||
        !eps || !eps->isDouble())
      continue;
    const at::Tensor weight = w->toTensor();
    at::Tensor scale = (var->toTensor().to(at::kDouble) + eps->toDouble()).rsqrt();
    if (gamma->isTensor()) scale = scale * gamma->toTensor().to(at::kDouble);
    at::Tensor bias = b->isTensor() ? b->toTensor().to(at::kDouble) : at::zeros_like(scale);
    bias = (bias - mean->toTensor().to(at::kDouble)) * scale;
    if (beta->isTensor()) bias = bias + beta->toTensor().to(at::kDouble);
    std::vector<int64_t> shape(size_t(weight.dim()), 1);
    shape[0] = -1;
    const std::string name = "ptm_folded_" + std::to_string(folded);
    m.register_parameter(name + "_weight", (weight.to(at::kDouble) * scale.reshape(shape)).to(weight.scalar_type()),
                         false);
    m.register_parameter(name + "_bias", bias.to(weight.scalar_type()), false);
    torch::jit::WithInsertPoint at_conv(conv);
    conv->replaceInput(1, g->insertGetAttr(self, name + "_weight"));
    conv->replaceInput(2, g->insertGetAttr(self, name + "_bias"));
    bn->output()->replaceAllUsesWith(x);
    bn->destroy();
    ++folded;
  }
  torch::jit::EliminateDeadCode(g);
  return folded;
}

// Pooling sizes given as one number ([3] for 3x3) spelled out for both
// dimensions: LibTorch's quantized pooling kernels take only the latter.
void pair_pooling_sizes(const std::shared_ptr<torch::jit::Graph>& g) {
  for (torch::jit::Node* n : g->nodes()) {
    const std::string kind = n->kind().toQualString();
    if (kind != "aten::max_pool2d" && kind != "aten::avg_pool2d") continue;
    for (size_t i = 1; i < std::min<size_t>(n->inputs().size(), 5); ++i) {
      torch::jit::Value* in = n->input(i);
      torch::jit::WithInsertPoint at_node(n);
      if (in->node()->kind() == c10::prim::ListConstruct && in->node()->inputs().size() == 1) {
        torch::jit::Value* k = in->node()->input(0);
        n->replaceInput(i, g->insertNode(g->createList(c10::IntType::get(), {k, k}))->output());
        continue;
      }
      const auto v = torch::jit::toIValue(in);
      if (!v || !v->isIntList() || v->toIntList().size() != 1) continue;
      const int64_t k = v->toIntList().get(0);
      n->replaceInput(i, g->insertConstant(c10::IValue(std::vector<int64_t>{k, k})));
    }
  }
}

// An observer LibTorch's passes accept: `dtype` and `qscheme` say what the
// value becomes, calculate_qparams hands over the scale and zero point that
// set_qparams() worked out from what forward recorded (per tensor for
// activations, per output channel for weights).
torch::jit::Module make_observer(const std::shared_ptr<torch::jit::CompilationUnit>& cu, bool weight) {
  torch::jit::Module o(c10::QualifiedName(weight ? "__torch__.ptm.WeightObserver" : "__torch__.ptm.ActivationObserver"),
                       cu, true);
  const auto tensor = c10::TensorType::get();
  o.register_attribute("training", c10::BoolType::get(), false);
  o.register_attribute("dtype", c10::IntType::get(), int64_t(weight ? at::kQInt8 : at::kQUInt8));
  o.register_attribute("qscheme", c10::IntType::get(),
                       int64_t(weight ? at::kPerChannelSymmetric : at::kPerTensorAffine));
  if (weight) o.register_attribute("ch_axis", c10::IntType::get(), int64_t(0));
  o.register_attribute("min_val", tensor, weight ? torch::empty({0}) : torch::full({}, INFINITY));
  o.register_attribute("max_val", tensor, weight ? torch::empty({0}) : torch::full({}, -INFINITY));
  o.register_attribute("scale", tensor, torch::ones({1}));
  o.register_attribute("zero_point", tensor, torch::zeros({1}, at::kLong));
  o.define(weight ? R"(
def forward(self, x: Tensor) -> Tensor:
    f = x.detach().flatten(1)
    self.min_val = torch.amin(f, 1)
    self.max_val = torch.amax(f, 1)
    return x
def calculate_qparams(self) -> Tuple[Tensor, Tensor]:
    return self.scale, self.zero_point
)"
                  : R"(
def forward(self, x: Tensor) -> Tensor:
    lo, hi = torch.aminmax(x.detach())
    self.min_val = torch.minimum(lo, self.min_val)
    self.max_val = torch.maximum(hi, self.max_val)
    return x
def calculate_qparams(self) -> Tuple[Tensor, Tensor]:
    return self.scale, self.zero_point
)");
  return o;
}

// The graph of `model` with observers, ready to calibrate.
torch::jit::Module observed_graph(ClassifierModuleImpl& model, const at::Tensor& example) {
  torch::jit::Module m = traced(model, example);
  fold_batch_norms(m);
  auto g = m.get_method("forward").graph();
  torch::jit::RemoveTensorMutation(g);  // relu_ -> relu: the passes fuse the functional forms
  pair_pooling_sizes(g);
  torch::jit::EliminateDeadCode(g);
  auto cu = std::make_shared<torch::jit::CompilationUnit>();
  torch::jit::QConfigDict qconfig;
  qconfig[""] = std::make_tuple(make_observer(cu, false), make_observer(cu, true));
  torch::jit::Module o = torch::jit::InsertObservers(m, "forward", qconfig, true, torch::jit::QuantType::STATIC);
  // The logits stay float32: 8 bits over their whole range would round
  // away the margins between close classes (the head then runs in float
  // on its dequantized input and weights).
  auto og = o.get_method("forward").graph();
  for (torch::jit::Value* out : og->outputs()) {
    torch::jit::Node* n = out->node();
    if (n->kind() == c10::prim::CallMethod && n->inputs().size() == 2 &&
        n->input(0)->node()->kind() == c10::prim::GetAttr &&
        n->input(0)->node()->s(c10::attr::name).find("_observer_") != std::string::npos) {
      n->output()->replaceAllUsesWith(n->input(1));
      n->destroy();
    }
  }
  torch::jit::EliminateDeadCode(og);
  return o;
}

// Scales and zero points from what the observers saw: activations over
// their whole range (0 included) in quint8 (7 bits where the CPU lacks
// VNNI: its u8 x s8 products would saturate 16-bit sums), weights
// symmetric per output channel in qint8.
void set_qparams(torch::jit::Module& observed, bool reduce_range) {
  for (const auto& c : observed.named_children()) {
    if (c.name.find("_observer_") == std::string::npos) continue;
    torch::jit::Module o = c.value;
    const at::Tensor lo = o.attr("min_val").toTensor().to(at::kFloat), hi = o.attr("max_val").toTensor().to(at::kFloat);
    if (o.hasattr("ch_axis")) {
      if (lo.numel() == 0) throw ModelError("a weight was never seen while calibrating");
      const at::Tensor s = (at::maximum(lo.abs(), hi.abs()) / 127.5).clamp_min(1e-8);
      o.setattr("scale", s);
      o.setattr("zero_point", at::zeros(s.sizes(), at::TensorOptions().dtype(at::kLong)));
      continue;
    }
    double l = std::min(0.0, lo.item<double>()), h = std::max(0.0, hi.item<double>());
    if (!std::isfinite(l) || !std::isfinite(h)) l = 0, h = 1;  // a value no calibration image reached
    const double levels = reduce_range ? 127 : 255;
    const double s = std::max((h - l) / levels, 1e-8);
    const int64_t zp = std::clamp<int64_t>(std::llround(-l / s), 0, int64_t(levels));
    o.setattr("scale", torch::full({1}, s, at::TensorOptions().dtype(at::kDouble)));
    o.setattr("zero_point", torch::full({1}, zp, at::TensorOptions().dtype(at::kLong)));
  }
}

torch::jit::Module quantized_graph(torch::jit::Module& observed) {
  torch::jit::Module q = torch::jit::InsertQuantDeQuant(observed, "forward", false, false, torch::jit::QuantType::STATIC);
  q = torch::jit::Finalize(q, torch::jit::QuantType::STATIC, {});
  auto g = q.get_method("forward").graph();
  torch::jit::ConstantPropagation(g);
  torch::jit::EliminateDeadCode(g);
  return q;
}

std::string calibrating_text(int64_t left) {
  return "calibrating (" + std::to_string(left) + (left == 1 ? " image" : " images") + " to go)";
}

torch::Device parse_device(const std::string& name) {
  try {
    return torch::Device(name.empty() ? std::string("cpu") : name);
  } catch (const c10::Error&) {
    throw ModelError("unknown device '" + name + "': use cpu, cuda or cuda:N");
  }
}

at::ScalarType scalar_type(Precision p) {
  switch (p) {
    case Precision::Float16: return at::kHalf;
    case Precision::BFloat16: return at::kBFloat16;
    default: return at::kFloat;
  }
}

}  // namespace

std::string device_unavailable_reason(const std::string& name) {
  const torch::Device d = parse_device(name);
  if (!d.is_cuda()) return d.is_cpu() ? "" : "device '" + name + "' is not supported (cpu or cuda)";
#if !PTM_TORCH_CUDA
  return "this build of ptm uses a LibTorch without CUDA (" TORCH_VERSION "); build ptm against a CUDA-enabled "
         "LibTorch (docs/gpu.md)";
#else
  const int64_t n = int64_t(torch::cuda::device_count());
  if (n == 0) return "LibTorch sees no CUDA device";
  if (d.has_index() && d.index() >= n)
    return "there is no CUDA device " + std::to_string(d.index()) + " (" + std::to_string(n) + " present)";
  return "";
#endif
}

struct Classifier::Impl {
  ModelInfo info;
  bool loading = false;  // in the constructor: its end releases what the load freed, once
  ClassifierModulePtr eager;
  torch::jit::Module script;
  bool use_script = false;
  // The script's graph on ptm's oneDNN executor, where faster (float32 or
  // bfloat16 on the CPU; see dnnl_graph()). With precision=int8 it is the
  // float32 path the quantized graph is timed against: replaced by its own
  // int8 graph (DnnlGraph::int8), or dropped for LibTorch's quantized
  // graph, when that is kept.
  std::shared_ptr<DnnlGraph> dnnl;
  // The optimised graph of a built-in model is traced at one image size
  // (oneDNN's adaptive pooling, for one, needs divisible sizes): other
  // sizes run the eager module. 0 = any size (TorchScript files).
  int64_t script_size = 0;
  // A built-in model's optimised graph is made once the input size is
  // settled (options, a folder's config), not first at the architecture's
  // default: tracing regnet_y_128gf at its 384 took 20 s of a load at 160.
  bool script_pending = false;
#if PTM_HAVE_AOTI
  // An AOTInductor package: compiled for one input size, one device, one
  // dtype and batches of up to max_batch images (exactly that many when
  // its batch dimension is static).
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> package;
#endif
  bool static_batch = false;

  torch::Device device{torch::kCPU};
  at::ScalarType dtype = at::kFloat;
  bool channels_last = false;
  bool cuda_graphs = false;
  at::Tensor input;  // the persistent input batch (input_buffer)
#if PTM_TORCH_CUDA
  std::optional<c10::cuda::CUDAStream> stream;
  struct Captured {
    std::unique_ptr<at::cuda::CUDAGraph> graph;
    at::Tensor out;
  };
  std::map<int64_t, Captured> graphs;
#endif

  int threads = 1;    // intra-op threads, applied on the calling thread

  // precision=int8: the observed graph runs (and records) until
  // calibration_left images have gone through it, then the quantized graph
  // replaces the float32 one where it runs faster.
  bool int8 = false;
  int calibration_images = 32;
  torch::jit::Module observed;
  // Calibrating the float32 oneDNN executor for its own int8 graph
  // (DnnlGraph::int8) instead of LibTorch's observed graph.
  bool executor_int8 = false;
  std::atomic<int64_t> calibration_left{0};
  mutable std::mutex status_lock;
  std::string status;  // int8_status()
  void set_status(std::string s) {
    std::lock_guard<std::mutex> g(status_lock);
    status = std::move(s);
  }
  void setup_int8();
  void finish_int8(const at::Tensor& x);
  void calibrate_from(const ClassifierOptions& o);
  ClassifierOptions calibration_source;  // its calibration folder and reader

  at::TensorOptions options() const { return at::TensorOptions().device(device).dtype(dtype); }

  // Construction steps, in order: device, then one of the model sources,
  // then labels.
  void setup_device(const ClassifierOptions& o);
  void load_torchscript(const ClassifierOptions& o);
  void load_weights(const ClassifierOptions& o);
  void load_package(const ClassifierOptions& o);
  void load_labels(const ClassifierOptions& o);
  void build_script();
  // One pass of the optimised path: the oneDNN executor where the load
  // kept it, else the optimised graph.
  void run_optimised(const at::Tensor& x) {
#if PTM_HAVE_DNNL
    if (dnnl) {
      dnnl->run(x);
      return;
    }
#endif
    script.forward({x});
  }
  // Where the executor runs the model, LibTorch's optimised graph never
  // runs again (run(): every CPU float32/bfloat16 input goes to the
  // executor; other sizes run the eager module; int8's timing takes the
  // executor): its constants (BatchNorm folded weights, oneDNN's packed
  // copies) are let go. A rebuild (set_input_size) makes a new one.
  void drop_unused_script() {
#if PTM_HAVE_DNNL
    if (dnnl && eager) script = torch::jit::Module();
#endif
  }
  // precision=bf16 on the CPU, the model kept float32 until build_script
  // has timed bfloat16 against it (build_bf16_or_float32).
  bool bf16_race = false;
  void build_bf16_or_float32();
  void convert_eager(at::ScalarType to, bool nhwc, std::vector<at::Tensor>* before = nullptr);
  void restore_eager(const std::vector<at::Tensor>& before);
  std::vector<at::Tensor> eager_tensors() const;
  void apply_folder(const ModelFolder& f, Classifier& self);
  std::vector<std::string> package_labels;  // carried in the package's metadata or a folder's config
  std::vector<std::string> saved_labels;    // saved inside the weights file (ptmtrainsink)
  // The architecture a folder's config names: taken where the weights fit
  // it and another architecture of the same layout too (timm's DeiT, ViT).
  std::string preferred;

  // x: on the device, in the model's type and memory format.
  at::Tensor run(const at::Tensor& x) {
#if PTM_HAVE_AOTI
    if (package) return run_package(x);
#endif
    const int64_t s = script_size;
    if (use_script && (s == 0 || (x.size(2) == s && x.size(3) == s))) {
      if (calibration_left > 0) {
#if PTM_HAVE_DNNL
        at::Tensor y = executor_int8 ? dnnl->calibrate(x) : observed.forward({x}).toTensor();
#else
        at::Tensor y = observed.forward({x}).toTensor();
#endif
        if ((calibration_left -= x.size(0)) <= 0) finish_int8(x);
        return y;
      }
      if (dnnl && x.device().is_cpu() && (x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16))
        return dnnl->run(x);
      return script.forward({x}).toTensor();
    }
    return eager->forward(x);
  }

  at::Tensor prepare(const at::Tensor& input_) const {
    at::Tensor x = input_.to(device, dtype);
    return channels_last ? x.contiguous(at::MemoryFormat::ChannelsLast) : x.contiguous();
  }

#if PTM_HAVE_AOTI
  at::Tensor run_package(const at::Tensor& x) {
    const int64_t s = info.crop_size;
    if (x.size(2) != s || x.size(3) != s)
      throw ModelError("'" + info.path + "' was exported for 3x" + std::to_string(s) + "x" + std::to_string(s) +
                       " input, not " + shape_str(x.sizes().vec()));
    const int64_t n = x.size(0), b = info.max_batch > 0 ? info.max_batch : n;
    std::vector<at::Tensor> outs;
    for (int64_t i = 0; i < n; i += b) {
      at::Tensor part = x.narrow(0, i, std::min(b, n - i)).contiguous();
      const int64_t m = part.size(0);
      if (static_batch && m < b)  // padded to the compiled batch size
        part = at::cat({part, at::zeros({b - m, 3, s, s}, part.options())});
      std::vector<at::Tensor> out = package->run({part});
      if (out.size() != 1 || out[0].dim() != 2 || out[0].size(0) != part.size(0))
        throw ModelError("'" + info.path + "' does not return one N x classes tensor");
      outs.push_back(out[0].narrow(0, 0, m));
    }
    return outs.size() == 1 ? outs[0] : at::cat(outs);
  }
#endif

#if PTM_TORCH_CUDA
  // A CUDA graph per batch size: captured after a few warm-up runs (cuDNN
  // picks its algorithms then), replayed after.
  at::Tensor replay(int64_t n, const at::Tensor& x) {
    auto it = graphs.find(n);
    if (it == graphs.end()) {
      for (int i = 0; i < 3; ++i) run(x);
      stream->synchronize();
      Captured c;
      c.graph = std::make_unique<at::cuda::CUDAGraph>();
#if TORCH_VERSION_MAJOR >= 2
      // Thread-local capture: GStreamer's CUDA elements keep working on
      // their own threads meanwhile (a global capture would fail their calls).
      c.graph->capture_begin({0, 0}, cudaStreamCaptureModeThreadLocal);
#else
      c.graph->capture_begin();
#endif
      c.out = run(x);
      c.graph->capture_end();
      it = graphs.emplace(n, std::move(c)).first;
    }
    it->second.graph->replay();
    return it->second.out;
  }
#endif
};

// Runs the enclosed statements with the model's thread count on the calling
// thread, and on the model's CUDA stream.
#if PTM_TORCH_CUDA
#define PTM_MODEL_SCOPE(impl)                                       \
  runtime::use_threads((impl).threads);                                 \
  std::optional<c10::cuda::CUDAStreamGuard> stream_guard_;               \
  if ((impl).stream) stream_guard_.emplace(*(impl).stream)
#else
#define PTM_MODEL_SCOPE(impl) runtime::use_threads((impl).threads)
#endif

void Classifier::Impl::setup_device(const ClassifierOptions& o) {
  device = parse_device(o.device);
  if (const std::string why = device_unavailable_reason(o.device); !why.empty())
    throw ModelError("device " + o.device + ": " + why);
  dtype = scalar_type(o.precision);
  channels_last = o.channels_last;
  if (o.precision == Precision::Int8) {
    if (device.is_cuda()) throw ModelError("int8 precision runs on the CPU; on a CUDA device use fp16 or bf16");
    if (o.calibration_images < 1)
      throw ModelError("int8 precision needs at least 1 calibration image, not " + std::to_string(o.calibration_images));
    int8 = true;
    calibration_images = o.calibration_images;
    calibration_source.calibration = o.calibration;
    calibration_source.calibration_reader = o.calibration_reader;
    channels_last = false;
  }
  if (!device.is_cuda() && dtype == at::kHalf)
    throw ModelError("float16 precision needs a CUDA device; on the CPU use bf16 (CPUs with AVX-512 BF16 or AMX) or "
                     "fp32");
  if (!device.is_cuda() && dtype == at::kBFloat16) {
    if (!runtime::cpu_has_bf16()) {
      dtype = at::kFloat;
      info.warnings.push_back("precision bf16: this CPU has no bfloat16 instructions (AVX-512 BF16 or AMX); running "
                              "float32");
    } else {
      channels_last = true;  // oneDNN's bfloat16 convolutions run fastest on NHWC
    }
  }
  cuda_graphs = o.cuda_graphs && device.is_cuda();
#if PTM_TORCH_CUDA
  if (device.is_cuda()) {
    if (!device.has_index()) device = torch::Device(torch::kCUDA, 0);
    stream = c10::cuda::getStreamFromPool(false, device.index());
    runtime::init_cuda();
  }
#endif
}

void Classifier::Impl::load_torchscript(const ClassifierOptions& o) {
  try {
    script = torch::jit::load(o.model, device);
    script.to(dtype);
    script.eval();
  } catch (const c10::Error& e) {
    throw ModelError("'" + o.model + "' could not be loaded as TorchScript: " + c10_message(e));
  }
  use_script = true;
  info.architecture = "torchscript";
  for (const auto& p : script.parameters()) info.parameters += p.numel();
  torch::NoGradGuard ng;
  try {
    at::Tensor out = script.forward({prepare(torch::zeros({1, 3, 224, 224}))}).toTensor();
    info.num_classes = out.size(-1);
  } catch (const c10::Error& e) {
    throw ModelError("'" + o.model + "': TorchScript forward on a 1x3x224x224 input failed: " + c10_message(e));
  }
}

void Classifier::Impl::load_weights(const ClassifierOptions& o) {
  ReadOptions ro;
  ro.wrapper_key = o.wrapper_key;
  Checkpoint ck = read_checkpoint(o.model, ro);
  saved_labels = ck.labels;
  select_weights_prefix(ck.state, ck.notes, o.architecture);
  info.notes = ck.notes;
  std::string arch = o.architecture;
  int64_t classes = 0;
  if (arch.empty()) {
    Candidate c;
    try {
      c = detect_architecture(ck.state);
    } catch (const ModelError& e) {
      // A whole pickled model names its class: said beside the closest
      // layouts (a home-made class is not one ptm can build).
      if (ck.module_class.empty()) throw;
      throw ModelError(std::string(e.what()) + ". The file is a whole pickled " + ck.module_class +
                       (ck.module_class.rfind("torchvision.", 0) == 0 || ck.module_class.rfind("timm.", 0) == 0
                            ? " whose weights fit none of ptm's builds of it"
                            : ", a class of its own: export its weights from a torchvision or timm architecture, "
                              "or the model to TorchScript or a .pt2"));
    }
    arch = c.name;
    classes = c.num_classes;
    if (std::find(c.also.begin(), c.also.end(), preferred) != c.also.end()) {
      c.also.insert(c.also.begin(), arch);
      c.also.erase(std::find(c.also.begin(), c.also.end(), preferred));
      arch = preferred;
    }
    for (const auto& other : c.also)
      info.notes.push_back("the weights fit " + other + " as well (the same layout, another default "
                           "preprocessing): architecture=" + other + " picks it");
  } else {
    const ArchInfo* a = find_architecture(arch);
    if (!a) throw ModelError("unknown architecture '" + arch + "'; known: " + architecture_names());
    if (const at::Tensor* w = ck.state.find(a->head + ".weight"); w && w->dim() > 0) classes = w->size(0);
  }
  // A strict load of the file's own head fills every parameter: the
  // module's random initialisation is skipped.
  const bool filled = o.strict && (o.num_classes <= 0 || o.num_classes == classes);
  if (o.num_classes > 0) classes = o.num_classes;
  if (classes <= 0) throw ModelError("'" + o.model + "': cannot tell the number of classes; set it explicitly");
  // A position table fixes the input size: build the model at the size the
  // weights were made for (0: the architecture's default).
  const int64_t table_size = input_size_of(arch, ck.state);
  eager = create_architecture(arch, classes, table_size, filled ? ArchInit::Empty : ArchInit::Random);
  LoadOptions lo;
  lo.strict = o.strict;
  lo.num_classes = o.num_classes;
  lo.share_memory = ck.state.nbytes() * 4 >= int64_t(ck.file_bytes) * 3;
  info.report = load_into(*eager, arch, ck.state, lo);
  eager->eval();
  // Module::to(device, dtype) would turn integer buffers (Swin's position
  // indices) into floats: only floating-point tensors take the dtype.
  eager->to(device);
  // bfloat16 on the CPU is not faster everywhere (AMX: 2-5x float32; AVX-512
  // BF16 alone: 1.4x on a Zen 4, 0.55x on a Xeon without AMX): with the
  // optimised graph wanted, the model stays float32 until build_script
  // has timed both.
  const char* always = std::getenv("PTM_BF16_ALWAYS");  // "1": bf16 without timing it (tests, comparisons)
  if (dtype == at::kBFloat16 && !device.is_cuda() && o.optimize && !(always && std::string(always) == "1")) {
    bf16_race = true;
    dtype = at::kFloat;
    channels_last = false;
  }
  convert_eager(dtype, channels_last);
  info.architecture = arch;
  info.num_classes = classes;
  for (const auto& p : eager->parameters()) info.parameters += p.numel();
  const ArchInfo* a = find_architecture(arch);
  info.crop_size = a->crop_size;
  info.resize_size = a->resize_size;
  if (const int64_t s = eager->fixed_input_size(); s > 0 && s != a->crop_size) {
    // Weights for another size: torchvision's crop/resize ratio kept.
    info.crop_size = int(s);
    info.resize_size = scaled_resize(int(s), a->resize_size, a->crop_size);
    info.notes.push_back(arch + " built for " + std::to_string(s) + "x" + std::to_string(s) + " input (from '" +
                         a->position_table + "'), resize " + std::to_string(info.resize_size));
  }
  info.bicubic = a->interpolation == Interpolation::Bicubic;
  info.mean = a->mean;
  info.std = a->std;
  script_pending = o.optimize;
}

// The eager model's floating-point tensors in `to` (and 4-d weights
// channels-last where `nhwc`). `before`, when given, keeps their tensors
// as they were, to put back (restore_eager); otherwise each is freed as
// it is converted.
void Classifier::Impl::convert_eager(at::ScalarType to, bool nhwc, std::vector<at::Tensor>* before) {
  torch::NoGradGuard ng;
  if (before) *before = eager_tensors();
  if (to != at::kFloat) {
    for (auto& t : eager->parameters()) t.set_data(t.to(to));
    for (auto& t : eager->buffers())
      if (t.is_floating_point()) t.set_data(t.to(to));
  }
  if (nhwc) {
    for (auto& p : eager->parameters())
      if (p.dim() == 4) p.set_data(p.contiguous(at::MemoryFormat::ChannelsLast));
  }
}

// The eager model's parameters and buffers, in restore_eager's order
// (detached: their storage, not the module's variables).
std::vector<at::Tensor> Classifier::Impl::eager_tensors() const {
  std::vector<at::Tensor> all;
  for (const auto& t : eager->parameters()) all.push_back(t.detach());
  for (const auto& t : eager->buffers()) all.push_back(t.detach());
  return all;
}

void Classifier::Impl::restore_eager(const std::vector<at::Tensor>& before) {
  torch::NoGradGuard ng;
  size_t i = 0;
  for (auto& t : eager->parameters()) t.set_data(before.at(i++));
  for (auto& t : eager->buffers()) t.set_data(before.at(i++));
}

// precision=bf16 on the CPU: the optimised float32 path and the bfloat16
// one built, then timed on the example in turns (as int8 is); bfloat16 is
// kept where it runs at least kReducedGain times as fast, else float32
// with a warning saying why.
void Classifier::Impl::build_bf16_or_float32() {
  bf16_race = false;
  const int64_t s = info.crop_size;
  torch::NoGradGuard no_grad;
  std::vector<std::string> float_notes;
  const torch::jit::Module float_script = optimised(*eager, s, options(), false, &float_notes, &dnnl);
  const std::shared_ptr<DnnlGraph> float_dnnl = dnnl;
  const at::Tensor float_x = torch::rand({1, 3, s, s});
  std::vector<at::Tensor> float_tensors;
  convert_eager(at::kBFloat16, true, &float_tensors);
  dtype = at::kBFloat16;
  channels_last = true;
  std::vector<std::string> bf16_notes;
  double bf16_ms = 0, float_ms = 0;
  std::string failed;
  try {
    const torch::jit::Module bf16_script = optimised(*eager, s, options(), true, &bf16_notes, &dnnl);
    const std::shared_ptr<DnnlGraph> bf16_dnnl = dnnl;
    const std::vector<at::Tensor> bf16_tensors = eager_tensors();
    const at::Tensor bf16_x = prepare(float_x);
    // Each path runs with the eager module's tensors in the precision it
    // was built from: a frozen graph may hold the module's own tensors,
    // which restore_eager changes in place (no copy: a few microseconds a
    // swap against milliseconds a pass).
    const auto as = [&](bool bf16) {
      restore_eager(bf16 ? bf16_tensors : float_tensors);
      script = bf16 ? bf16_script : float_script;
      dnnl = bf16 ? bf16_dnnl : float_dnnl;
    };
    std::tie(bf16_ms, float_ms) = ms_per_image_in_turns(
        [&] {
          as(true);
          run_optimised(bf16_x);
        },
        [&] {
          as(false);
          run_optimised(float_x);
        },
        float_x);
    as(true);
  } catch (const std::exception& e) {  // LibTorch's c10::Error included
    failed = error_text(e);
  }
  if (failed.empty() && bf16_ms * kReducedGain <= float_ms) {
    info.notes.insert(info.notes.end(), bf16_notes.begin(), bf16_notes.end());
    info.notes.push_back("bfloat16 runs: " + ms_text(bf16_ms) + " against float32's " + ms_text(float_ms) +
                         " ms an image at load");
    return;
  }
  restore_eager(float_tensors);
  dtype = at::kFloat;
  channels_last = false;
  script = float_script;
  dnnl = float_dnnl;
  info.notes.insert(info.notes.end(), float_notes.begin(), float_notes.end());
  info.warnings.push_back("precision bf16: " +
                          (failed.empty() ? "its bfloat16 graph was not 1.1x as fast as float32 on this CPU (" +
                                                ms_text(bf16_ms) + " against " + ms_text(float_ms) +
                                                " ms an image at load)"
                                          : "its bfloat16 graph failed: " + failed) +
                          "; running float32");
}

void Classifier::Impl::build_script() {
  if (!script_pending) return;
  script_pending = false;
  if (bf16_race) {
    try {
      build_bf16_or_float32();
      use_script = true;
      script_size = info.crop_size;
      drop_unused_script();
    } catch (const std::exception& e) {  // LibTorch's c10::Error included
      info.notes.push_back("optimised graph unavailable, running eagerly: " + error_text(e));
      info.warnings.push_back("precision bf16: the optimised graph it is timed on is unavailable (" +
                              error_text(e) + "); running float32");
    }
    return;
  }
  try {
    script = optimised(*eager, info.crop_size, options(), channels_last, &info.notes, &dnnl);
    use_script = true;
    script_size = info.crop_size;
    drop_unused_script();
  } catch (const std::exception& e) {  // LibTorch's c10::Error included
    info.notes.push_back("optimised graph unavailable, running eagerly: " + error_text(e));
  }
}

void Classifier::Impl::setup_int8() {
  if (!int8) return;
  observed = torch::jit::Module();
  executor_int8 = false;
  calibration_left = 0;
  std::string why;
  if (!eager)
    why = "int8 needs weights for a built-in architecture (.pth, .safetensors, a model folder), not " + info.format;
  else if (!use_script || script_size == 0)
    why = "int8 runs the model's optimised graph, which is off or unavailable";
#if PTM_HAVE_DNNL
  // Where the float32 path is ptm's oneDNN executor and the CPU has VNNI,
  // int8 runs on the executor too (8-bit convolutions with the residual
  // adds and activations fused, requantized in place: no quantize and
  // dequantize between LibTorch's quantized ops). PTM_INT8_EXECUTOR=0
  // takes LibTorch's quantized graph instead.
  const char* executor = std::getenv("PTM_INT8_EXECUTOR");
  if (why.empty() && dnnl && runtime::cpu_has_vnni() && !(executor && std::string(executor) == "0")) {
    dnnl->clear_ranges();
    executor_int8 = true;
    calibration_left = calibration_images;
    set_status(calibrating_text(calibration_images));
    return;
  }
#endif
  if (why.empty()) {
    try {
      torch::NoGradGuard no_grad;
      observed = observed_graph(*eager, torch::rand({1, 3, script_size, script_size}, options()));
      calibration_left = calibration_images;
      set_status(calibrating_text(calibration_images));
      return;
    } catch (const std::exception& e) {
      why = "int8 could not be prepared: " + error_text(e);
    }
  }
  set_status("float32: " + why);
  info.warnings.push_back("precision int8: " + why + "; running float32");
}

void Classifier::Impl::finish_int8(const at::Tensor& x) {
  calibration_left = 0;
  std::string why;
  // PTM_INT8_ALWAYS=1 keeps it without timing it (tests, comparisons).
  const char* always = std::getenv("PTM_INT8_ALWAYS");
  const bool keep = always && std::string(always) == "1";
#if PTM_HAVE_DNNL
  if (executor_int8) {
    executor_int8 = false;
    try {
      std::string no;
      std::shared_ptr<DnnlGraph> q = dnnl->int8(&no);
      if (!q) throw ModelError(no);
      // The first pass (timing's warm-up, or this one untimed) makes its
      // plan: a failure shows here.
      if (keep) q->run(x);
      const auto [int8_ms, float_ms] =
          keep ? std::pair<double, double>{0, 1}
               : ms_per_image_in_turns([&] { q->run(x); }, [&] { dnnl->run(x); }, x);
      if (int8_ms * kReducedGain <= float_ms) {
        dnnl = q;
        set_status("int8");
      } else {
        set_status("float32: its int8 graph was not 1.1x as fast (" + ms_text(int8_ms) + " against " +
                   ms_text(float_ms) + " ms an image)");
      }
    } catch (const std::exception& e) {
      set_status("float32: the int8 conversion failed: " + error_text(e));
    }
    return;
  }
#endif
  try {
    set_qparams(observed, !runtime::cpu_has_vnni());
    torch::jit::Module q = quantized_graph(observed);
    // Against the float32 path that runs otherwise: the oneDNN executor
    // where the load kept it, else the optimised graph.
    const auto [int8_ms, float_ms] = keep ? std::pair<double, double>{0, 1}
                                          : ms_per_image_in_turns([&] { q.forward({x}); },
                                                                  [&] { run_optimised(x); }, x);
    if (int8_ms * kReducedGain <= float_ms) {
      script = q;
      dnnl = nullptr;
      set_status("int8");
    } else {
      why = "float32: its int8 graph was not 1.1x as fast (" + ms_text(int8_ms) + " against " + ms_text(float_ms) +
            " ms an image)";
    }
  } catch (const std::exception& e) {
    why = "float32: the int8 conversion failed: " + error_text(e);
  }
  observed = torch::jit::Module();
  if (!why.empty()) set_status(why);
}

// Calibration on up to calibration_images images of a folder (its files
// in name order, those the reader takes).
void Classifier::Impl::calibrate_from(const ClassifierOptions& o) {
  if (o.calibration.empty() || calibration_left <= 0) return;
  if (!o.calibration_reader)
    throw ModelError("calibration from a folder needs an image reader, which this build lacks (OpenCV's imgcodecs)");
  std::vector<std::string> files;
  std::error_code ec;
  for (std::filesystem::directory_iterator it(o.calibration, ec), end; !ec && it != end; it.increment(ec))
    if (it->is_regular_file(ec)) files.push_back(it->path().string());
  if (ec) throw ModelError("calibration folder '" + o.calibration + "': " + ec.message());
  std::sort(files.begin(), files.end());
  const int64_t s = script_size;
  std::vector<float> chw;
  int64_t used = 0;
  for (const auto& f : files) {
    if (calibration_left <= 0) break;
    chw.clear();
    if (!o.calibration_reader(f, info, chw)) continue;
    if (int64_t(chw.size()) != 3 * s * s)
      throw ModelError("calibration image '" + f + "' came out as " + std::to_string(chw.size()) + " values, not 3x" +
                       std::to_string(s) + "x" + std::to_string(s));
    c10::InferenceMode guard;
    run(torch::from_blob(chw.data(), {1, 3, s, s}, at::kFloat).to(dtype));
    ++used;
  }
  if (used == 0) throw ModelError("calibration folder '" + o.calibration + "' has no image ptm can read");
  if (calibration_left > 0) {
    c10::InferenceMode guard;
    calibration_left = 0;
    finish_int8(torch::from_blob(chw.data(), {1, 3, s, s}, at::kFloat).clone());
  }
  info.notes.push_back("int8: calibrated on " + std::to_string(used) + " images of '" + o.calibration + "'");
}

namespace {

[[maybe_unused]] int64_t metadata_int(const PackageInfo& p, const std::string& key, int64_t fallback, const std::string& path) {
  const std::string* v = p.find(key);
  if (!v) return fallback;
  try {
    size_t end = 0;
    const long long n = std::stoll(*v, &end);
    if (end == v->size() && n >= 0 && n <= (1 << 20)) return n;
  } catch (const std::exception&) {
  }
  throw ModelError("'" + path + "': package metadata " + key + " = '" + *v + "' is not a count");
}

[[maybe_unused]] std::array<float, 3> metadata_rgb(const PackageInfo& p, const std::string& key, std::array<float, 3> fallback,
                                  const std::string& path) {
  const std::string* v = p.find(key);
  if (!v) return fallback;
  nlohmann::json j = nlohmann::json::parse(*v, nullptr, false);
  if (!j.is_array() || j.size() != 3 || !j[0].is_number() || !j[1].is_number() || !j[2].is_number())
    throw ModelError("'" + path + "': package metadata " + key + " = '" + *v + "' is not three numbers");
  return {j[0].get<float>(), j[1].get<float>(), j[2].get<float>()};
}

}  // namespace

// An AOTInductor package: the machine code inside runs as compiled (as with
// TorchScript, trusted files only). Everything ptm needs besides comes from
// the metadata tools/ptm-export writes ("ptm.*"); a package exported by
// other means runs with torchvision's 224-pixel defaults, said in the notes.
#if PTM_HAVE_AOTI
namespace {
// A package's compiled code takes LibTorch's C shim (aoti_torch_*) from the
// process. It names no LibTorch itself when the exporting machine's link
// found another one first (pip's torch beside Debian's libtorch-dev), and
// ptm's LibTorch came in with the GStreamer plugin, privately (RTLD_LOCAL):
// its libraries are made global once, before the first package loads.
void expose_libtorch() {
  static std::once_flag once;
  std::call_once(once, [] {
    std::vector<std::string> libs;
    dl_iterate_phdr(
        [](dl_phdr_info* i, size_t, void* out) {
          const std::string name = i->dlpi_name ? i->dlpi_name : "";
          const std::string base = name.substr(name.rfind('/') + 1);
          if (base.rfind("libtorch", 0) == 0 || base.rfind("libc10", 0) == 0)
            static_cast<std::vector<std::string>*>(out)->push_back(name);
          return 0;
        },
        &libs);
    for (const auto& l : libs) dlopen(l.c_str(), RTLD_NOW | RTLD_NOLOAD | RTLD_GLOBAL);
  });
}
}  // namespace
#endif

void Classifier::Impl::load_package(const ClassifierOptions& o) {
  const PackageInfo p = read_package_info(o.model);
#if !PTM_HAVE_AOTI
  (void)p;
  throw ModelError("'" + o.model + "' is an AOTInductor package (.pt2), and this build's LibTorch " TORCH_VERSION
                   " has no package loader (LibTorch 2.6 or later has): run the checkpoint it was exported "
                   "from (.pth/.safetensors) instead, or build ptm against LibTorch >= 2.6 (Debian 13)");
#else
  const std::string& path = o.model;
  if (p.models.empty()) throw ModelError("'" + path + "': the package holds no model");
  const std::string name = p.models.front();
  if (p.models.size() > 1)
    info.notes.push_back("the package holds " + std::to_string(p.models.size()) + " models; running '" + name + "'");
  const std::string* dev = p.find("AOTI_DEVICE_KEY");
  const std::string pkg_device = dev ? *dev : "cpu";
  if ((pkg_device == "cpu") != device.is_cpu())
    throw ModelError("'" + path + "' was exported for " + pkg_device + ", not " + o.device +
                     ": export it again for this device (tools/ptm-export --device)");
  const std::string* prec = p.find("ptm.precision");
  if (prec) {
    const at::ScalarType t = *prec == "float16" ? at::kHalf : *prec == "bfloat16" ? at::kBFloat16 : at::kFloat;
    if (o.precision != Precision::Float32 && t != dtype)
      throw ModelError("'" + path + "' was exported for " + *prec + " input; its precision cannot be changed here");
    dtype = t;
  }
  channels_last = false;
  cuda_graphs = false;
  info.architecture = p.find("ptm.architecture") ? *p.find("ptm.architecture") : "aotinductor";
  info.crop_size = int(metadata_int(p, "ptm.input_size", 224, path));
  info.resize_size = int(metadata_int(p, "ptm.resize_size", info.crop_size * 256 / 224, path));
  if (info.crop_size < 1 || info.resize_size < info.crop_size)
    throw ModelError("'" + path + "': package metadata asks for a " + std::to_string(info.crop_size) + " crop of a " +
                     std::to_string(info.resize_size) + " resize");
  if (const std::string* interp = p.find("ptm.interpolation")) {
    if (*interp != "bilinear" && *interp != "bicubic")
      throw ModelError("'" + path + "': package metadata ptm.interpolation = '" + *interp + "' (bilinear or bicubic)");
    info.bicubic = *interp == "bicubic";
  }
  info.mean = metadata_rgb(p, "ptm.mean", info.mean, path);
  info.std = metadata_rgb(p, "ptm.std", info.std, path);
  info.max_batch = metadata_int(p, "ptm.max_batch", 1, path);
  static_batch = p.find("ptm.dynamic_batch") == nullptr || *p.find("ptm.dynamic_batch") != "1";
  if (!p.find("ptm.input_size"))
    info.notes.push_back("no ptm metadata in the package (not written by ptm-export): assuming 3x224x224 input, "
                         "ImageNet normalisation and batches of 1");
  if (const std::string* labels = p.find("ptm.labels")) {
    nlohmann::json j = nlohmann::json::parse(*labels, nullptr, false);
    if (!j.is_array()) throw ModelError("'" + path + "': package metadata ptm.labels is not a list");
    for (const auto& l : j) package_labels.push_back(l.is_string() ? l.get<std::string>() : l.dump());
  }
  expose_libtorch();
  try {
    package = std::make_unique<torch::inductor::AOTIModelPackageLoader>(path, name);
  } catch (const std::exception& e) {  // LibTorch's c10::Error included
    throw ModelError("'" + path + "' could not be loaded as an AOTInductor package: " + error_text(e));
  }
  torch::NoGradGuard ng;
  try {
    const int64_t b = static_batch ? info.max_batch : 1;
    at::Tensor out = run_package(torch::zeros({b, 3, info.crop_size, info.crop_size}, options()));
    info.num_classes = out.size(1);
  } catch (const c10::Error& e) {
    throw ModelError("'" + path + "': a trial run on zeros failed: " + c10_message(e));
  }
  if (const std::string* c = p.find("ptm.num_classes"); c && std::to_string(info.num_classes) != *c)
    throw ModelError("'" + path + "' returns " + std::to_string(info.num_classes) + " classes, its metadata says " + *c);
  if (!package_labels.empty() && int64_t(package_labels.size()) != info.num_classes)
    throw ModelError("'" + path + "' carries " + std::to_string(package_labels.size()) + " labels for " +
                     std::to_string(info.num_classes) + " classes");
#endif
}

void Classifier::Impl::load_labels(const ClassifierOptions& o) {
  // Labels saved with the weights come before a file beside them: the two
  // files are not replaced at one instant, the labels inside are.
  if (o.labels.empty() && !saved_labels.empty()) {
    if (int64_t(saved_labels.size()) != info.num_classes)
      throw ModelError("'" + o.model + "' carries " + std::to_string(saved_labels.size()) + " labels for " +
                       std::to_string(info.num_classes) + " classes");
    info.labels = saved_labels;
    info.notes.push_back("labels saved inside " + o.model);
    const std::string beside = labels_path_beside(o.model);
    if (::access(beside.c_str(), R_OK) == 0) {
      std::vector<std::string> other;
      try {
        other = read_labels_file(beside);
      } catch (const ModelError&) {
      }
      if (other != saved_labels)
        info.notes.push_back("the labels in " + beside + " differ from those saved inside the model; the model's are "
                             "used (set labels= to use the file)");
    }
    return;
  }
  std::string from;
  info.labels = resolve_labels(o.model, o.labels, info.num_classes, package_labels, &from);
  if (o.labels.empty() && !from.empty()) info.notes.push_back("labels from " + from);
}

Classifier::Classifier(const ClassifierOptions& options) : impl_(std::make_unique<Impl>()) {
  Impl& im = *impl_;
  ClassifierOptions o = options;
  im.info.path = o.model;
  // A hub-style folder: the weights in it, labels and transform from its configs.
  std::optional<ModelFolder> folder;
  if (is_model_folder(o.model)) {
    folder = read_model_folder(o.model);
    o.model = folder->weights;
    im.preferred = folder->architecture.substr(0, folder->architecture.find('.'));  // timm's name.tag
    im.info.notes.insert(im.info.notes.end(), folder->notes.begin(), folder->notes.end());
  }
  im.loading = true;
  im.threads = runtime::resolve_threads(o.threads);
  runtime::init();
  runtime::use_threads(im.threads);
  im.setup_device(o);
  PTM_MODEL_SCOPE(im);
  const FileFormat fmt = sniff_format(o.model);
  im.info.format = format_name(fmt);
  if (fmt == FileFormat::TorchScript)
    im.load_torchscript(o);
  else if (fmt == FileFormat::AOTInductor)
    im.load_package(o);
  else
    im.load_weights(o);
  if (folder) im.apply_folder(*folder, *this);
  im.load_labels(o);
  if (o.input_size > 0 && o.input_size != im.info.crop_size) {
    if (const std::string why = set_input_size(o.input_size); !why.empty())
      throw ModelError("'" + options.model + "' cannot take the input size " + std::to_string(o.input_size) + ": " + why);
  }
  im.build_script();
  im.setup_int8();
  im.calibrate_from(o);
  im.loading = false;
  runtime::release_cached_memory();  // what the load freed (traces, candidates, timing passes)
}

// The folder's transform and labels where its configs give them (explicit
// options, applied after, still win).
void Classifier::Impl::apply_folder(const ModelFolder& f, Classifier& self) {
  const std::string named = f.architecture.substr(0, f.architecture.find('.'));  // timm's name.tag
  if (!f.architecture.empty() && f.architecture != info.architecture && named != info.architecture &&
      "timm/" + named != info.architecture)
    info.notes.push_back("the config names the architecture '" + f.architecture + "'; the weights are " +
                         info.architecture + "'s");
  if (f.input_size > 0 && f.input_size != info.crop_size) {
    if (const std::string why = self.set_input_size(f.input_size); !why.empty())
      throw ModelError("'" + f.path + "': its config's input size " + std::to_string(f.input_size) + " does not fit: " + why);
  }
  if (f.resize_size > 0) info.resize_size = f.resize_size;
  info.stretch = f.stretch;
  if (f.interpolation) info.bicubic = *f.interpolation == Interpolation::Bicubic;
  if (f.mean) info.mean = *f.mean;
  if (f.std) info.std = *f.std;
  if (!f.labels.empty()) {
    if (int64_t(f.labels.size()) == info.num_classes) package_labels = f.labels;
    else
      info.notes.push_back("the config's " + std::to_string(f.labels.size()) + " labels are not used: the model has " +
                           std::to_string(info.num_classes) + " classes");
  }
}

std::string Classifier::set_input_size(int size) {
  Impl& im = *impl_;
  if (size == im.info.crop_size) return "";
  const std::string wanted = std::to_string(size) + "x" + std::to_string(size);
  if (size < 1 || size > 4096) return "input sizes run from 1 to 4096, not " + std::to_string(size);
#if PTM_HAVE_AOTI
  if (im.package)
    return "the .pt2 package was compiled for " + std::to_string(im.info.crop_size) + "x" +
           std::to_string(im.info.crop_size) + " inputs (export it again at " + wanted + ")";
#endif
  PTM_MODEL_SCOPE(im);
  c10::InferenceMode guard;
  // A probe at that size: architectures with position tables or fixed
  // pooling, and TorchScript files traced at one size, fail here.
  try {
    at::Tensor probe = im.prepare(torch::zeros({1, 3, size, size}));
    at::Tensor out = im.eager ? im.eager->forward(probe) : im.script.forward({probe}).toTensor();
    if (out.dim() != 2 || out.size(1) != im.info.num_classes)
      return "at " + wanted + " it gives " + shape_str(out.sizes().vec()) + " outputs, not N x " +
             std::to_string(im.info.num_classes);
  } catch (const std::exception& e) {  // LibTorch's c10::Error included
    return "it does not run at " + wanted + ": " + error_text(e);
  }
  if (im.eager && im.use_script && im.script_size != 0) {
    try {
      im.script = optimised(*im.eager, size, im.options(), im.channels_last, &im.info.notes, &im.dnnl);
      im.script_size = size;
      im.drop_unused_script();
    } catch (const std::exception& e) {
      im.use_script = false;
      im.info.notes.push_back("optimised graph unavailable at " + wanted + ", running eagerly: " + error_text(e));
    }
    im.setup_int8();  // calibrated again, at the new size (below)
  }
  im.info.resize_size = scaled_resize(size, im.info.resize_size, im.info.crop_size);
  im.info.crop_size = size;
  try {
    im.calibrate_from(im.calibration_source);
  } catch (const std::exception& e) {
    im.calibration_left = 0;
    im.observed = torch::jit::Module();
    im.executor_int8 = false;
    im.set_status("float32: calibrating at " + wanted + " failed: " + error_text(e));
  }
  im.input = at::Tensor();  // input_buffer() makes one of the new size
#if PTM_TORCH_CUDA
  im.graphs.clear();
#endif
  // The old size's graphs and the new ones' making (a load does it once, at its end).
  if (!im.loading) runtime::release_cached_memory();
  return "";
}

Classifier::~Classifier() = default;

const ModelInfo& Classifier::info() const { return impl_->info; }

std::string Classifier::int8_status() const {
  if (!impl_->int8) return "";
  const int64_t left = impl_->calibration_left;
  if (left > 0) return calibrating_text(left);
  std::lock_guard<std::mutex> g(impl_->status_lock);
  return impl_->status;
}

const std::string& Classifier::label(int64_t index) const {
  static const std::string unknown = "?";
  const auto& l = impl_->info.labels;
  return index >= 0 && index < int64_t(l.size()) ? l[size_t(index)] : unknown;
}

namespace {
// Architectures with a fixed input size (ViT) refuse others up front, with
// the sizes named, rather than failing inside LibTorch.
void check_input(const at::Tensor& input, const ClassifierModulePtr& eager, const ModelInfo& info) {
  if (input.dim() != 4 || input.size(1) != 3)
    throw ModelError("model input must be N x 3 x H x W, got " + shape_str(input.sizes().vec()));
  const int64_t s = eager ? eager->fixed_input_size() : 0;
  if (s > 0 && (input.size(2) != s || input.size(3) != s))
    throw ModelError(info.architecture + " takes " + std::to_string(s) + "x" + std::to_string(s) +
                     " input (the size its position table was made for), got " + std::to_string(input.size(2)) +
                     "x" + std::to_string(input.size(3)) + " (height x width)");
}
}  // namespace

at::Tensor Classifier::forward_eager(const at::Tensor& input) {
  if (!impl_->eager)
    throw ModelError("'" + impl_->info.path + "' (" + impl_->info.format + ") has no eager model, only its graph");
  check_input(input, impl_->eager, impl_->info);
  c10::InferenceMode guard;
  PTM_MODEL_SCOPE(*impl_);
  try {
    return impl_->eager->forward(impl_->prepare(input)).to(at::kFloat);
  } catch (const std::exception& e) {
    throw ModelError("inference failed: " + error_text(e));
  }
}

at::Tensor Classifier::forward(const at::Tensor& input) {
  check_input(input, impl_->eager, impl_->info);
  c10::InferenceMode guard;
  PTM_MODEL_SCOPE(*impl_);
  try {
    return impl_->run(impl_->prepare(input)).to(at::kFloat);
  } catch (const std::exception& e) {  // LibTorch's c10::Error included
    throw ModelError("inference failed: " + error_text(e));
  }
}

void Classifier::forward(const float* input, int64_t n, int64_t h, int64_t w, std::vector<float>& logits) {
  at::Tensor x = torch::from_blob(const_cast<float*>(input), {n, 3, h, w}, at::kFloat);
  at::Tensor y = forward(x).to(torch::kCPU).contiguous();
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
  check_input(input, impl_->eager, impl_->info);
  c10::InferenceMode guard;
  PTM_MODEL_SCOPE(*impl_);
  const auto& m = impl_->eager;
  return m->pre_logits(m->embed(impl_->prepare(input))).to(torch::kCPU, at::kFloat);
}

int64_t Classifier::feature_size() const {
  require_linear_head(impl_->eager, impl_->info);
  return impl_->eager->named_parameters()[head_prefix() + ".weight"].size(1);
}

std::string Classifier::head_prefix() const {
  const ArchInfo* a = find_architecture(impl_->info.architecture);
  return a ? a->head : "";
}

std::vector<std::string> Classifier::head_prefixes() const {
  const ArchInfo* a = find_architecture(impl_->info.architecture);
  if (!a) return {};
  if (a->second_head.empty()) return {a->head};
  return {a->head, a->second_head};
}

StateDict Classifier::state_dict() const {
  require_linear_head(impl_->eager, impl_->info);
  StateDict sd;
  auto host = [](const at::Tensor& t) {
    return t.detach().to(torch::kCPU, t.is_floating_point() ? at::kFloat : t.scalar_type()).contiguous();
  };
  for (const auto& p : impl_->eager->named_parameters(true)) sd.entries.push_back({p.key(), host(p.value())});
  for (const auto& b : impl_->eager->named_buffers(true)) sd.entries.push_back({b.key(), host(b.value())});
  return sd;
}

bool Classifier::on_cuda() const { return impl_->device.is_cuda(); }

int Classifier::cuda_device() const { return impl_->device.is_cuda() ? int(impl_->device.index()) : -1; }

void* Classifier::cuda_stream() const {
#if PTM_TORCH_CUDA
  if (impl_->stream) return impl_->stream->stream();
#endif
  return nullptr;
}

Classifier::InputBuffer Classifier::input_buffer(int64_t capacity) {
  Impl& im = *impl_;
  const int64_t s = im.info.crop_size;
  if (!im.input.defined() || im.input.size(0) < capacity) {
    PTM_MODEL_SCOPE(im);
    c10::InferenceMode guard;
    try {
      // Grows by doubling and keeps the images already written.
      const int64_t old = im.input.defined() ? im.input.size(0) : 0;
      at::Tensor grown = torch::zeros({std::max<int64_t>({capacity, 2 * old, 1}), 3, s, s}, im.options())
                             .contiguous(im.channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);
      if (old > 0) grown.narrow(0, 0, old).copy_(im.input);
      im.input = grown;
    } catch (const c10::Error& e) {
      throw ModelError("cannot allocate the model input: " + c10_message(e));
    }
#if PTM_TORCH_CUDA
    im.graphs.clear();  // they were captured on the old input
#endif
  }
  InputBuffer b;
  b.data = im.input.data_ptr();
  b.image_elements = 3 * s * s;
  b.size = int(s);
  b.type = im.dtype == at::kHalf ? Precision::Float16 : im.dtype == at::kBFloat16 ? Precision::BFloat16 : Precision::Float32;
  b.channels_last = im.channels_last;
  b.cuda = im.device.is_cuda();
  b.device = b.cuda ? int(im.device.index()) : -1;
  return b;
}

void Classifier::write_input(int64_t index, const float* chw, bool on_device) {
  Impl& im = *impl_;
  if (!im.input.defined() || index < 0 || index >= im.input.size(0))
    throw ModelError("model input slot " + std::to_string(index) + " does not exist");
  const int64_t s = im.info.crop_size;
  PTM_MODEL_SCOPE(im);
  c10::InferenceMode guard;
  try {
    const auto where = on_device ? im.device : torch::Device(torch::kCPU);
    at::Tensor src = torch::from_blob(const_cast<float*>(chw), {3, s, s}, at::TensorOptions().dtype(at::kFloat).device(where));
    im.input[index].copy_(src);
  } catch (const c10::Error& e) {
    throw ModelError("cannot write the model input: " + c10_message(e));
  }
}

void Classifier::run_input(int64_t n, int k, int fn, std::vector<float>& scores, std::vector<int64_t>& indices) {
  Impl& im = *impl_;
  if (!im.input.defined() || n < 1 || n > im.input.size(0))
    throw ModelError("run_input: " + std::to_string(n) + " images requested, input holds " +
                     std::to_string(im.input.defined() ? im.input.size(0) : 0));
  PTM_MODEL_SCOPE(im);
  c10::InferenceMode guard;
  try {
    at::Tensor x = im.input.narrow(0, 0, n);
    at::Tensor y;
#if PTM_TORCH_CUDA
    if (im.cuda_graphs) {
      try {
        y = im.replay(n, x);
      } catch (const c10::Error& e) {
        im.cuda_graphs = false;
        im.graphs.clear();
        im.info.notes.push_back("CUDA graphs turned off: " + c10_message(e));
      }
    }
    if (!y.defined())
#endif
      y = im.run(x);
    y = y.to(at::kFloat);
    if (k > 0) {
      if (fn == 1) y = torch::softmax(y, 1);
      if (fn == 2) y = torch::sigmoid(y);
      auto top = y.topk(std::min<int64_t>(k, y.size(1)), 1);
      at::Tensor v = std::get<0>(top).to(torch::kCPU).contiguous();
      at::Tensor i = std::get<1>(top).to(torch::kCPU).contiguous();
      scores.assign(v.data_ptr<float>(), v.data_ptr<float>() + v.numel());
      indices.assign(i.data_ptr<int64_t>(), i.data_ptr<int64_t>() + i.numel());
    } else {
      y = y.to(torch::kCPU).contiguous();
      scores.assign(y.data_ptr<float>(), y.data_ptr<float>() + y.numel());
      indices.clear();
    }
  } catch (const c10::Error& e) {
    throw ModelError("inference failed: " + c10_message(e));
  }
}

void Classifier::warm_up() {
  Impl& im = *impl_;
  PTM_MODEL_SCOPE(im);
  c10::InferenceMode guard;
  const int64_t left = im.calibration_left.exchange(0);
  try {
    const int64_t s = im.info.crop_size;
    im.run(im.prepare(torch::zeros({1, 3, s, s})));
  } catch (const c10::Error& e) {
    im.calibration_left = left;
    throw ModelError("inference failed: " + c10_message(e));
  }
  im.calibration_left = left;
}

double dnnl_graph_error(ClassifierModuleImpl& m, int64_t size, const std::vector<int64_t>& batches, std::string* why,
                        bool bf16, DnnlPlanCounts* plan) {
#if PTM_HAVE_DNNL
  torch::NoGradGuard no_grad;
  m.eval();
  std::vector<at::Tensor> inputs, wants;
  for (const int64_t n : batches) {
    inputs.push_back(torch::randn({n, 3, size, size}));
    wants.push_back(m.forward(inputs.back()));  // float32, before the model turns bfloat16
  }
  if (bf16) m.to(at::kBFloat16);
  const auto as_input = [bf16](const at::Tensor& x) {
    return bf16 ? x.to(at::kBFloat16).contiguous(at::MemoryFormat::ChannelsLast) : x;
  };
  torch::jit::Module frozen = torch::jit::freeze(traced(m, as_input(torch::rand({1, 3, size, size}))));
  const std::unique_ptr<DnnlGraph> g = DnnlGraph::compile(frozen, why);
  if (!g) return -1;
  double worst = 0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const at::Tensor& want = wants[i];
    const at::Tensor got = g->run(as_input(inputs[i]));
    if (got.sizes() != want.sizes())
      throw ModelError("the oneDNN graph gave " + shape_str(got.sizes().vec()) + ", the model " +
                       shape_str(want.sizes().vec()));
    worst = std::max(worst, relative_error(got, want));
  }
  if (plan) *plan = {g->winograd_convolutions(), g->channel_scales(), g->folded_scales(), g->activation_bytes(),
                     g->scratchpad_bytes()};
  return worst;
#else
  (void)m, (void)size, (void)batches, (void)bf16, (void)plan;
  if (why) *why = "this build has no oneDNN graph executor (libdnnl-dev absent, or a LibTorch of its own oneDNN)";
  return -1;
#endif
}

double dnnl_int8_error(ClassifierModuleImpl& m, int64_t size, int calibration, std::string* why, int* int8_convolutions) {
#if PTM_HAVE_DNNL
  torch::NoGradGuard no_grad;
  m.eval();
  torch::jit::Module frozen = torch::jit::freeze(traced(m, torch::rand({1, 3, size, size})));
  const std::unique_ptr<DnnlGraph> g = DnnlGraph::compile(frozen, why);
  if (!g) return -1;
  for (int i = 0; i < calibration; ++i) g->calibrate(torch::randn({1, 3, size, size}));
  const std::unique_ptr<DnnlGraph> q = g->int8(why);
  if (!q) return -1;
  const at::Tensor x = torch::randn({3, 3, size, size});
  const at::Tensor want = m.forward(x), got = q->run(x);
  if (got.sizes() != want.sizes())
    throw ModelError("the int8 graph gave " + shape_str(got.sizes().vec()) + ", the model " +
                     shape_str(want.sizes().vec()));
  if (int8_convolutions) *int8_convolutions = q->int8_convolutions();
  return relative_error(got, want);
#else
  (void)m, (void)size, (void)calibration, (void)int8_convolutions;
  if (why) *why = "this build has no oneDNN graph executor (libdnnl-dev absent, or a LibTorch of its own oneDNN)";
  return -1;
#endif
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
