#include "dnnl_graph.h"

#include <torch/script.h>
#include <oneapi/dnnl/dnnl.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <vector>

#include "channel_scale.h"
#include "error.h"

#if DNNL_VERSION_MAJOR >= 3
#define PTM_DNNL3 1
#else
#define PTM_DNNL3 0
#endif

namespace ptm {

namespace {

using dnnl::algorithm;
using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;
using Dims = memory::dims;

// One elementwise step (an activation may take two: hardsigmoid).
struct Act {
  algorithm alg;
  float alpha = 0, beta = 0;
};

enum class Kind { Conv, Act, Add, Mul, Scale, MaxPool, AvgPool, AdaptivePool, Flatten, Linear, Cat, Alias };

// An op of the graph, its tensors named by value ids.
struct Op {
  Kind kind;
  std::string name;  // the node's kind, for messages
  std::vector<int> in;
  int out = -1;
  at::Tensor weight, bias;  // Conv, Linear (contiguous float32)
  std::vector<int64_t> stride, padding, dilation, kernel, out_size;
  int64_t groups = 1;
  bool ceil_mode = false, count_include_pad = true;
  bool keepdim = true;  // AdaptivePool from aten::mean: false drops H and W
  std::vector<Act> acts;       // Act; Conv: fused before the sum
  int sum = -1;                // Conv: the value its output is added to
  std::vector<Act> after_sum;  // Conv: fused after the sum
  float scale = 1;             // Scale
  bool dead = false;           // fused into a later op
};

std::optional<std::vector<int64_t>> ints(torch::jit::Value* v) {
  torch::jit::Node* n = v->node();
  std::vector<int64_t> r;
  if (n->kind() == c10::prim::ListConstruct) {
    for (torch::jit::Value* i : n->inputs()) {
      const auto x = torch::jit::toIValue(i);
      if (!x || !x->isInt()) return std::nullopt;
      r.push_back(x->toInt());
    }
    return r;
  }
  const auto x = torch::jit::toIValue(v);
  if (!x) return std::nullopt;
  if (x->isInt()) return std::vector<int64_t>{x->toInt()};
  if (x->isIntList()) return x->toIntVector();
  return std::nullopt;
}

std::optional<double> number(torch::jit::Value* v) {
  const auto x = torch::jit::toIValue(v);
  if (!x) return std::nullopt;
  if (x->isDouble()) return x->toDouble();
  if (x->isInt()) return double(x->toInt());
  return std::nullopt;
}

std::optional<bool> boolean(torch::jit::Value* v) {
  const auto x = torch::jit::toIValue(v);
  if (!x || !x->isBool()) return std::nullopt;
  return x->toBool();
}

bool is_none(torch::jit::Value* v) {
  const auto x = torch::jit::toIValue(v);
  return x && x->isNone();
}

// A constant float tensor input (a frozen weight), contiguous float32;
// undefined for None.
std::optional<at::Tensor> constant_tensor(torch::jit::Value* v) {
  const auto x = torch::jit::toIValue(v);
  if (!x) return std::nullopt;
  if (x->isNone()) return at::Tensor();
  if (!x->isTensor()) return std::nullopt;
  at::Tensor t = x->toTensor();
  if (!t.device().is_cpu() || (t.scalar_type() != at::kFloat && t.scalar_type() != at::kBFloat16)) return std::nullopt;
  return t.to(at::kFloat).contiguous();  // a bfloat16 graph's weights: exact in float32
}

// Two-element spatial parameters (PyTorch takes one for both sides).
std::optional<std::vector<int64_t>> pair(torch::jit::Value* v) {
  auto x = ints(v);
  if (!x) return std::nullopt;
  if (x->size() == 1) x->push_back(x->front());
  if (x->size() != 2) return std::nullopt;
  return x;
}

std::optional<std::vector<Act>> activation(torch::jit::Node* n) {
  std::string k = n->kind().toQualString();
  if (k.size() > 1 && k.back() == '_') k.pop_back();
  if (k == "aten::relu") return std::vector<Act>{{algorithm::eltwise_relu, 0, 0}};
  if (k == "aten::relu6") return std::vector<Act>{{algorithm::eltwise_clip, 0, 6}};
  if (k == "aten::silu") return std::vector<Act>{{algorithm::eltwise_swish, 1, 0}};
  if (k == "aten::sigmoid") return std::vector<Act>{{algorithm::eltwise_logistic, 0, 0}};
  if (k == "aten::tanh") return std::vector<Act>{{algorithm::eltwise_tanh, 0, 0}};
  if (k == "aten::hardswish") return std::vector<Act>{{algorithm::eltwise_hardswish, 1.f / 6, 0.5f}};
  if (k == "aten::hardsigmoid")
    return std::vector<Act>{{algorithm::eltwise_linear, 1.f / 6, 0.5f}, {algorithm::eltwise_clip, 0, 1}};
  if (k == "aten::hardtanh" && n->inputs().size() == 3) {
    const auto lo = number(n->input(1)), hi = number(n->input(2));
    if (!lo || !hi) return std::nullopt;
    return std::vector<Act>{{algorithm::eltwise_clip, float(*lo), float(*hi)}};
  }
  if (k == "aten::leaky_relu" && n->inputs().size() == 2) {
    const auto slope = number(n->input(1));
    if (!slope) return std::nullopt;
    return std::vector<Act>{{algorithm::eltwise_relu, float(*slope), 0}};
  }
  if (k == "aten::gelu") {
    if (n->inputs().size() == 1) return std::vector<Act>{{algorithm::eltwise_gelu_erf, 0, 0}};
    const auto how = torch::jit::toIValue(n->input(1));
    if (how && how->isString() && how->toStringRef() == "none")
      return std::vector<Act>{{algorithm::eltwise_gelu_erf, 0, 0}};
    if (how && how->isString() && how->toStringRef() == "tanh")
      return std::vector<Act>{{algorithm::eltwise_gelu_tanh, 0, 0}};
  }
  return std::nullopt;
}

struct Parsed {
  std::vector<Op> ops;
  int input = -1, output = -1, values = 0;
};

// The graph as ops, or the reason it cannot be.
std::optional<Parsed> parse(const std::shared_ptr<torch::jit::Graph>& g, std::string& why) {
  Parsed p;
  std::unordered_map<torch::jit::Value*, int> id;
  if (g->inputs().size() != 2 || g->outputs().size() != 1) {
    why = "the graph does not take one tensor and return one";
    return std::nullopt;
  }
  id[g->inputs()[1]] = p.input = p.values++;
  auto tensor_in = [&](torch::jit::Value* v) -> int {
    const auto it = id.find(v);
    return it == id.end() ? -1 : it->second;
  };
  for (torch::jit::Node* n : g->nodes()) {
    const std::string k = n->kind().toQualString();
    if (k == "prim::Constant" || k == "prim::ListConstruct") continue;  // read by their users
    Op op;
    op.name = k;
    const auto fail = [&](const std::string& what) {
      why = k + ": " + what;
      return std::nullopt;
    };
    if (n->outputs().size() != 1) return fail("more than one output");
    const int x = n->inputs().empty() ? -1 : tensor_in(n->input(0));
    if (k == "aten::cat") {
      torch::jit::Node* list = n->input(0)->node();
      const auto dim = ints(n->input(1));
      if (list->kind() != c10::prim::ListConstruct || !dim || dim->size() != 1 || (*dim)[0] != 1)
        return fail("only a list of tensors joined along channels");
      op.kind = Kind::Cat;
      for (torch::jit::Value* v : list->inputs()) {
        if (tensor_in(v) < 0) return fail("an input this executor did not make");
        op.in.push_back(tensor_in(v));
      }
    } else if (x < 0) {
      return fail("its input is not a tensor this executor made");
    } else if (auto acts = activation(n)) {
      op.kind = Kind::Act;
      op.acts = *acts;
      op.in = {x};
    } else if ((k == "aten::conv2d" && n->inputs().size() == 7) ||
               (k == "aten::_convolution" && n->inputs().size() >= 9)) {
      const bool plain = k == "aten::conv2d";
      const auto w = constant_tensor(n->input(1)), b = constant_tensor(n->input(2));
      const auto stride = pair(n->input(3)), padding = pair(n->input(4)), dilation = pair(n->input(5));
      const auto groups = ints(n->input(plain ? 6 : 8));
      if (!w || !w->defined() || w->dim() != 4 || !b || !stride || !padding || !dilation || !groups ||
          groups->size() != 1)
        return fail("weights or parameters that are not constants");
      if (!plain) {
        const auto transposed = boolean(n->input(6));
        if (!transposed || *transposed) return fail("transposed");
      }
      op.kind = Kind::Conv;
      op.weight = *w;
      op.bias = *b;
      op.stride = *stride;
      op.padding = *padding;
      op.dilation = *dilation;
      op.groups = (*groups)[0];
      op.in = {x};
    } else if (k == "aten::linear") {
      const auto w = constant_tensor(n->input(1)), b = constant_tensor(n->input(2));
      if (!w || !w->defined() || w->dim() != 2 || !b) return fail("weights that are not constants");
      op.kind = Kind::Linear;
      op.weight = *w;
      op.bias = *b;
      op.in = {x};
    } else if (k == "aten::add" || k == "aten::add_" || k == "aten::mul" || k == "aten::mul_") {
      const bool add = k.rfind("aten::add", 0) == 0;
      if (add && (n->inputs().size() != 3 || number(n->input(2)) != std::optional<double>(1.0)))
        return fail("an alpha other than 1");
      const int y = tensor_in(n->input(1));
      if (y >= 0) {
        op.kind = add ? Kind::Add : Kind::Mul;
        op.in = {x, y};
      } else if (!add && number(n->input(1))) {
        op.kind = Kind::Scale;
        op.scale = float(*number(n->input(1)));
        op.in = {x};
      } else {
        return fail("an operand that is not a tensor this executor made");
      }
    } else if (k == "aten::max_pool2d" || k == "aten::avg_pool2d") {
      const bool max = k == "aten::max_pool2d";
      const auto kernel = pair(n->input(1)), padding = pair(n->input(3));
      auto stride = ints(n->input(2));
      if (stride && stride->empty()) stride = kernel;
      if (stride && stride->size() == 1) stride->push_back(stride->front());
      const auto ceil = boolean(n->input(max ? 5 : 4));
      if (!kernel || !padding || !stride || stride->size() != 2 || !ceil) return fail("parameters that are not constants");
      if (max) {
        const auto dilation = pair(n->input(4));
        if (!dilation || (*dilation)[0] != 1 || (*dilation)[1] != 1) return fail("dilation");
      } else {
        const auto include = boolean(n->input(5));
        if (!include || n->inputs().size() != 7 || !is_none(n->input(6))) return fail("a divisor override");
        op.count_include_pad = *include;
      }
      op.kind = max ? Kind::MaxPool : Kind::AvgPool;
      op.kernel = *kernel;
      op.stride = *stride;
      op.padding = *padding;
      op.ceil_mode = *ceil;
      op.in = {x};
    } else if (k == "aten::adaptive_avg_pool2d") {
      const auto size = pair(n->input(1));
      if (!size) return fail("an output size that is not a constant");
      op.kind = Kind::AdaptivePool;
      op.out_size = *size;
      op.in = {x};
    } else if (k == "aten::mean" && n->inputs().size() == 4) {
      // Over height and width: global average pooling.
      const auto dims = ints(n->input(1));
      const auto keep = boolean(n->input(2));
      if (!dims || !keep || !is_none(n->input(3))) return fail("parameters that are not constants");
      std::vector<int64_t> d = *dims;
      for (int64_t& i : d)
        if (i < 0) i += 4;
      std::sort(d.begin(), d.end());
      if (d != std::vector<int64_t>{2, 3}) return fail("a mean over other dimensions than height and width");
      op.kind = Kind::AdaptivePool;
      op.out_size = {1, 1};
      op.keepdim = *keep;
      op.in = {x};
    } else if (k == "aten::flatten") {
      const auto from = ints(n->input(1)), to = ints(n->input(2));
      if (!from || !to || (*from)[0] != 1 || ((*to)[0] != -1 && (*to)[0] != 3)) return fail("dimensions other than 1..-1");
      op.kind = Kind::Flatten;
      op.in = {x};
    } else if (k == "aten::dropout" || k == "aten::dropout_" || k == "aten::contiguous" || k == "aten::detach" ||
               k == "aten::clone") {
      if (k.rfind("aten::dropout", 0) == 0 && boolean(n->input(2)) != std::optional<bool>(false))
        return fail("training mode");
      op.kind = Kind::Alias;
      op.in = {x};
    } else {
      why = "no " + k;
      return std::nullopt;
    }
    id[n->output()] = op.out = p.values++;
    p.ops.push_back(std::move(op));
  }
  p.output = tensor_in(g->outputs()[0]);
  if (p.output < 0) {
    why = "the graph's output is not a tensor this executor made";
    return std::nullopt;
  }
  return p;
}

// Fuses activations and residual adds into the convolution before them.
// A fused convolution runs where the last op it took in stood (the add's
// other operand is made by then).
void fuse(Parsed& p) {
  std::vector<int> uses(p.values, 0), consumer(p.values, -1);
  for (size_t i = 0; i < p.ops.size(); ++i)
    for (int v : p.ops[i].in) {
      ++uses[v];
      consumer[v] = int(i);
    }
  ++uses[p.output];
  for (size_t i = 0; i < p.ops.size(); ++i) {
    if (p.ops[i].kind != Kind::Conv) continue;
    size_t at = i;
    for (;;) {
      Op& conv = p.ops[at];
      const int v = conv.out;
      if (uses[v] != 1 || consumer[v] < 0) break;
      Op& next = p.ops[size_t(consumer[v])];
      if (next.kind == Kind::Act) {
        auto& into = conv.sum >= 0 ? conv.after_sum : conv.acts;
        into.insert(into.end(), next.acts.begin(), next.acts.end());
      } else if (next.kind == Kind::Add && conv.sum < 0 && next.in[0] != next.in[1]) {
        conv.sum = next.in[0] == v ? next.in[1] : next.in[0];
      } else {
        break;
      }
      const size_t to = size_t(consumer[v]);
      const int out = next.out;
      Op merged = std::move(conv);
      merged.out = out;
      conv.dead = true;
      p.ops[to] = std::move(merged);
      at = to;
    }
  }
}

struct Engine {
  dnnl::engine eng{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{eng};
};

// ---- primitive descriptors across oneDNN 2.x and 3.x ----

void append(dnnl::post_ops& po, const Act& a) {
#if PTM_DNNL3
  po.append_eltwise(a.alg, a.alpha, a.beta);
#else
  po.append_eltwise(1.f, a.alg, a.alpha, a.beta);
#endif
}

dnnl::convolution_forward::primitive_desc conv_pd(const dnnl::engine& e, const memory::desc& src,
                                                  const memory::desc& w, const memory::desc* b,
                                                  const memory::desc& dst, const Dims& strides, const Dims& dil,
                                                  const Dims& pad_l, const Dims& pad_r, const dnnl::primitive_attr& a,
                                                  algorithm alg = algorithm::convolution_direct) {
  const auto p = dnnl::prop_kind::forward_inference;
#if PTM_DNNL3
  if (b) return {e, p, alg, src, w, *b, dst, strides, dil, pad_l, pad_r, a};
  return {e, p, alg, src, w, dst, strides, dil, pad_l, pad_r, a};
#else
  if (b) return {dnnl::convolution_forward::desc(p, alg, src, w, *b, dst, strides, dil, pad_l, pad_r), a, e};
  return {dnnl::convolution_forward::desc(p, alg, src, w, dst, strides, dil, pad_l, pad_r), a, e};
#endif
}

// Whether a convolution is worth trying as Winograd F(2x2, 3x3): oneDNN
// 2.x has it for float32 on AVX-512 (3.x dropped it on the CPU). 3x3,
// stride 1, no dilation, no groups, outputs of 14 x 14 and more: there it
// ran 1.4-1.8x faster than the direct convolution on ResNet's layers (2
// threads, AVX-512 Xeon), within 3e-6 of the largest output; at 7 x 7 it
// gained nothing.
bool winograd_fits(dt act, int64_t groups, int64_t kh, int64_t kw, const std::vector<int64_t>& stride,
                   const std::vector<int64_t>& dilation, const Dims& out) {
  if (PTM_DNNL3 || act != dt::f32) return false;
  const char* off = std::getenv("PTM_DNNL_WINOGRAD");  // "0": direct convolutions only (read as plans are made)
  return !(off && std::string(off) == "0") && groups == 1 && kh == 3 && kw == 3 && stride[0] == 1 &&
         stride[1] == 1 && dilation[0] == 1 && dilation[1] == 1 && out[2] * out[3] >= 14 * 14;
}

dnnl::inner_product_forward::primitive_desc linear_pd(const dnnl::engine& e, const memory::desc& src,
                                                      const memory::desc& w, const memory::desc* b,
                                                      const memory::desc& dst, const dnnl::primitive_attr& a) {
  const auto p = dnnl::prop_kind::forward_inference;
#if PTM_DNNL3
  if (b) return {e, p, src, w, *b, dst, a};
  return {e, p, src, w, dst, a};
#else
  if (b) return {dnnl::inner_product_forward::desc(p, src, w, *b, dst), a, e};
  return {dnnl::inner_product_forward::desc(p, src, w, dst), a, e};
#endif
}

dnnl::pooling_forward::primitive_desc pool_pd(const dnnl::engine& e, algorithm alg, const memory::desc& src,
                                              const memory::desc& dst, const Dims& strides, const Dims& kernel,
                                              const Dims& pad_l, const Dims& pad_r, const dnnl::primitive_attr& a) {
  const auto p = dnnl::prop_kind::forward_inference;
#if PTM_DNNL3
  return {e, p, alg, src, dst, strides, kernel, Dims{0, 0}, pad_l, pad_r, a};
#else
  return {dnnl::pooling_forward::desc(p, alg, src, dst, strides, kernel, pad_l, pad_r), a, e};
#endif
}

dnnl::eltwise_forward::primitive_desc eltwise_pd(const dnnl::engine& e, const Act& act, const memory::desc& md,
                                                 const dnnl::primitive_attr& a) {
  const auto p = dnnl::prop_kind::forward_inference;
#if PTM_DNNL3
  return {e, p, act.alg, md, md, act.alpha, act.beta, a};
#else
  return {dnnl::eltwise_forward::desc(p, act.alg, md, act.alpha, act.beta), a, e};
#endif
}

dnnl::binary::primitive_desc binary_pd(const dnnl::engine& e, algorithm alg, const memory::desc& a0,
                                       const memory::desc& a1, const memory::desc& dst,
                                       const dnnl::primitive_attr& a) {
#if PTM_DNNL3
  return {e, alg, a0, a1, dst, a};
#else
  return {dnnl::binary::desc(alg, a0, a1, dst), a, e};
#endif
}

dnnl::concat::primitive_desc concat_pd(const dnnl::engine& e, const std::vector<memory::desc>& srcs,
                                       const dnnl::primitive_attr& a) {
#if PTM_DNNL3
  return {e, 1, srcs, a};
#else
  return {1, srcs, e, a};
#endif
}

memory::desc plain(const Dims& d, dt type = dt::f32) {
  return {d, type, d.size() == 4 ? tag::abcd : d.size() == 2 ? tag::ab : d.size() == 5 ? tag::abcde : tag::a};
}

dt type_of(const memory::desc& md) {
#if PTM_DNNL3
  return md.get_data_type();
#else
  return md.data_type();
#endif
}

bool is_int8(const memory::desc& md) { return type_of(md) == dt::u8 || type_of(md) == dt::s8; }

// md's layout with values of type `to` (of the same size where md is
// blocked on oneDNN 3.x); nullopt where it cannot be said.
std::optional<memory::desc> retyped(const memory::desc& md, dt to) {
#if PTM_DNNL3
  if (md.get_format_kind() != memory::format_kind::blocked || md.get_inner_nblks() != 0) return std::nullopt;
  return memory::desc(md.get_dims(), to, md.get_strides());
#else
  if (md.data.format_kind != dnnl_blocked) return std::nullopt;
  memory::desc d = md;
  d.data.data_type = memory::convert_to_c(to);
  return d;
#endif
}

// An activation a convolution's int8 output can carry: on oneDNN 2.x its
// post-ops run on the output already divided by the output's scale, which
// ReLU, clipping and linear steps follow (their bounds divided too);
// oneDNN 3.x divides after them, so any.
bool scales_through(const Act& a) {
  return PTM_DNNL3 || a.alg == algorithm::eltwise_relu || a.alg == algorithm::eltwise_clip ||
         a.alg == algorithm::eltwise_linear;
}

struct Buffer {
  void* data = nullptr;
  size_t bytes = 0;
  int refs = 0;
  ~Buffer() { std::free(data); }
};

// One of a plan's activation buffers: a place in the graph's arena.
struct Slot {
  size_t bytes = 0;
  size_t offset = 0;
  int refs = 0;
};

// The primitives and buffers for one input shape.
struct Plan {
  struct Step {
    std::function<dnnl::primitive()> make;  // called once the plan's memory is in place
    dnnl::primitive prim;
    std::unordered_map<int, memory> args;
    bool scratch = false;
    std::function<void()> run;  // a step of ptm's own instead of a primitive
  };
  std::vector<Step> steps;
  memory input, output;
  Dims out_dims;
  // The activations live in the graph's arena, shared by its plans (one
  // runs at a time): each plan's memory objects over it, by offset, and
  // the arena (and scratchpad) sizes it needs.
  std::vector<Slot> buffers;
  std::vector<std::pair<memory, size_t>> bind;
  size_t bytes = 0;
  memory scratch;
  size_t scratch_bytes = 0;
  uint64_t used = 0;  // when it last ran (the graph's count of passes)
  bool guarded = false;  // DnnlGraph::check_bounds: a guard band after each buffer
  int winograd = 0;  // convolutions run as Winograd
  int scales = 0;    // channel scales run by scale_channels
  int folded = 0;    // channel scales folded into the next convolution's weights
  int int8 = 0;      // convolutions run in 8 bits
  std::vector<std::unique_ptr<std::vector<float>>> consts;  // scales passed to primitives as memory
};

// The channel layouts scale_channels reads: per image, `outer` runs of
// `inner` values, value k of run r in channel channel(r, k).
struct ChannelLayout {
  int64_t outer = 0, inner = 0, block = 0;  // block: 0 planar (NCHW), 1 NHWC, else channels in blocks of that many
};

// x's float32 layout as scale_channels takes it: NCHW, NHWC, or channels
// in blocks of 8 or 16 with no padding (aBcd8b, aBcd16b).
std::optional<ChannelLayout> channel_layout(const memory::desc& md, const Dims& d) {
  if (d.size() != 4) return std::nullopt;
  const int64_t c = d[1], hw = d[2] * d[3];
  if (md == memory::desc(d, dt::f32, tag::abcd)) return ChannelLayout{c, hw, 0};
  if (md == memory::desc(d, dt::f32, tag::acdb)) return ChannelLayout{hw, c, 1};
  if (c % 16 == 0 && md == memory::desc(d, dt::f32, tag::aBcd16b)) return ChannelLayout{c / 16 * hw, 16, 16};
  if (c % 8 == 0 && md == memory::desc(d, dt::f32, tag::aBcd8b)) return ChannelLayout{c / 8 * hw, 8, 8};
  return std::nullopt;
}

}  // namespace

struct DnnlGraph::Impl {
  Parsed graph;
  Engine e;
  // int8: the range of each value recorded by calibrate() (lo > hi: never
  // seen), and whether this graph runs convolutions in 8 bits.
  std::vector<float> lo, hi;
  bool q = false;
  std::mutex lock;
  std::map<std::vector<int64_t>, std::unique_ptr<Plan>> plans;
  uint64_t passes = 0;
  static constexpr size_t kPlans = 8;
  // The plans' activations and scratchpad: as large as the largest plan
  // made needs, rebound when a new one needs more.
  Buffer arena, scratch;
  // Weights in the layout a primitive asked for, by op: shared by plans.
  std::map<size_t, std::vector<std::pair<memory::desc, memory>>> packed;
  std::vector<std::unique_ptr<Buffer>> packed_buffers;

