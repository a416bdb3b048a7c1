// The products of the transformers and ConvNeXt (common.h: linear,
// linear_gelu, linear_add, matmul) on oneDNN's matmul primitive, for
// float32 on the CPU, and ConvNeXt's convolutions kept dense (conv2d_dense).
//
// at::matmul and at::linear go to the system BLAS there, which on Debian is
// the reference one: ViT-B/16's attention products alone took 620 of its
// 700 ms a frame; ConvNeXt's GELU, a separate op, a fifth of its time. They
// are registered as operators of their own (ptm::linear, ptm::linear_gelu
// with GELU as the primitive's post-op, ptm::linear_add with the residual
// added as its binary post-op, ptm::matmul) so that a traced graph
// records each as one node, its kernel deciding per call: oneDNN for float32
// CPU tensors outside autograd, at::linear / at::gelu / at::matmul for
// everything else (other types and devices, gradients, broadcast batches,
// shapes oneDNN refuses). Without the system's oneDNN (-Donednn=disabled,
// PyPI's torch, whose own BLAS is fast) the helpers are LibTorch's ops.
//
// ptm::conv2d is at::conv2d under another name: LibTorch's oneDNN graph
// conversion (optimize_for_inference) leaves it alone. It turns every
// aten::conv2d into oneDNN's blocked layout with a reorder on each side;
// ConvNeXt's blocks, channels-last from end to end (depthwise convolution,
// LayerNorm over the channels, the products on those rows), paid a reorder
// in, a reorder out and a LayerNorm on a permuted copy for each depthwise
// convolution: 2.0 against 0.4 ms a block at 56x56x96 (LibTorch 1.13, 2
// threads). Dense and channels-last, LibTorch runs the same oneDNN kernel
// with no conversion.
#include "common.h"

#if PTM_HAVE_DNNL
#include <torch/library.h>
#include <oneapi/dnnl/dnnl.hpp>

#include <map>
#include <mutex>
#include <tuple>
#include <variant>
#endif

