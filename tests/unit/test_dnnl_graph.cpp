// ptm's oneDNN graph executor (models/dnnl_graph.cpp) against the models it
// runs: every built-in architecture it takes, with BatchNorm statistics and
// affine parameters set at random (so that folding them matters), at batch
// 1 and 3 and at two input sizes; a clean refusal of graphs holding an op
// it does not take; and the transformers' products on oneDNN
// (models/arch/matmul.cpp).
#include <gtest/gtest.h>

#include <torch/torch.h>
#include <torch/csrc/jit/frontend/tracer.h>
#include <torch/csrc/jit/passes/freeze_module.h>
#include <torch/version.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "../common/fixtures.h"
#include "models/arch/transformer.h"
#include "models/architectures.h"
#include "models/classifier.h"
#include "models/dnnl_graph.h"
#include "models/runtime.h"

namespace ptm::test {
namespace {

// Every plan made in these tests checks, after each step, that the step
// wrote nothing past its buffers (DnnlGraph::check_bounds): a step that did
// fails the test that ran it with the step named.
class BoundsChecked : public ::testing::Environment {
  void SetUp() override { DnnlGraph::check_bounds(true); }
};
const ::testing::Environment* const bounds_checked = ::testing::AddGlobalTestEnvironment(new BoundsChecked);

ClassifierModulePtr randomised(const std::string& arch) {
  torch::manual_seed(7);
  ClassifierModulePtr m = create_architecture(arch, 37);
  torch::NoGradGuard ng;
  for (auto& b : m->named_buffers()) {
    const std::string& k = b.key();
    if (k.size() >= 12 && k.compare(k.size() - 12, 12, "running_mean") == 0) b.value().uniform_(-0.5, 0.5);
    if (k.size() >= 11 && k.compare(k.size() - 11, 11, "running_var") == 0) b.value().uniform_(0.5, 2.0);
  }
  for (auto& p : m->named_parameters())
    if (p.value().dim() == 1) p.value().uniform_(-0.5, 1.5);
  m->eval();
  return m;
}

struct Case {
  std::string arch;
  int64_t size;
};

// The executor's largest difference from the float32 model within `bound`;
// returns what its plan made of the graph.
DnnlPlanCounts expect_taken(const Case& c, bool bf16, int64_t batch, double bound) {
  ClassifierModulePtr m = randomised(c.arch);
  std::string why;
  DnnlPlanCounts plan;
  const double err = dnnl_graph_error(*m, c.size, {1, batch}, &why, bf16, &plan);
  EXPECT_GE(err, 0) << c.arch << ": not taken: " << why;
  EXPECT_LE(err, bound) << c.arch << " at " << c.size;
  std::printf("[ %-7s ] %-20s %3lld px, batch 1 and %lld: max diff %.2e of the largest logit, %d as Winograd, "
              "%d channel scales of ptm's own, %d folded\n",
              bf16 ? "bf16" : "oneDNN", c.arch.c_str(), static_cast<long long>(c.size), static_cast<long long>(batch),
              err, plan.winograd, plan.channel_scales, plan.folded_scales);
  return plan;
}

// oneDNN 2.x has float32 Winograd convolutions on AVX-512 (3.x has none on
// the CPU): there ResNets' 3x3 stride-1 convolutions of 14 x 14 outputs and
// more run as Winograd, and are held to the same bound as the rest.
bool winograd_expected() {
  const char* off = std::getenv("PTM_DNNL_WINOGRAD");
  return DnnlGraph::version().rfind("2.", 0) == 0 && __builtin_cpu_supports("avx512f") && !(off && std::string(off) == "0");
}

class Taken : public ::testing::TestWithParam<Case> {};

TEST_P(Taken, MatchesTheModel) {
  const DnnlPlanCounts plan = expect_taken(GetParam(), false, 3, 1e-4);
  const std::string& arch = GetParam().arch;
  // Squeeze-and-excitation products in float32 run as ptm's own pass
  // (models/channel_scale.cpp) at batch 3, and at batch 1 where a 1x1
  // convolution of fewer output channels than pixels follows, folded
  // into its weights (EfficientNet's and MobileNetV3's early blocks),
  // held to the same bound.
  if (arch.rfind("efficientnet", 0) == 0 || arch.rfind("mobilenet_v3", 0) == 0 || arch.rfind("regnet_y", 0) == 0) {
    EXPECT_GT(plan.channel_scales, 0) << arch << ": no squeeze-and-excitation product ran as ptm's own pass";
  }
  if (arch.rfind("efficientnet", 0) == 0 || arch.rfind("mobilenet_v3", 0) == 0) {
    EXPECT_GT(plan.folded_scales, 0) << arch << ": no squeeze-and-excitation product was folded into a convolution";
  }
  if (winograd_expected() && (arch == "resnet18" || arch == "resnet50")) {
    EXPECT_GT(plan.winograd, 0) << arch << ": no convolution ran as Winograd on oneDNN " << DnnlGraph::version();
  }
}

INSTANTIATE_TEST_SUITE_P(
    Architectures, Taken,
    // Sizes kept small (the float32 reference is LibTorch's eager forward),
    // odd ones among them (ceil-mode pooling, padding at the edges); alexnet
    // at 224, where its 6x6 adaptive pooling divides.
    ::testing::Values(Case{"resnet18", 128}, Case{"resnet18", 97}, Case{"resnet50", 128}, Case{"resnext50_32x4d", 96},
                      Case{"mobilenet_v2", 128}, Case{"mobilenet_v2", 100}, Case{"mobilenet_v3_large", 128},
                      Case{"mobilenet_v3_small", 96}, Case{"efficientnet_b0", 128}, Case{"efficientnet_b0", 99},
                      Case{"squeezenet1_1", 113}, Case{"squeezenet1_0", 227}, Case{"regnet_y_400mf", 128},
                      Case{"regnet_x_400mf", 96}, Case{"mnasnet1_0", 128}, Case{"alexnet", 224}),
    [](const ::testing::TestParamInfo<Case>& i) { return i.param.arch + "_" + std::to_string(i.param.size); });

// A graph's plans share one arena for their activations: shapes run in any
// order (each smaller plan after the arena has grown and moved, more
// shapes than the graph keeps plans for, so that the least recently run
// are dropped and made again) give the model's logits, no step writes past
// its buffers (bounds checked, above), and the arena is what the largest
// plan needs, not the sum of the plans'. mobilenet_v3_small: channel counts
// that blocked layouts pad (72, 88, 120), squeeze-and-excitation.
TEST(Plans, ShareOneArena) {
  for (const std::string arch : {"resnet18", "efficientnet_b0", "mobilenet_v3_small"}) {
    ClassifierModulePtr m = randomised(arch);
    std::string why;
    size_t activations = 0, scratchpad = 0;  // the most any one batch size's plan needs
    for (int64_t n = 1; n <= 10; ++n) {
      DnnlPlanCounts one;
      ASSERT_GE(dnnl_graph_error(*m, 64, {n}, &why, false, &one), 0) << arch << ": not taken: " << why;
      activations = std::max(activations, one.activation_bytes);
      scratchpad = std::max(scratchpad, one.scratchpad_bytes);
    }
    const std::vector<int64_t> batches{1, 4, 1, 2, 4, 3, 1, 5, 6, 7, 8, 9, 10, 2, 1, 10};
    DnnlPlanCounts all;
    const double err = dnnl_graph_error(*m, 64, batches, &why, false, &all);
    EXPECT_GE(err, 0) << arch << ": not taken: " << why;
    EXPECT_LE(err, 1e-4) << arch << ": a plan run after the arena moved, or made again, gave other logits";
    EXPECT_GT(activations, 0u) << arch;
    EXPECT_EQ(all.activation_bytes, activations) << arch << ": the arena is not what the largest plan needs";
    EXPECT_EQ(all.scratchpad_bytes, scratchpad) << arch << ": the scratchpad is not what the largest plan needs";
    std::printf("[ arena   ] %-20s batches 1 to 10 in %zu runs: max diff %.2e, activations %.1f MB, scratchpad %.1f MB\n",
                arch.c_str(), batches.size(), err, double(all.activation_bytes) / (1 << 20),
                double(all.scratchpad_bytes) / (1 << 20));
  }
}

// bfloat16 (precision=bf16): weights and activations in bfloat16, the
// input NHWC as ptminfer writes it, against the float32 model. The bound
// is the one ptm holds LibTorch's bfloat16 graph to (5e-2 of the largest
// logit); what bfloat16 does to top-1 on real frames is measured by the
// agreement benchmark (tests/bench/bench_agreement.py).
class TakenBf16 : public ::testing::TestWithParam<Case> {};

TEST_P(TakenBf16, MatchesTheModel) {
  if (!runtime::cpu_has_bf16()) GTEST_SKIP() << "this CPU has no bfloat16 instructions (AVX-512 BF16 or AMX)";
  expect_taken(GetParam(), true, 2, 5e-2);
}

INSTANTIATE_TEST_SUITE_P(
    Architectures, TakenBf16,
    ::testing::Values(Case{"resnet18", 128}, Case{"resnet50", 96}, Case{"mobilenet_v2", 128},
                      Case{"mobilenet_v3_large", 96}, Case{"efficientnet_b0", 128}, Case{"squeezenet1_1", 96}),
    [](const ::testing::TestParamInfo<Case>& i) { return i.param.arch + "_" + std::to_string(i.param.size); });

// int8 on the executor (precision=int8 where the CPU has VNNI): calibrated
// on random images, its convolutions in 8 bits (u8 or s8 activations, s8
// weights per output channel, requantized in place, residual adds read in
// their own type and scale), against the float32 model. ReLU (ResNets),
// ReLU6 clipped in the output's scale (MobileNetV2, on oneDNN 2.x), SiLU
// with a float32 output (EfficientNet on 2.x), grouped and depthwise
// convolutions. The bound (8% of the largest logit on these random
// weights, 37 classes) says the scales are right: a wrong one is off by
// the whole logit; what int8 does to top-1 on real frames is measured by
// tests/bench/bench_agreement.py.
class TakenInt8 : public ::testing::TestWithParam<Case> {};

TEST_P(TakenInt8, MatchesTheModel) {
  if (!runtime::cpu_has_vnni()) GTEST_SKIP() << "this CPU has no VNNI: ptm's int8 executor is not used on it";
  const Case& c = GetParam();
  ClassifierModulePtr m = randomised(c.arch);
  std::string why;
  int convs = 0;
  const double err = dnnl_int8_error(*m, c.size, 8, &why, &convs);
  ASSERT_GE(err, 0) << c.arch << ": not taken: " << why;
  EXPECT_LE(err, 0.08) << c.arch << " at " << c.size;
  EXPECT_GT(err, 1e-5) << c.arch << ": the int8 graph gave float32's logits";
  EXPECT_GT(convs, 0) << c.arch << ": no convolution ran in 8 bits";
  std::printf("[ int8    ] %-20s %3lld px: max diff %.2e of the largest logit, %d convolutions in 8 bits\n",
              c.arch.c_str(), static_cast<long long>(c.size), err, convs);
}

INSTANTIATE_TEST_SUITE_P(
    Architectures, TakenInt8,
    ::testing::Values(Case{"resnet18", 128}, Case{"resnet50", 96}, Case{"resnext50_32x4d", 96},
                      Case{"mobilenet_v2", 128}, Case{"efficientnet_b0", 128}, Case{"squeezenet1_1", 113},
                      Case{"regnet_x_400mf", 96}),
    [](const ::testing::TestParamInfo<Case>& i) { return i.param.arch + "_" + std::to_string(i.param.size); });

// A load's choice (models/classifier.cpp, optimised()): on LibTorch 2.x the
// executor is raced against the frozen graph before LibTorch's other graphs
// are built, and where it wins they are not (its note names the frozen
// graph); PTM_DNNL_FIRST=0, and LibTorch 1.13 always, build LibTorch's
// fastest graph first and race the executor against that. Either way the
// loaded classifier's logits are the model's.
TEST(Load, ExecutorRacedFirstOnLibTorch2) {
  const std::string file = fixture("mobilenet_v2.pth");
  ClassifierOptions eager_options;
  eager_options.model = file;
  eager_options.optimize = false;
  Classifier eager(eager_options);
  const at::Tensor x = torch::rand({2, 3, 224, 224});
  const at::Tensor want = eager.forward(x);
  for (const char* rule : {"1", "0"}) {
    setenv("PTM_DNNL_FIRST", rule, 1);
    ClassifierOptions o;
    o.model = file;
    o.threads = 2;
    Classifier c(o);
    unsetenv("PTM_DNNL_FIRST");
    std::string note;
    for (const auto& n : c.info().notes)
      if (n.rfind("runs on ptm's oneDNN graph executor", 0) == 0) note = n;
    ASSERT_FALSE(note.empty()) << "PTM_DNNL_FIRST=" << rule << ": mobilenet_v2 not on the executor";
    const bool first = TORCH_VERSION_MAJOR >= 2 && std::string(rule) == "1";
    EXPECT_EQ(note.find("against LibTorch's frozen graph's") != std::string::npos, first)
        << "PTM_DNNL_FIRST=" << rule << ", LibTorch " << TORCH_VERSION_MAJOR << "." << TORCH_VERSION_MINOR << ": "
        << note;
    const at::Tensor got = c.forward(x);
    EXPECT_LE((got - want).abs().max().item<double>() / want.abs().max().item<double>(), 1e-4) << note;
  }
}

// Graphs with ops the executor does not take are refused with the op named
// (LibTorch's graph runs them), never run wrongly.
TEST(Refused, NamesTheOp) {
  for (const std::string arch : {"densenet121", "convnext_tiny", "shufflenet_v2_x1_0"}) {
    ClassifierModulePtr m = randomised(arch);
    std::string why;
    EXPECT_LT(dnnl_graph_error(*m, 64, {1}, &why), 0) << arch << " was taken";
    EXPECT_NE(why.find("::"), std::string::npos) << arch << ": " << why;  // aten::..., ptm::...
    std::printf("[ refused ] %-20s %s\n", arch.c_str(), why.c_str());
  }
}


// The transformers' and ConvNeXt's matrix products on oneDNN
// (models/arch/matmul.cpp)
// against LibTorch's in double precision: the layouts attention hands them
// (a permuted view, a transpose's view), a batch of matrices times one
// matrix, and the fallbacks (other types, broadcast batches, gradients).
double product_error(const at::Tensor& got, const at::Tensor& want) {
  EXPECT_EQ(got.sizes(), want.sizes());
  if (got.sizes() != want.sizes()) return 1;
  return (got.to(at::kDouble) - want).abs().max().item<double>() / want.abs().max().item<double>();
}


// A squeeze-and-excitation product (x times one value a channel and image)
// on the executor's own pass, for the layouts the graph's input gives it:
// NCHW and NHWC, at batch 1 and 3, against LibTorch's ops. (The blocked
// layouts of 8 channels arise inside regnet_y above; NHWC inside
// EfficientNet and MobileNetV3.)
TEST(Scale, PlanarAndChannelsLast) {
  torch::jit::Module m("se");
  m.define(R"(
def forward(self, x):
    s = torch.sigmoid(torch.adaptive_avg_pool2d(x, [1, 1]))
    return torch.mean(x * s, [2, 3], False)
)");
  m.eval();
  torch::jit::Module frozen = torch::jit::freeze(m);
  std::string why;
  const std::unique_ptr<DnnlGraph> g = DnnlGraph::compile(frozen, &why);
  ASSERT_TRUE(g) << why;
  torch::manual_seed(8);
  for (const bool nhwc : {false, true})
    for (const int64_t n : {1, 3}) {
      at::Tensor x = torch::randn({n, 24, 9, 7});
      const at::Tensor want = (x * torch::sigmoid(x.mean({2, 3}, true))).mean({2, 3});
      if (nhwc) x = x.contiguous(at::MemoryFormat::ChannelsLast);
      const at::Tensor got = g->run(x);
      EXPECT_LE(product_error(got, want.to(at::kDouble)), 1e-6) << (nhwc ? "NHWC" : "NCHW") << " batch " << n;
    }
  EXPECT_EQ(g->channel_scales(), 1);
}

TEST(Products, MatmulMatchesLibTorch) {
  torch::manual_seed(3);
  torch::NoGradGuard ng;
  const at::Tensor qkv = torch::randn({2, 197, 3, 12, 64}).permute({2, 0, 3, 1, 4});  // as ViT's
  const at::Tensor q = qkv[0], k = qkv[1], v = qkv[2];
  const at::Tensor attn = torch::softmax(torch::randn({2, 12, 197, 197}), -1);
  const at::Tensor m = torch::randn({64, 40});
  struct P {
    const char* what;
    at::Tensor a, b;
  };
  for (const P& p : {P{"q k^T (permuted, transposed views)", q, k.transpose(-2, -1)},
                     P{"attn v", attn, v},
                     P{"batches times one matrix", q, m},
                     P{"a transposed, one matrix", q.transpose(-2, -1).contiguous().transpose(-2, -1), m},
                     P{"two matrices", torch::randn({5, 7}), torch::randn({7, 3})},
                     P{"broadcast batch (fallback)", torch::randn({1, 12, 9, 64}), k.transpose(-2, -1)},
                     P{"float64 (fallback)", q.to(at::kDouble), k.transpose(-2, -1).to(at::kDouble)}}) {
    const at::Tensor want = at::matmul(p.a.to(at::kDouble), p.b.to(at::kDouble));
    const double err = product_error(arch::matmul(p.a, p.b), want);
    EXPECT_LE(err, 1e-5) << p.what;
    std::printf("[ matmul  ] %-36s max diff %.2e of the largest\n", p.what, err);
  }
}

TEST(Products, LinearMatchesLibTorch) {
  torch::manual_seed(4);
  torch::NoGradGuard ng;
  const at::Tensor w = torch::randn({300, 96}), b = torch::randn({300});
  const at::Tensor x = torch::randn({3, 50, 96});
  for (const bool bias : {true, false}) {
    for (const at::Tensor& in : {x, x.transpose(0, 1), x.select(1, 0)}) {
      const at::Tensor want = at::linear(in.to(at::kDouble), w.to(at::kDouble), bias ? b.to(at::kDouble) : at::Tensor());
      const double err = product_error(arch::linear(in, w, bias ? b : at::Tensor()), want);
      EXPECT_LE(err, 1e-5) << "bias " << bias << ", input " << in.sizes();
      // GELU (erf) in the product's kernel: oneDNN's erf against LibTorch's.
      const double gelu = product_error(arch::linear_gelu(in, w, bias ? b : at::Tensor()), at::gelu(want));
      EXPECT_LE(gelu, 1e-5) << "GELU, bias " << bias << ", input " << in.sizes();
      // A residual added in the product's kernel: contiguous, a permuted
      // view (copied first), and a broadcast one (LibTorch's add).
      const at::Tensor other = torch::randn(want.sizes());
      for (const at::Tensor& o : {other, other.transpose(0, -1).contiguous().transpose(0, -1), other.select(0, 0)}) {
        const double add =
            product_error(arch::linear_add(in, w, bias ? b : at::Tensor(), o), want + o.to(at::kDouble));
        EXPECT_LE(add, 1e-5) << "add, bias " << bias << ", input " << in.sizes() << ", addend " << o.sizes();
      }
    }
  }
}

// ConvNeXt's block as the module runs it (models/arch/convnext.cpp):
// channels-last in, a depthwise convolution kept dense (ptm::conv2d), the
// products on its rows, the residual added in the second one's kernel.
// Traced, each is one ptm:: node; LibTorch's oneDNN conversion
// (optimize_for_inference) leaves them dense, no reorder in between; the
// result matches LibTorch's ops in double precision at any batch size and
// stays channels-last.
TEST(Products, ConvNeXtBlockStaysDense) {
  torch::manual_seed(8);
  torch::NoGradGuard ng;
  const int64_t c = 24;
  arch::Conv2d dw = arch::conv(c, c, 7, 1, 3, c, true);
  for (at::Tensor& p : dw->parameters()) p.requires_grad_(false);  // constants of the trace, as frozen
  const at::Tensor w1 = torch::randn({4 * c, c}) * 0.2, b1 = torch::randn({4 * c});
  const at::Tensor w2 = torch::randn({c, 4 * c}) * 0.1, b2 = torch::randn({c});
  auto f = [&](const at::Tensor& x) {
    const at::Tensor y = arch::conv2d_dense(x, dw).permute({0, 2, 3, 1});
    return arch::linear_add(arch::linear_gelu(y, w1, b1), w2, b2, x.permute({0, 2, 3, 1})).permute({0, 3, 1, 2});
  };
  auto reference = [&](const at::Tensor& x) {
    const at::Tensor xd = x.to(at::kDouble);
    const at::Tensor y = at::conv2d(xd, dw->weight.to(at::kDouble), dw->bias.to(at::kDouble), 1, 3, 1, c);
    const at::Tensor h = at::gelu(at::linear(y.permute({0, 2, 3, 1}), w1.to(at::kDouble), b1.to(at::kDouble)));
    return at::linear(h, w2.to(at::kDouble), b2.to(at::kDouble)).permute({0, 3, 1, 2}) + xd;
  };
  const auto channels_last = [](const at::Tensor& t) { return t.contiguous(at::MemoryFormat::ChannelsLast); };
  const at::Tensor x1 = channels_last(torch::randn({1, c, 14, 14}));
  EXPECT_LE(product_error(f(x1), reference(x1)), 1e-5);
  EXPECT_TRUE(f(x1).is_contiguous(at::MemoryFormat::ChannelsLast));

  auto cu = std::make_shared<torch::jit::CompilationUnit>();
  torch::jit::Module m(c10::QualifiedName("__torch__.ptm.test.Block"), cu, true);
  auto traced = torch::jit::tracer::trace(
      {x1}, [&](torch::jit::Stack in) -> torch::jit::Stack { return {f(in.at(0).toTensor())}; },
      [](const at::Tensor&) { return std::string(); }, true, false, &m);
  m.type()->addMethod(cu->create_function(c10::QualifiedName(*m.type()->name(), "forward"), traced.first->graph));
  m.eval();
  torch::jit::Module frozen = torch::jit::freeze(m);
  torch::jit::Module o = torch::jit::optimize_for_inference(frozen);
  const std::shared_ptr<torch::jit::Graph> g = o.get_method("forward").graph();
  int conv = 0, add = 0, other = 0;
  for (torch::jit::Node* n : g->nodes()) {
    const std::string k = n->kind().toQualString();
    conv += k == "ptm::conv2d";
    add += k == "ptm::linear_add";
    other += k == "aten::conv2d" || k == "aten::_convolution" || k == "aten::add" || k == "aten::to_mkldnn" ||
             k == "aten::to_dense" || k.find("mkldnn") != std::string::npos;
  }
  EXPECT_EQ(conv, 1) << *g;
  EXPECT_EQ(add, 1) << *g;
  EXPECT_EQ(other, 0) << *g;
  const at::Tensor x3 = channels_last(torch::randn({3, c, 14, 14}));
  const at::Tensor y3 = o.forward({x3}).toTensor();
  EXPECT_LE(product_error(y3, reference(x3)), 1e-5);
  EXPECT_TRUE(y3.is_contiguous(at::MemoryFormat::ChannelsLast));
}

// With gradients wanted, the products are LibTorch's (autograd's): the
// gradient reaches the weights as with at::linear / at::matmul.
TEST(Products, GradientsFlow) {
  torch::manual_seed(5);
  const at::Tensor w = torch::randn({8, 6}).requires_grad_(), b = torch::randn({8}).requires_grad_();
  const at::Tensor x = torch::randn({4, 6});
  arch::matmul(arch::linear(x, w, b), w).sum().backward();
  const at::Tensor gw = w.grad().clone(), gb = b.grad().clone();
  w.grad().zero_();
  b.grad().zero_();
  at::matmul(at::linear(x, w, b), w).sum().backward();
  EXPECT_TRUE(torch::allclose(gw, w.grad(), 1e-5, 1e-5));
  EXPECT_TRUE(torch::allclose(gb, b.grad(), 1e-5, 1e-5));
}

// A trace records each product as one op (ptm::linear, ptm::matmul), so
// the graph takes the same path at run time, at any batch size.
TEST(Products, TracedAsOneOpAnyBatch) {
  torch::manual_seed(6);
  torch::NoGradGuard ng;
  const at::Tensor w = torch::randn({32, 16}), b = torch::randn({32});
  auto f = [&](const at::Tensor& x) {
    const at::Tensor y = arch::linear(x, w, b).reshape({-1, 10, 2, 16}).permute({0, 2, 1, 3});
    return arch::matmul(y, y.transpose(-2, -1));
  };
  auto traced = torch::jit::tracer::trace(
      {torch::randn({1, 10, 16})}, [&](torch::jit::Stack in) -> torch::jit::Stack { return {f(in.at(0).toTensor())}; },
      [](const at::Tensor&) { return std::string(); }, true, false);
  std::shared_ptr<torch::jit::Graph> g = traced.first->graph;
  int linear = 0, matmul = 0, aten = 0;
  for (torch::jit::Node* n : g->nodes()) {
    const std::string k = n->kind().toQualString();
    linear += k == "ptm::linear";
    matmul += k == "ptm::matmul";
    aten += k == "aten::linear" || k == "aten::matmul" || k == "aten::addmm" || k == "aten::bmm";
  }
  EXPECT_EQ(linear, 1) << *g;
  EXPECT_EQ(matmul, 1) << *g;
  EXPECT_EQ(aten, 0) << *g;
  torch::jit::GraphExecutor run(g, "products");
  const at::Tensor x = torch::randn({3, 10, 16});
  torch::jit::Stack stack{x};
  run.run(stack);
  EXPECT_LE(product_error(stack.at(0).toTensor(), f(x).to(at::kDouble)), 1e-6);
}

}  // namespace

void register_dynamic_tests() {}

}  // namespace ptm::test