  // Weights to be reordered into a layout a plan's primitive asked for.
  struct Pending {
    size_t op;
    at::Tensor w;
    memory::desc from;
    memory dst;
    std::unique_ptr<Buffer> buffer;
  };

  // `w` in layout `want`: packed by an earlier plan, or added to `pending`
  // (its memory bound when the plan's memory is allocated: finish_packing).
  memory pack(size_t op, const at::Tensor& w, const memory::desc& from, const memory::desc& want,
              std::vector<Pending>& pending) {
    for (auto& [d, m] : packed[op])
      if (d == want) return m;
    for (Pending& p : pending)
      if (p.op == op && p.dst.get_desc() == want) return p.dst;
    auto b = std::make_unique<Buffer>();
    b->bytes = want.get_size();
    pending.push_back({op, w, from, memory(want, e.eng, DNNL_MEMORY_NONE), std::move(b)});
    return pending.back().dst;
  }

  void finish_packing(std::vector<Pending>& pending) {
    for (Pending& p : pending) {
      p.buffer->data = std::aligned_alloc(64, (p.buffer->bytes + 63) / 64 * 64);
      if (!p.buffer->data) throw ModelError("out of memory packing weights");
    }
    for (Pending& p : pending) {
      p.dst.set_data_handle(p.buffer->data);
      memory src(p.from, e.eng, p.w.data_ptr());
      dnnl::reorder(src, p.dst).execute(e.stream, src, p.dst);
    }
    e.stream.wait();
    for (Pending& p : pending) {
      packed[p.op].emplace_back(p.dst.get_desc(), p.dst);
      packed_buffers.push_back(std::move(p.buffer));
    }
  }