namespace ptm::arch {

#if PTM_HAVE_DNNL
namespace {

using dnnl::memory;
using Dims = memory::dims;

// x as a stack of R x C matrices oneDNN reads in place: row-major, or
// column-major (a transpose's view); anything else is copied row-major.
struct Operand {
  at::Tensor t;
  int64_t batch, rows, cols;
  bool column_major;
  memory::desc desc() const {
    const Dims dims{batch, rows, cols};
    const Dims strides = column_major ? Dims{rows * cols, 1, rows} : Dims{rows * cols, cols, 1};
    return memory::desc(dims, memory::data_type::f32, strides);
  }
};

Operand operand(const at::Tensor& x) {
  const int64_t r = x.size(-2), c = x.size(-1);
  if (x.is_contiguous()) return {x, x.numel() / (r * c), r, c, false};
  if (x.transpose(-2, -1).is_contiguous()) return {x, x.numel() / (r * c), r, c, true};
  return {x.contiguous(), x.numel() / (r * c), r, c, false};
}

bool fits(const at::Tensor& t) {
  return t.device().is_cpu() && t.scalar_type() == at::kFloat && t.layout() == at::kStrided && t.dim() >= 2 &&
         t.numel() > 0 && !(at::GradMode::is_enabled() && t.requires_grad());
}

struct Primitive {
  dnnl::matmul prim;
  size_t scratch = 0;
};

dnnl::engine& engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

// Primitives by shape and layout: made once (creating one costs more than
// running it on these sizes), run concurrently by any thread (each call has
// its own scratchpad). Held by shared_ptr: a call keeps its primitive
// while another empties the cache.
enum class Post { None, Gelu, Add };

std::shared_ptr<const Primitive> primitive(const Operand& a, const Operand& b, bool bias, Post post) {
  using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, bool, bool, bool, Post>;
  static std::mutex lock;
  static std::map<Key, std::shared_ptr<const Primitive>> made;
  const Key key{a.batch, b.batch, a.rows, a.cols, b.cols, a.column_major, b.column_major, bias, post};
  std::lock_guard<std::mutex> g(lock);
  auto it = made.find(key);
  if (it != made.end()) return it->second;
  if (made.size() >= 256) made.clear();  // the shapes a model sees are few; bounded whatever comes
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  const memory::desc dst({a.batch, a.rows, b.cols}, memory::data_type::f32, memory::format_tag::abc);
  dnnl::post_ops po;
  if (post == Post::Gelu) {  // GELU (erf) on the result in the product's own kernel
#if DNNL_VERSION_MAJOR >= 3
    po.append_eltwise(dnnl::algorithm::eltwise_gelu_erf, 0.f, 0.f);
#else
    po.append_eltwise(1.f, dnnl::algorithm::eltwise_gelu_erf, 0.f, 0.f);
#endif
  } else if (post == Post::Add) {  // + a tensor of the result's shape, read as the kernel writes
    po.append_binary(dnnl::algorithm::binary_add, dst);
  }
  if (post != Post::None) attr.set_post_ops(po);
  const memory::desc bias_md = bias ? memory::desc({1, 1, b.cols}, memory::data_type::f32, memory::format_tag::abc)
                                    : memory::desc();
#if DNNL_VERSION_MAJOR >= 3
  dnnl::matmul::primitive_desc pd(engine(), a.desc(), b.desc(), bias_md, dst, attr);
#else
  dnnl::matmul::primitive_desc pd({a.desc(), b.desc(), bias_md, dst}, attr, engine());
#endif
  auto p = std::make_shared<const Primitive>(Primitive{dnnl::matmul(pd), pd.scratchpad_desc().get_size()});
  made.emplace(key, p);
  return p;
}

// a (B x M x K) times b (B x K x N, or 1 x K x N for every a), plus bias
// (N) on each row, then GELU'd (Post::Gelu) or `other` (B x M x N,
// contiguous) added (Post::Add): B x M x N.
at::Tensor run(const Operand& a, const Operand& b, const at::Tensor& bias, Post post = Post::None,
               const at::Tensor& other = {}) {
  const std::shared_ptr<const Primitive> p = primitive(a, b, bias.defined(), post);
  at::Tensor y = at::empty({a.batch, a.rows, b.cols}, a.t.options());
  at::Tensor scratch = at::empty({int64_t(p->scratch)}, a.t.options().dtype(at::kByte));
  dnnl::engine& e = engine();
  std::unordered_map<int, memory> args{
      {DNNL_ARG_SRC, memory(a.desc(), e, a.t.data_ptr())},
      {DNNL_ARG_WEIGHTS, memory(b.desc(), e, b.t.data_ptr())},
      {DNNL_ARG_DST, memory({{a.batch, a.rows, b.cols}, memory::data_type::f32, memory::format_tag::abc}, e, y.data_ptr())}};
  if (p->scratch > 0)
    args.emplace(DNNL_ARG_SCRATCHPAD,
                 memory({{int64_t(p->scratch)}, memory::data_type::u8, memory::format_tag::a}, e, scratch.data_ptr()));
  if (bias.defined())
    args.emplace(DNNL_ARG_BIAS,
                 memory({{1, 1, b.cols}, memory::data_type::f32, memory::format_tag::abc}, e, bias.data_ptr()));
  if (post == Post::Add)
    args.emplace(DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1,
                 memory({{a.batch, a.rows, b.cols}, memory::data_type::f32, memory::format_tag::abc}, e,
                        other.data_ptr()));
  dnnl::stream s(e);
  p->prim.execute(s, args);
  s.wait();
  return y;
}

at::Tensor matmul_kernel(const at::Tensor& a, const at::Tensor& b) {
  // Same batch shape on both sides (what attention multiplies), or a
  // matrix b for every matrix of a.
  const bool same_batch = a.dim() == b.dim() && a.sizes().slice(0, a.dim() - 2) == b.sizes().slice(0, b.dim() - 2);
  if (!fits(a) || !fits(b) || a.size(-1) != b.size(-2) || !(same_batch || b.dim() == 2))
    return at::matmul(a, b);
  std::vector<int64_t> shape = a.sizes().vec();
  shape.back() = b.size(-1);
  Operand x = operand(a), w = operand(b);
  if (b.dim() == 2 && x.batch > 1) {  // every row of a against one matrix
    if (x.column_major) x = operand(a.contiguous());
    x.rows *= x.batch;
    x.batch = 1;
  }
  try {
    return run(x, w, {}).view(shape);
  } catch (const dnnl::error&) {  // a shape or layout oneDNN has no kernel for
    return at::matmul(a, b);
  }
}

// x (..., K) times weight (N x K) transposed, plus bias; then GELU'd
// (Post::Gelu) or `other` (the result's shape) added (Post::Add).
at::Tensor linear_product(const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                          Post post, const at::Tensor& other = {}) {
  const bool with_bias = bias && bias->defined();
  auto fallback = [&] {
    at::Tensor y = at::linear(x, weight, with_bias ? *bias : at::Tensor());
    if (post == Post::Gelu) return at::gelu(y);
    if (post == Post::Add) return at::add(y, other);
    return y;
  };
  if (!fits(x) || !fits(weight) || weight.dim() != 2 || x.size(-1) != weight.size(1) ||
      (with_bias && !(bias->dim() == 1 && fits(bias->unsqueeze(0)) && bias->numel() == weight.size(0))))
    return fallback();
  std::vector<int64_t> shape = x.sizes().vec();
  shape.back() = weight.size(0);
  // The addend: exactly the result's shape (no broadcast), float32 on the CPU.
  if (post == Post::Add && !(fits(other) && other.sizes() == at::IntArrayRef(shape))) return fallback();
  const at::Tensor rows = x.contiguous();
  Operand a{rows, 1, rows.numel() / rows.size(-1), rows.size(-1), false};
  Operand w = operand(weight.t());
  try {
    return run(a, w, with_bias ? bias->contiguous() : at::Tensor(), post,
               post == Post::Add ? other.contiguous() : at::Tensor())
        .view(shape);
  } catch (const dnnl::error&) {
    return fallback();
  }
}

at::Tensor linear_kernel(const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& bias) {
  return linear_product(x, weight, bias, Post::None);
}

at::Tensor linear_gelu_kernel(const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& bias) {
  return linear_product(x, weight, bias, Post::Gelu);
}

at::Tensor linear_add_kernel(const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                             const at::Tensor& other) {
  return linear_product(x, weight, bias, Post::Add, other);
}

at::Tensor conv2d_kernel(const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                         at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  return at::conv2d(x, weight, bias && bias->defined() ? *bias : at::Tensor(), stride, padding, dilation, groups);
}

// The operators are registered on first use, once a process: these sources
// can be linked twice into one process (an application or test linking
// ptm's libraries and loading the plugin, which holds its own copy), and
// LibTorch refuses a namespace registered twice (a static TORCH_LIBRARY
// block threw while the second copy loaded). Where another copy registered
// them already, its kernels (the same code) serve both.
bool registered() {
  return c10::Dispatcher::singleton().findSchema({"ptm::linear_gelu", ""}).has_value();
}

void register_ops() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (registered()) return;
    try {
      // Never destroyed: a kernel may be called until the process ends.
      auto* m = new torch::Library(torch::Library::FRAGMENT, "ptm", c10::nullopt, __FILE__, __LINE__);
      m->def("matmul(Tensor self, Tensor other) -> Tensor", TORCH_FN(matmul_kernel));
      m->def("linear(Tensor input, Tensor weight, Tensor? bias=None) -> Tensor", TORCH_FN(linear_kernel));
      m->def("linear_gelu(Tensor input, Tensor weight, Tensor? bias=None) -> Tensor", TORCH_FN(linear_gelu_kernel));
      m->def("linear_add(Tensor input, Tensor weight, Tensor? bias, Tensor other) -> Tensor",
             TORCH_FN(linear_add_kernel));
      m->def("conv2d(Tensor input, Tensor weight, Tensor? bias, int[] stride, int[] padding, int[] dilation, "
             "int groups) -> Tensor",
             TORCH_FN(conv2d_kernel));
    } catch (const c10::Error&) {
      // Another copy registering at the same moment won the race.
      if (!registered()) throw;
    }
  });
}