  // Activations in `act` (f32, or bf16 for a bfloat16 input); the input
  // NCHW, or NHWC where `nhwc`. `record`: each value's range is recorded
  // after the op that makes it (calibrate()).
  std::unique_ptr<Plan> make_plan(const Dims& in_dims, dt act, bool nhwc, bool record);
  at::Tensor run(const at::Tensor& x, bool record);

  // Arena and scratchpad of at least these sizes, every plan kept bound
  // to them.
  void reserve(size_t bytes, size_t scratch_bytes);
  void bind(Plan& plan);
  // DnnlGraph::check_bounds: fill the plan's guard bands (step -1), or
  // throw where step `step` wrote into one.
  void guard_bands(const Plan& plan, int step);
  static std::atomic<bool> bounds_checks;
  static constexpr size_t kGuardBytes = 1024;

  // The most of a plan's `count` over the plans made so far.
  int most(int Plan::*count) {
    std::lock_guard<std::mutex> g(lock);
    int n = 0;
    for (const auto& [key, plan] : plans) n = std::max(n, (*plan).*count);
    return n;
  }
};

namespace {

struct Val {
  memory::desc md;
  Dims dims;
  int buf = -1;  // -2: the plan's input
  float scale = 1;  // int8: the value is scale x what the buffer holds
};

// An int8 value's type and scale: u8 where it never went below zero, else
// s8 (symmetric), over the range calibration recorded.
struct QType {
  dt type;
  float scale;
};

}  // namespace

std::unique_ptr<Plan> DnnlGraph::Impl::make_plan(const Dims& in_dims, dt act, bool nhwc, bool record) {
  const auto plain_act = [act](const Dims& d) { return plain(d, act); };
  auto plan = std::make_unique<Plan>();

  const Parsed& p = graph;
  const dnnl::engine& eng = e.eng;
  std::vector<Val> vals(size_t(p.values));
  std::vector<int> last(size_t(p.values), -1);
  for (size_t i = 0; i < p.ops.size(); ++i) {
    if (p.ops[i].dead) continue;
    for (int v : p.ops[i].in) last[size_t(v)] = int(i);
    if (p.ops[i].sum >= 0) last[size_t(p.ops[i].sum)] = int(i);
  }
  last[size_t(p.output)] = int(p.ops.size());
  // How many ops read each value, and the last of them.
  std::vector<int> uses(size_t(p.values), 0), consumer(size_t(p.values), -1);
  for (size_t i = 0; i < p.ops.size(); ++i) {
    if (p.ops[i].dead) continue;
    for (int v : p.ops[i].in) {
      ++uses[size_t(v)];
      consumer[size_t(v)] = int(i);
    }
    if (p.ops[i].sum >= 0) ++uses[size_t(p.ops[i].sum)];
  }
  ++uses[size_t(p.output)];
  // Channel scales folded into the 1x1 convolution after them: the
  // product's value (the unscaled tensor's buffer) -> the scale's value.
  std::map<int, int> folded;
  static const bool fold_scales = [] {
    const char* off = std::getenv("PTM_DNNL_FOLD_SCALES");
    return !(off && std::string(off) == "0");
  }();
  std::vector<size_t> free_list;  // buffer indices with no value in them
  size_t scratch_bytes = 0;
  // A fresh one each primitive: copies of a primitive_attr share its
  // post-ops.
  const auto new_attr = [] {
    dnnl::primitive_attr a;
    a.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    return a;
  };

  const auto acquire = [&](size_t bytes) -> int {
    size_t best = SIZE_MAX;
    for (size_t k = 0; k < free_list.size(); ++k) {
      const Slot& b = plan->buffers[free_list[k]];
      if (b.bytes >= bytes && (best == SIZE_MAX || b.bytes < plan->buffers[free_list[best]].bytes)) best = k;
    }
    size_t index;
    if (best != SIZE_MAX) {
      index = free_list[best];
      free_list.erase(free_list.begin() + long(best));
    } else {
      plan->buffers.push_back({bytes, 0, 0});
      index = plan->buffers.size() - 1;
    }
    plan->buffers[index].refs = 1;
    return int(index);
  };
  const auto release = [&](int buf) {
    if (buf < 0) return;
    if (--plan->buffers[size_t(buf)].refs == 0) free_list.push_back(size_t(buf));
  };
  // Buffers get their place once the plan is laid out; until then a
  // memory object is made over a placeholder (its buffer in `bound`) and
  // bound after.
  std::vector<int> bound;
  const auto mem_of = [&](const memory::desc& md, int buf) -> memory {
    if (buf == -2) return plan->input;
    memory m(md, eng, DNNL_MEMORY_NONE);
    plan->bind.emplace_back(m, 0);
    bound.push_back(buf);
    return m;
  };
  const auto mem = [&](int v) { return mem_of(vals[size_t(v)].md, vals[size_t(v)].buf); };
  // Primitives are made (their code generated) only after every buffer
  // is allocated: oneDNN does not survive an allocation failing while it
  // generates code.
  const auto step = [&](std::function<dnnl::primitive()> make, std::unordered_map<int, memory> args, size_t scratch) {
    scratch_bytes = std::max(scratch_bytes, scratch);
    plan->steps.push_back({std::move(make), dnnl::primitive(), std::move(args), scratch > 0, {}});
  };
  std::vector<Pending> pending;
  std::vector<int> temps;
  std::vector<int> held;  // buffers an op kept for a later one, released after that one
  // Value v in layout md: itself, or a reordered copy in a temporary buffer.
  const auto as = [&](int v, const memory::desc& md) -> memory {
    if (vals[size_t(v)].md == md) return mem(v);
    const int b = acquire(md.get_size());
    temps.push_back(b);
    memory src = mem(v), dst = mem_of(md, b);
    step([=] { return dnnl::reorder(src, dst); }, {{DNNL_ARG_FROM, src}, {DNNL_ARG_TO, dst}}, 0);
    return dst;
  };
  const auto define = [&](int v, const memory::desc& md, const Dims& dims, int buf, float scale = 1) {
    vals[size_t(v)] = {md, dims, buf, scale};
  };
  // ---- int8 ----
  const auto qtype = [&](int v) -> QType {
    const float l = lo[size_t(v)], h = hi[size_t(v)];
    if (!(l <= h) || !std::isfinite(l) || !std::isfinite(h))
      throw ModelError("int8: calibration recorded no finite range for one of the graph's values");
    if (l >= 0) return {dt::u8, std::max(h, 1e-8f) / 255};
    return {dt::s8, std::max(std::max(-l, h), 1e-8f) / 127};
  };
  // Values handed to a primitive as memory (oneDNN 3.x's scales).
  [[maybe_unused]] const auto constant = [&](std::vector<float> v) {
    plan->consts.push_back(std::make_unique<std::vector<float>>(std::move(v)));
    std::vector<float>& c = *plan->consts.back();
    return memory(memory::desc({int64_t(c.size())}, dt::f32, tag::a), eng, c.data());
  };
  // src into `to` (in buffer `buf`), each value times `ratio` (rounded and
  // saturated into an 8-bit type).
  const auto rescale = [&](memory src, const memory::desc& to, int buf, float ratio) -> memory {
    memory dst = mem_of(to, buf);
    dnnl::primitive_attr ra = new_attr();
#if PTM_DNNL3
    ra.set_scales_mask(DNNL_ARG_SRC, 0);
    const dnnl::reorder::primitive_desc rpd(eng, src.get_desc(), eng, to, ra);
    step([=] { return dnnl::reorder(rpd); },
         {{DNNL_ARG_FROM, src}, {DNNL_ARG_TO, dst}, {DNNL_ARG_ATTR_SCALES | DNNL_ARG_SRC, constant({ratio})}},
         rpd.scratchpad_desc().get_size());
#else
    ra.set_output_scales(0, {ratio});
    const dnnl::reorder::primitive_desc rpd(eng, src.get_desc(), eng, to, ra);
    step([=] { return dnnl::reorder(rpd); }, {{DNNL_ARG_FROM, src}, {DNNL_ARG_TO, dst}},
         rpd.scratchpad_desc().get_size());
#endif
    return dst;
  };
  // An int8 value made float32 (NHWC, or plain) in a buffer of its own,
  // for the ops that run in float32.
  const auto to_float = [&](int v) {
    Val& x = vals[size_t(v)];
    if (!is_int8(x.md)) return;
    const memory::desc f = x.dims.size() == 4 ? memory::desc(x.dims, dt::f32, tag::acdb) : plain(x.dims);
    const int b = acquire(f.get_size());
    rescale(mem(v), f, b, x.scale);
    const int old = x.buf;
    define(v, f, Dims(x.dims), b);
    release(old);
  };
  // The output buffer of convolution op i whose residual add (op.sum)
  // accumulates into it: the residual itself where it dies here and is
  // already in the layout, type and scale the add reads (`held`, `scale`;
  // float32 values have scale 1), else a new buffer it is copied into
  // (rescaled where its type or scale differs).
  const auto residual_output = [&](size_t i, const Op& op, const Dims& out, const memory::desc& held, float scale) {
    const Val& s = vals[size_t(op.sum)];
    if (s.dims != out) throw ModelError(op.name + ": a residual add of tensors of different shapes");
    const bool as_is = type_of(s.md) == type_of(held) && s.scale == scale;
    if (as_is && s.md == held && last[size_t(op.sum)] == int(i) && s.buf >= 0 &&
        plan->buffers[size_t(s.buf)].refs == 1 && vals[size_t(op.in[0])].buf != s.buf) {
      ++plan->buffers[size_t(s.buf)].refs;  // in place: the operand dies here
      return s.buf;
    }
    const int buf = acquire(held.get_size());
    if (as_is) {
      memory from = mem(op.sum), to = mem_of(held, buf);
      step([=] { return dnnl::reorder(from, to); }, {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}}, 0);
    } else {
      rescale(mem(op.sum), held, buf, s.scale / scale);
    }
    return buf;
  };
  // A convolution in 8 bits: its input quantized where float32, s8
  // weights with one scale an output channel, its output requantized to
  // the scale calibration found for it (float32 where an activation fused
  // into it cannot carry a scale), a residual add read in its own type.
  const auto int8_conv = [&](size_t i, const Op& op, const Dims& out, const Dims& wd, const memory::desc& b_md) {
    const auto fail = [&](const std::string& what) { return ModelError(op.name + ": " + what); };
    const Val& x = vals[size_t(op.in[0])];
    const at::Tensor& w = op.weight;
    const int64_t oc = w.size(0);
    [[maybe_unused]] const int64_t g = op.groups;  // oneDNN 3.x's weight scales mask
    const QType in = is_int8(x.md) ? QType{type_of(x.md), x.scale} : qtype(op.in[0]);
    bool int8_out = op.out != p.output;
    for (const Act& a : op.acts) int8_out = int8_out && scales_through(a);
    for (const Act& a : op.after_sum) int8_out = int8_out && scales_through(a);
    const QType o = int8_out ? qtype(op.out) : QType{dt::f32, 1.f};
    const at::Tensor flat = w.reshape({oc, -1});
    const at::Tensor ws = (std::get<0>(flat.abs().max(1)) / 127).clamp_min(1e-12).contiguous();
    const at::Tensor wq = (flat / ws.unsqueeze(1)).round().clamp(-127, 127).to(at::kChar).reshape(w.sizes()).contiguous();
    const std::vector<float> w_scales(ws.data_ptr<float>(), ws.data_ptr<float>() + oc);
    // The residual as the output's buffer holds it before the sum.
    QType r{dt::f32, 1.f};
    if (op.sum >= 0 && int8_out) {
      const Val& sv = vals[size_t(op.sum)];
      r = is_int8(sv.md) ? QType{type_of(sv.md), sv.scale} : qtype(op.sum);
    }
    const float unit = PTM_DNNL3 ? 1.f : o.scale;  // what the post-ops' values count in
    dnnl::post_ops po;
    const auto add_act = [&](const Act& a) {
      Act b = a;
      if (a.alg == algorithm::eltwise_clip) {
        b.alpha /= unit;
        b.beta /= unit;
      } else if (a.alg == algorithm::eltwise_linear) {
        b.beta /= unit;
      }
      append(po, b);
    };
    for (const Act& a : op.acts) add_act(a);
    if (op.sum >= 0) po.append_sum(r.scale / unit, 0, r.type != o.type ? r.type : dt::undef);
    for (const Act& a : op.after_sum) add_act(a);
    dnnl::primitive_attr attr = new_attr();
    attr.set_post_ops(po);
    at::Tensor bias = op.bias;
#if PTM_DNNL3
    attr.set_scales_mask(DNNL_ARG_SRC, 0);
    attr.set_scales_mask(DNNL_ARG_WEIGHTS, g == 1 ? 1 : 3);
    if (int8_out) attr.set_scales_mask(DNNL_ARG_DST, 0);
#else
    // oneDNN 2.x: one output scale a channel, the bias added before it.
    std::vector<float> oscales(static_cast<size_t>(oc));
    for (int64_t c = 0; c < oc; ++c) oscales[size_t(c)] = in.scale * w_scales[size_t(c)] / o.scale;
    attr.set_output_scales(1 << 1, oscales);
    if (bias.defined()) bias = (bias / (ws * in.scale)).contiguous();
#endif
    const auto pd = conv_pd(eng, memory::desc(x.dims, in.type, tag::any), memory::desc(wd, dt::s8, tag::any),
                            bias.defined() ? &b_md : nullptr, memory::desc(out, o.type, tag::any),
                            {op.stride[0], op.stride[1]}, {op.dilation[0] - 1, op.dilation[1] - 1},
                            {op.padding[0], op.padding[1]}, {op.padding[0], op.padding[1]}, attr);
    memory src;
    if (is_int8(x.md)) {
      src = as(op.in[0], pd.src_desc());
    } else {
      const int b = acquire(pd.src_desc().get_size());
      temps.push_back(b);
      src = rescale(mem(op.in[0]), pd.src_desc(), b, 1 / in.scale);
    }
    memory wm = pack(i, wq, plain(wd, dt::s8), pd.weights_desc(), pending);
    const memory::desc dst_md = pd.dst_desc();
    int buf;
    if (op.sum >= 0) {
      const std::optional<memory::desc> held = retyped(dst_md, r.type);
      if (!held || held->get_size() != dst_md.get_size()) throw fail("int8: a residual add in a layout it cannot take");
      buf = residual_output(i, op, out, *held, r.scale);
    } else {
      buf = acquire(dst_md.get_size());
    }
    define(op.out, dst_md, out, buf, o.scale);
    std::unordered_map<int, memory> args{{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wm}, {DNNL_ARG_DST, mem(op.out)}};
    if (bias.defined()) args[DNNL_ARG_BIAS] = pack(i, bias, b_md, pd.bias_desc(), pending);
#if PTM_DNNL3
    args[DNNL_ARG_ATTR_SCALES | DNNL_ARG_SRC] = constant({in.scale});
    args[DNNL_ARG_ATTR_SCALES | DNNL_ARG_WEIGHTS] = constant(w_scales);
    if (int8_out) args[DNNL_ARG_ATTR_SCALES | DNNL_ARG_DST] = constant({o.scale});
#endif
    step([=] { return dnnl::convolution_forward(pd); }, std::move(args), pd.scratchpad_desc().get_size());
    ++plan->int8;
  };
  // The buffer for an elementwise op's output: its input's, where the
  // input dies at op i and nothing else holds that buffer (in place).
  const auto in_place_or_new = [&](int v, size_t i) {
    const Val& x = vals[size_t(v)];
    if (last[size_t(v)] == int(i) && x.buf >= 0 && plan->buffers[size_t(x.buf)].refs == 1) {
      ++plan->buffers[size_t(x.buf)].refs;
      return x.buf;
    }
    return acquire(x.md.get_size());
  };