c10::OperatorHandle op_handle(const char* name) {
  register_ops();
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "");
}

}  // namespace

at::Tensor matmul(const at::Tensor& a, const at::Tensor& b) {
  static auto op = op_handle("ptm::matmul").typed<at::Tensor(const at::Tensor&, const at::Tensor&)>();
  if (!a.is_cpu()) return at::matmul(a, b);
  return op.call(a, b);
}

namespace {

using LinearOp = c10::TypedOperatorHandle<at::Tensor(const at::Tensor&, const at::Tensor&, const c10::optional<at::Tensor>&)>;

LinearOp linear_op(const char* name) {
  return op_handle(name).typed<at::Tensor(const at::Tensor&, const at::Tensor&, const c10::optional<at::Tensor>&)>();
}

c10::optional<at::Tensor> optional(const at::Tensor& b) { return b.defined() ? c10::optional<at::Tensor>(b) : c10::nullopt; }

}  // namespace

at::Tensor linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  static const LinearOp op = linear_op("ptm::linear");
  if (!x.is_cpu()) return at::linear(x, w, b);
  return op.call(x, w, optional(b));
}

at::Tensor linear_gelu(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  static const LinearOp op = linear_op("ptm::linear_gelu");
  if (!x.is_cpu()) return at::gelu(at::linear(x, w, b));
  return op.call(x, w, optional(b));
}