  const memory::desc in_md = nhwc ? memory::desc(in_dims, act, tag::acdb) : plain(in_dims, act);
  plan->input = memory(in_md, eng, DNNL_MEMORY_NONE);
  define(p.input, in_md, in_dims, -2);

  for (size_t i = 0; i < p.ops.size(); ++i) {
    const Op& op = p.ops[i];
    if (op.dead) continue;
    const auto fail = [&](const std::string& what) { return ModelError(op.name + ": " + what); };
    // int8: convolutions and max pooling take 8-bit values; the others
    // float32 ones.
    if (q && op.kind != Kind::Conv && op.kind != Kind::MaxPool && op.kind != Kind::Alias)
      for (int v : op.in) to_float(v);
    const Val& x = vals[size_t(op.in[0])];
    if (x.dims.empty()) throw fail("an input with no layout");
    switch (op.kind) {
      case Kind::Conv: {
        if (x.dims.size() != 4) throw fail("a convolution of a tensor that is not N x C x H x W");
        const at::Tensor& w = op.weight;
        const int64_t oc = w.size(0), g = op.groups, kh = w.size(2), kw = w.size(3);
        if (g < 1 || w.size(1) * g != x.dims[1] || oc % g != 0) throw fail("channel counts that do not match");
        Dims out{x.dims[0], oc, 0, 0};
        for (int d = 0; d < 2; ++d) {
          const int64_t k = d == 0 ? kh : kw;
          out[size_t(2 + d)] =
              (x.dims[size_t(2 + d)] + 2 * op.padding[size_t(d)] - op.dilation[size_t(d)] * (k - 1) - 1) /
                  op.stride[size_t(d)] +
              1;
          if (out[size_t(2 + d)] < 1) throw fail("an output smaller than one pixel");
        }
        const Dims wd = g == 1 ? Dims{oc, w.size(1), kh, kw} : Dims{g, oc / g, w.size(1), kh, kw};
        const memory::desc b_md({oc}, dt::f32, tag::a);
        if (q) {
          int8_conv(i, op, out, wd, b_md);
          break;
        }
        const memory::desc w_any(wd, act, tag::any), w_plain = plain(wd);
        dnnl::post_ops po;
        for (const Act& a : op.acts) append(po, a);
        if (op.sum >= 0) po.append_sum(1.f);
        for (const Act& a : op.after_sum) append(po, a);
        const auto make_pd = [&](algorithm alg) {
          dnnl::primitive_attr a = new_attr();
          a.set_post_ops(po);
          return conv_pd(eng, memory::desc(x.dims, act, tag::any), w_any, op.bias.defined() ? &b_md : nullptr,
                         memory::desc(out, act, tag::any), {op.stride[0], op.stride[1]},
                         {op.dilation[0] - 1, op.dilation[1] - 1}, {op.padding[0], op.padding[1]},
                         {op.padding[0], op.padding[1]}, a, alg);
        };
        std::optional<dnnl::convolution_forward::primitive_desc> wino;
        if (winograd_fits(act, g, kh, kw, op.stride, op.dilation, out)) {
          try {
            wino = make_pd(algorithm::convolution_winograd);
            ++plan->winograd;
          } catch (const dnnl::error&) {  // a shape or post-op it does not take
          }
        }
        const auto pd = wino ? *wino : make_pd(algorithm::convolution_direct);
        memory src = as(op.in[0], pd.src_desc());
        memory wm;
        const auto fold = folded.find(op.in[0]);
        if (fold == folded.end()) {
          wm = pack(i, w, w_plain, pd.weights_desc(), pending);
        } else {
          // The input's channel scale times the weights, into the
          // convolution's layout, before it (a buffer of this op's).
          const int wb = acquire(pd.weights_desc().get_size());
          temps.push_back(wb);
          wm = mem_of(pd.weights_desc(), wb);
          const int scale = fold->second;
          memory sc = mem_of(memory::desc({w.size(1)}, dt::f32, tag::a), vals[size_t(scale)].buf);
          memory from(w_plain, eng, w.data_ptr());
          dnnl::primitive_attr ra = new_attr();
#if PTM_DNNL3
          ra.set_scales_mask(DNNL_ARG_SRC, 1 << 1);
          const int scale_arg = DNNL_ARG_ATTR_SCALES | DNNL_ARG_SRC;
#else
          ra.set_output_scales(1 << 1, {DNNL_RUNTIME_F32_VAL});
          const int scale_arg = DNNL_ARG_ATTR_OUTPUT_SCALES;
#endif
          const dnnl::reorder::primitive_desc rpd(eng, w_plain, eng, pd.weights_desc(), ra);
          step([=] { return dnnl::reorder(rpd); }, {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, wm}, {scale_arg, sc}},
               rpd.scratchpad_desc().get_size());
          held.push_back(vals[size_t(scale)].buf);
        }
        const memory::desc dst_md = pd.dst_desc();
        const int buf = op.sum >= 0 ? residual_output(i, op, out, dst_md, 1.f) : acquire(dst_md.get_size());
        define(op.out, dst_md, out, buf);
        std::unordered_map<int, memory> args{{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wm}, {DNNL_ARG_DST, mem(op.out)}};
        if (op.bias.defined()) args[DNNL_ARG_BIAS] = pack(i, op.bias, b_md, pd.bias_desc(), pending);
        step([=] { return dnnl::convolution_forward(pd); }, std::move(args), pd.scratchpad_desc().get_size());
        break;
      }
      case Kind::Linear: {
        if (x.dims.size() != 2 || x.dims[1] != op.weight.size(1)) throw fail("an input that is not N x in_features");
        const Dims wd{op.weight.size(0), op.weight.size(1)}, out{x.dims[0], op.weight.size(0)};
        const memory::desc b_md({wd[0]}, dt::f32, tag::a);
        const auto pd = linear_pd(eng, plain_act(x.dims), memory::desc(wd, act, tag::any),
                                  op.bias.defined() ? &b_md : nullptr, plain_act(out), new_attr());
        memory src = as(op.in[0], pd.src_desc());
        memory wm = pack(i, op.weight, plain(wd), pd.weights_desc(), pending);
        define(op.out, pd.dst_desc(), out, acquire(pd.dst_desc().get_size()));
        std::unordered_map<int, memory> args{{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wm}, {DNNL_ARG_DST, mem(op.out)}};
        if (op.bias.defined()) args[DNNL_ARG_BIAS] = pack(i, op.bias, b_md, pd.bias_desc(), pending);
        step([=] { return dnnl::inner_product_forward(pd); }, std::move(args), pd.scratchpad_desc().get_size());
        break;
      }
      case Kind::Act: {
        memory src = mem(op.in[0]);
        const int buf = in_place_or_new(op.in[0], i);
        const memory::desc md = x.md;
        const Dims dims = x.dims;
        define(op.out, md, dims, buf);
        memory dst = mem(op.out);
        for (size_t k = 0; k < op.acts.size(); ++k) {
          const auto pd = eltwise_pd(eng, op.acts[k], md, new_attr());
          step([=] { return dnnl::eltwise_forward(pd); }, {{DNNL_ARG_SRC, k == 0 ? src : dst}, {DNNL_ARG_DST, dst}},
               pd.scratchpad_desc().get_size());
        }
        break;
      }
      case Kind::Scale: {
        memory src = mem(op.in[0]);
        const int buf = in_place_or_new(op.in[0], i);
        const memory::desc md = x.md;
        define(op.out, md, x.dims, buf);
        const auto pd = eltwise_pd(eng, {algorithm::eltwise_linear, op.scale, 0}, md, new_attr());
        step([=] { return dnnl::eltwise_forward(pd); }, {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, mem(op.out)}},
             pd.scratchpad_desc().get_size());
        break;
      }
      case Kind::Add:
      case Kind::Mul: {
        // The full-size operand first; the other may broadcast (a
        // squeeze-and-excitation scale, N x C x 1 x 1).
        int a0 = op.in[0], a1 = op.in[1];
        if (vals[size_t(a0)].dims != vals[size_t(a1)].dims) {
          const auto covers = [&](int big, int small) {
            const Dims& b = vals[size_t(big)].dims;
            const Dims& s = vals[size_t(small)].dims;
            if (b.size() != s.size()) return false;
            for (size_t d = 0; d < b.size(); ++d)
              if (s[d] != b[d] && s[d] != 1) return false;
            return true;
          };
          if (covers(a1, a0)) std::swap(a0, a1);
          if (!covers(a0, a1)) throw fail("operands whose shapes do not broadcast");
        }
        const Val& big = vals[size_t(a0)];
        const Dims& small = vals[size_t(a1)].dims;
        const bool channel_scale = op.kind == Kind::Mul && act == dt::f32 && small.size() == 4 &&
                                   big.dims.size() == 4 && small[0] == big.dims[0] && small[1] == big.dims[1] &&
                                   small[2] == 1 && small[3] == 1 && (big.dims[2] > 1 || big.dims[3] > 1);
        // One image, and the only reader a 1x1 convolution with at most a
        // quarter as many output channels as the image has pixels: the
        // scale goes into that convolution's weights (W[o][c] * s[c],
        // reordered into its layout each pass) and x is read once, by the
        // convolution, instead of twice more. oneDNN's scaled reorder
        // costs ~3x a value what the scale pass does (2.6, AVX-512:
        // 112x672 weights 55 us, a 14x14x672 scale 29 us), hence the
        // quarter: EfficientNet's blocks at 112x112 to 28x28 fold, those
        // at 14x14 and 7x7 keep the pass.
        if (channel_scale && fold_scales && !q && big.dims[0] == 1 && big.buf >= 0 && uses[size_t(op.out)] == 1 &&
            consumer[size_t(op.out)] >= 0 && vals[size_t(a1)].buf >= 0 && vals[size_t(a1)].md == plain_act(small)) {
          const Op& next = p.ops[size_t(consumer[size_t(op.out)])];
          if (next.kind == Kind::Conv && next.in[0] == op.out && next.groups == 1 && next.weight.size(1) == small[1] &&
              next.weight.size(2) == 1 && next.weight.size(3) == 1 && next.stride == std::vector<int64_t>{1, 1} &&
              next.padding == std::vector<int64_t>{0, 0} && 4 * next.weight.size(0) <= big.dims[2] * big.dims[3]) {
            define(op.out, big.md, big.dims, big.buf);
            ++plan->buffers[size_t(big.buf)].refs;
            ++plan->buffers[size_t(vals[size_t(a1)].buf)].refs;  // held until the convolution has read it
            folded[op.out] = a1;
            ++plan->folded;
            break;
          }
        }
        memory src0 = mem(a0);
        // A broadcast operand in the plain layout (for N x C x 1 x 1 that
        // is one value a channel).
        memory src1 = big.dims == vals[size_t(a1)].dims ? mem(a1) : as(a1, plain_act(vals[size_t(a1)].dims));
        const int buf = a0 != a1 ? in_place_or_new(a0, i) : acquire(big.md.get_size());
        const memory::desc md = big.md;
        define(op.out, md, big.dims, buf);
        const std::optional<ChannelLayout> layout = channel_layout(md, big.dims);
        if (channel_scale && layout) {
          memory dst = mem(op.out);
          const Dims d = big.dims;
          const ChannelLayout l = *layout;
          step({}, {}, 0);
          plan->steps.back().run = [src0, src1, dst, d, l] {
            scale_channels(static_cast<const float*>(src0.get_data_handle()),
                           static_cast<const float*>(src1.get_data_handle()), static_cast<float*>(dst.get_data_handle()),
                           d[0], d[1], l.outer, l.inner, l.block, d[2] * d[3]);
          };
          ++plan->scales;
          break;
        }
        const auto pd = binary_pd(eng, op.kind == Kind::Add ? algorithm::binary_add : algorithm::binary_mul, md,
                                  src1.get_desc(), md, new_attr());
        step([=] { return dnnl::binary(pd); }, {{DNNL_ARG_SRC_0, src0}, {DNNL_ARG_SRC_1, src1}, {DNNL_ARG_DST, mem(op.out)}},
             pd.scratchpad_desc().get_size());
        break;
      }
      case Kind::MaxPool:
      case Kind::AvgPool:
      case Kind::AdaptivePool: {
        if (x.dims.size() != 4) throw fail("pooling of a tensor that is not N x C x H x W");
        Dims kernel(2), stride(2), pad_l(2), pad_r(2), out{x.dims[0], x.dims[1], 0, 0};
        for (size_t d = 0; d < 2; ++d) {
          const int64_t in = x.dims[2 + d];
          if (op.kind == Kind::AdaptivePool) {
            const int64_t o = op.out_size[d] > 0 ? op.out_size[d] : in;
            if (in % o != 0) throw fail("an adaptive pooling whose input size is not a multiple of its output");
            kernel[d] = stride[d] = in / o;
            pad_l[d] = pad_r[d] = 0;
            out[2 + d] = o;
            continue;
          }
          kernel[d] = op.kernel[d];
          stride[d] = op.stride[d];
          pad_l[d] = op.padding[d];
          const int64_t span = in + 2 * op.padding[d] - op.kernel[d];
          if (span < 0) throw fail("a window larger than its input");
          int64_t o = span / op.stride[d] + 1;
          if (op.ceil_mode) {
            o = (span + op.stride[d] - 1) / op.stride[d] + 1;
            if ((o - 1) * op.stride[d] >= in + op.padding[d]) --o;  // the last window starts inside the image
          }
          if (op.ceil_mode && op.kind == Kind::AvgPool && o != span / op.stride[d] + 1)
            throw fail("ceil_mode average pooling");
          out[2 + d] = o;
          pad_r[d] = (o - 1) * op.stride[d] + op.kernel[d] - in - op.padding[d];
        }
        const algorithm alg = op.kind == Kind::MaxPool ? algorithm::pooling_max
                              : (op.kind == Kind::AvgPool && op.count_include_pad) ? algorithm::pooling_avg_include_padding
                                                                                     : algorithm::pooling_avg_exclude_padding;
        // int8 max pooling keeps the type and scale of its input.
        const auto pd = pool_pd(eng, alg, x.md, memory::desc(out, is_int8(x.md) ? type_of(x.md) : act, tag::any), stride,
                                kernel, pad_l, pad_r, new_attr());
        memory src = mem(op.in[0]);
        define(op.out, pd.dst_desc(), out, acquire(pd.dst_desc().get_size()), x.scale);
        step([=] { return dnnl::pooling_forward(pd); }, {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, mem(op.out)}},
             pd.scratchpad_desc().get_size());
        if (!op.keepdim) {  // N x C: one value a channel, in the plain layout
          Val& v = vals[size_t(op.out)];
          const int pooled = v.buf, buf = acquire(plain_act(out).get_size());
          memory from = mem(op.out), to = mem_of(plain_act(out), buf);
          step([=] { return dnnl::reorder(from, to); }, {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}}, 0);
          release(pooled);
          define(op.out, plain_act({out[0], out[1]}), {out[0], out[1]}, buf);
        }
        break;
      }
      case Kind::Flatten: {
        if (x.dims.size() != 4) throw fail("flattening a tensor that is not N x C x H x W");
        const Dims flat{x.dims[0], x.dims[1] * x.dims[2] * x.dims[3]};
        int buf;
        if (x.md == plain_act(x.dims) && x.buf >= 0) {
          buf = x.buf;
          ++plan->buffers[size_t(buf)].refs;
        } else {
          buf = acquire(plain_act(x.dims).get_size());
          memory from = mem(op.in[0]), to = mem_of(plain_act(x.dims), buf);
          step([=] { return dnnl::reorder(from, to); }, {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}}, 0);
        }
        define(op.out, plain_act(flat), flat, buf);
        break;
      }
      case Kind::Cat: {
        std::vector<memory::desc> srcs;
        std::unordered_map<int, memory> args;
        for (size_t k = 0; k < op.in.size(); ++k) {
          const Val& v = vals[size_t(op.in[k])];
          if (v.dims.size() != 4 || v.dims[0] != x.dims[0] || v.dims[2] != x.dims[2] || v.dims[3] != x.dims[3])
            throw fail("tensors that differ in other dimensions than channels");
          srcs.push_back(v.md);
          args[DNNL_ARG_MULTIPLE_SRC + int(k)] = mem(op.in[k]);
        }
        const auto pd = concat_pd(eng, srcs, new_attr());
        Dims out = x.dims;
        out[1] = 0;
        for (int v : op.in) out[1] += vals[size_t(v)].dims[1];
        define(op.out, pd.dst_desc(), out, acquire(pd.dst_desc().get_size()));
        args[DNNL_ARG_DST] = mem(op.out);
        step([=] { return dnnl::concat(pd); }, std::move(args), pd.scratchpad_desc().get_size());
        break;
      }
      case Kind::Alias: {
        if (x.buf == -2) throw fail("an alias of the input");
        define(op.out, x.md, x.dims, x.buf, x.scale);
        ++plan->buffers[size_t(x.buf)].refs;
        break;
      }
    }
    if (record && vals[size_t(op.out)].buf >= 0 && type_of(vals[size_t(op.out)].md) == dt::f32) {
      // Calibration: the range of what the op made (padding included,
      // which holds zeros).
      const memory m = mem(op.out);
      const size_t n = vals[size_t(op.out)].md.get_size() / sizeof(float);
      float* l = &lo[size_t(op.out)];
      float* h = &hi[size_t(op.out)];
      step({}, {}, 0);
      plan->steps.back().run = [m, n, l, h] {
        const float* d = static_cast<const float*>(m.get_data_handle());
        float a = *l, b = *h;
        for (size_t k = 0; k < n; ++k) {
          a = std::min(a, d[k]);
          b = std::max(b, d[k]);
        }
        *l = a;
        *h = b;
      };
    }
    for (int b : temps) release(b);
    temps.clear();
    for (int b : held) release(b);
    held.clear();
    std::vector<int> dying;
    for (int v : op.in)
      if (last[size_t(v)] == int(i)) dying.push_back(v);
    if (op.sum >= 0 && last[size_t(op.sum)] == int(i)) dying.push_back(op.sum);
    std::sort(dying.begin(), dying.end());
    dying.erase(std::unique(dying.begin(), dying.end()), dying.end());
    for (int v : dying) release(vals[size_t(v)].buf);
  }

  const Val& y = vals[size_t(p.output)];
  if (y.dims.size() != 2) throw ModelError("the graph's output is not N x classes");
  plan->out_dims = y.dims;
  plan->output = memory(plain(y.dims), eng, DNNL_MEMORY_NONE);
  if (is_int8(y.md)) {
    to_float(p.output);
  }
  {
    memory from = mem(p.output);
    step([=, out = plan->output] { return dnnl::reorder(from, out); }, {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, plan->output}}, 0);
  }
  plan->guarded = bounds_checks.load();
  const size_t guard = plan->guarded ? kGuardBytes : 0;
  for (Slot& b : plan->buffers) {
    b.offset = plan->bytes;
    plan->bytes += (std::max<size_t>(b.bytes, 1) + 63) / 64 * 64 + guard;
  }
  for (size_t k = 0; k < bound.size(); ++k) plan->bind[k].second = plan->buffers[size_t(bound[k])].offset;
  plan->scratch_bytes = scratch_bytes;
  if (scratch_bytes > 0) {
    plan->scratch = memory(memory::desc({int64_t(scratch_bytes)}, dt::u8, tag::a), eng, DNNL_MEMORY_NONE);
    for (auto& st : plan->steps)
      if (st.scratch) st.args[DNNL_ARG_SCRATCHPAD] = plan->scratch;
  }
  reserve(plan->bytes, plan->scratch_bytes + (scratch_bytes > 0 ? guard : 0));
  bind(*plan);
  // Room for the generated code (a few hundred KB a primitive), checked
  // before any is made.
  if (void* room = std::malloc(size_t(64) << 20)) {
    std::free(room);
  } else {
    throw ModelError("out of memory for the graph's code");
  }
  finish_packing(pending);
  for (auto& st : plan->steps)
    if (st.make) st.prim = st.make();
  return plan;
}

void DnnlGraph::Impl::reserve(size_t bytes, size_t scratch_bytes) {
  const auto grow = [&](Buffer& b, size_t need, const char* what) {
    if (need <= b.bytes) return;
    // The old memory goes first (the plans bound to it are rebound or
    // dropped below): a shape larger than any before costs its own size,
    // not its size and the last.
    std::free(b.data);
    b.bytes = 0;
    b.data = std::aligned_alloc(64, (need + 63) / 64 * 64);
    if (!b.data) {
      plans.clear();
      throw ModelError(std::string("out of memory for the graph's ") + what);
    }
    b.bytes = need;
  };
  const bool moved = bytes > arena.bytes || scratch_bytes > scratch.bytes;
  grow(arena, bytes, "activations");
  grow(scratch, scratch_bytes, "scratchpad");
  if (moved)
    for (auto& [key, plan] : plans) bind(*plan);
}

// What a guard band holds: kGuardBytes of it after each buffer's rounding
// up to 64 bytes (which a primitive may write).
constexpr unsigned char kGuardByte = 0xA5;

void DnnlGraph::Impl::guard_bands(const Plan& plan, int step) {
  unsigned char* const a = static_cast<unsigned char*>(arena.data);
  // `what` names the buffer, called only where its band was written.
  const auto band = [&](unsigned char* from, size_t bytes, const auto& what) {
    if (step < 0) {
      std::memset(from, kGuardByte, bytes);
      return;
    }
    for (size_t k = 0; k < bytes; ++k)
      if (from[k] != kGuardByte)
        throw ModelError("oneDNN graph: step " + std::to_string(step) + " of " + std::to_string(plan.steps.size()) +
                         " wrote past the end of " + what() + " (" + std::to_string(k) + " bytes into its guard band)");
  };
  for (size_t k = 0; k < plan.buffers.size(); ++k) {
    const Slot& b = plan.buffers[k];
    const size_t end = b.offset + (std::max<size_t>(b.bytes, 1) + 63) / 64 * 64;
    band(a + end, kGuardBytes, [&] {
      return "activation buffer " + std::to_string(k) + " (" + std::to_string(b.bytes) + " bytes)";
    });
  }
  if (plan.scratch_bytes > 0)
    band(static_cast<unsigned char*>(scratch.data) + plan.scratch_bytes, kGuardBytes,
         [&] { return "the scratchpad (" + std::to_string(plan.scratch_bytes) + " bytes)"; });
}