at::Tensor linear_add(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, const at::Tensor& other) {
  static auto op =
      op_handle("ptm::linear_add")
          .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const c10::optional<at::Tensor>&, const at::Tensor&)>();
  if (!x.is_cpu()) return at::linear(x, w, b) + other;
  return op.call(x, w, optional(b), other);
}

at::Tensor conv2d_dense(const at::Tensor& x, const Conv2d& conv) {
  const auto& o = conv->options;
  const at::IntArrayRef stride = *o.stride(), dilation = *o.dilation();
  using std::get_if;  // LibTorch 2.x's padding is a std::variant, 1.13's a c10::variant (found by ADL)
  const auto* padding = get_if<torch::ExpandingArray<2>>(&o.padding());
  if (!x.is_cpu() || !padding)
    return torch::nn::functional::detail::conv2d(x, conv->weight, conv->bias, o.stride(), o.padding(), o.dilation(),
                                                 o.groups());
  static auto op = op_handle("ptm::conv2d")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const c10::optional<at::Tensor>&,
                                         at::IntArrayRef, at::IntArrayRef, at::IntArrayRef, int64_t)>();
  return op.call(x, conv->weight, optional(conv->bias), stride, **padding, dilation, o.groups());
}

#else

at::Tensor matmul(const at::Tensor& a, const at::Tensor& b) { return at::matmul(a, b); }
at::Tensor linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) { return at::linear(x, w, b); }
at::Tensor linear_gelu(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  return at::gelu(at::linear(x, w, b));
}
at::Tensor linear_add(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, const at::Tensor& other) {
  return at::linear(x, w, b) + other;
}
at::Tensor conv2d_dense(const at::Tensor& x, const Conv2d& conv) {
  const auto& o = conv->options;
  return torch::nn::functional::detail::conv2d(x, conv->weight, conv->bias, o.stride(), o.padding(), o.dilation(),
                                               o.groups());
}

#endif

}  // namespace ptm::arch