std::atomic<bool> DnnlGraph::Impl::bounds_checks{false};

void DnnlGraph::check_bounds(bool on) { Impl::bounds_checks = on; }

void DnnlGraph::Impl::bind(Plan& plan) {
  for (auto& [m, offset] : plan.bind) m.set_data_handle(static_cast<char*>(arena.data) + offset);
  if (plan.scratch_bytes > 0) plan.scratch.set_data_handle(scratch.data);
}

DnnlGraph::DnnlGraph() : impl_(std::make_unique<Impl>()) {}
DnnlGraph::~DnnlGraph() = default;

std::unique_ptr<DnnlGraph> DnnlGraph::compile(torch::jit::Module& frozen, std::string* why) {
  std::string reason;
  std::optional<Parsed> p;
  try {
    p = parse(frozen.get_method("forward").graph(), reason);
  } catch (const std::exception& e) {
    reason = e.what();
  }
  if (!p) {
    if (why) *why = reason;
    return nullptr;
  }
  fuse(*p);
  std::unique_ptr<DnnlGraph> g(new DnnlGraph());
  g->impl_->graph = std::move(*p);
  return g;
}

int DnnlGraph::fused_activations() const {
  int n = 0;
  for (const Op& op : impl_->graph.ops)
    if (!op.dead && op.kind == Kind::Conv && !(op.acts.empty() && op.after_sum.empty())) ++n;
  return n;
}

int DnnlGraph::fused_adds() const {
  int n = 0;
  for (const Op& op : impl_->graph.ops)
    if (!op.dead && op.kind == Kind::Conv && op.sum >= 0) ++n;
  return n;
}

int DnnlGraph::winograd_convolutions() { return impl_->most(&Plan::winograd); }

int DnnlGraph::channel_scales() { return impl_->most(&Plan::scales); }

int DnnlGraph::folded_scales() { return impl_->most(&Plan::folded); }

std::string DnnlGraph::version() {
  const dnnl_version_t* v = dnnl_version();
  return std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch);
}

at::Tensor DnnlGraph::run(const at::Tensor& input) { return impl_->run(input, false); }

at::Tensor DnnlGraph::calibrate(const at::Tensor& input) { return impl_->run(input, true); }

void DnnlGraph::clear_ranges() {
  std::lock_guard<std::mutex> g(impl_->lock);
  std::fill(impl_->lo.begin(), impl_->lo.end(), INFINITY);
  std::fill(impl_->hi.begin(), impl_->hi.end(), -INFINITY);
}

std::unique_ptr<DnnlGraph> DnnlGraph::int8(std::string* why) const {
  std::lock_guard<std::mutex> g(impl_->lock);
  const auto no = [&](const std::string& what) {
    if (why) *why = what;
    return nullptr;
  };
  if (impl_->q) return no("the graph is int8 already");
  if (impl_->lo.empty() || !(impl_->lo[size_t(impl_->graph.input)] <= impl_->hi[size_t(impl_->graph.input)]))
    return no("no image was calibrated");
  std::unique_ptr<DnnlGraph> q(new DnnlGraph());
  q->impl_->graph = impl_->graph;
  q->impl_->lo = impl_->lo;
  q->impl_->hi = impl_->hi;
  q->impl_->q = true;
  return q;
}

int DnnlGraph::int8_convolutions() { return impl_->most(&Plan::int8); }

size_t DnnlGraph::activation_bytes() {
  std::lock_guard<std::mutex> g(impl_->lock);
  return impl_->arena.bytes;
}

size_t DnnlGraph::scratchpad_bytes() {
  std::lock_guard<std::mutex> g(impl_->lock);
  return impl_->scratch.bytes;
}

at::Tensor DnnlGraph::Impl::run(const at::Tensor& input, bool record) {
  if (!input.device().is_cpu() || (input.scalar_type() != at::kFloat && input.scalar_type() != at::kBFloat16) ||
      input.dim() != 4)
    throw ModelError("the oneDNN graph takes float32 or bfloat16 N x C x H x W on the CPU, not " + input.toString());
  const bool bf16 = input.scalar_type() == at::kBFloat16;
  if ((record || q) && bf16) throw ModelError("int8: the oneDNN graph calibrates and runs from float32 input");
  const bool nhwc = !input.is_contiguous() && input.is_contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor x = nhwc ? input : input.contiguous();
  std::vector<int64_t> key = x.sizes().vec();
  key.push_back(bf16);
  key.push_back(nhwc);
  key.push_back(record);
  std::lock_guard<std::mutex> g(lock);
  if (record) {
    if (lo.empty()) {
      lo.assign(size_t(graph.values), INFINITY);
      hi.assign(size_t(graph.values), -INFINITY);
    }
    const auto [l, h] = at::aminmax(x);
    lo[size_t(graph.input)] = std::min(lo[size_t(graph.input)], l.item<float>());
    hi[size_t(graph.input)] = std::max(hi[size_t(graph.input)], h.item<float>());
  }
  auto it = plans.find(key);
  try {
    if (it == plans.end()) {
      // A plan holds its primitives (their generated code): the shapes
      // run last are kept (the batch sizes a pipeline runs, 1 to 8 for a
      // shared model), not one per shape ever seen. Their activations
      // share the arena.
      if (plans.size() >= kPlans) {
        auto oldest = plans.begin();
        for (auto k = plans.begin(); k != plans.end(); ++k)
          if (k->second->used < oldest->second->used) oldest = k;
        plans.erase(oldest);
      }
      it = plans.emplace(key, make_plan(Dims(key.begin(), key.begin() + 4), bf16 ? dt::bf16 : dt::f32, nhwc, record))
               .first;
    }
    Plan& plan = *it->second;
    plan.used = ++passes;
    at::Tensor y = at::empty(std::vector<int64_t>(plan.out_dims.begin(), plan.out_dims.end()), x.options().dtype(at::kFloat));
    plan.input.set_data_handle(x.data_ptr());
    plan.output.set_data_handle(y.data_ptr());
    if (plan.guarded) guard_bands(plan, -1);
    for (size_t i = 0; i < plan.steps.size(); ++i) {
      Plan::Step& s = plan.steps[i];
      if (s.run) {
        s.run();
      } else {
        s.prim.execute(e.stream, s.args);
      }
      if (plan.guarded) {
        e.stream.wait();
        guard_bands(plan, int(i));
      }
    }
    e.stream.wait();
    return y;
  } catch (const dnnl::error& e) {
    if (e.status == dnnl_out_of_memory) throw ModelError(std::string("oneDNN: out of memory: ") + e.what());
    throw ModelError(std::string("oneDNN: ") + e.what());
  } catch (const std::bad_alloc&) {
    throw ModelError("oneDNN graph: out of memory making the plan for " + x.toString() + " " +
                     std::to_string(key[0]) + "x" + std::to_string(key[1]) + "x" + std::to_string(key[2]) + "x" +
                     std::to_string(key[3]));
  }
}

}  // namespace ptm
