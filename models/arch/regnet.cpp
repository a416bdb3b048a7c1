// torchvision.models.regnet: RegNetX and RegNetY (RegNetX + squeeze-and-
// excitation), every variant one row of design parameters; and timm's
// RegNetX/Y (timm.models.regnet): the same network under timm's key names,
// its bottleneck widths rounded to the group width as timm does.
#include <cmath>

#include "common.h"

#include "../error.h"

namespace ptm::arch {
namespace {

// The RegNet design space: block widths grow linearly (w_0 + w_a * i) and
// are snapped to a geometric ladder of ratio w_m.
struct Design {
  const char* name;
  int64_t depth, w_0;
  double w_a, w_m;
  int64_t group_width;
  double se_ratio;  // 0: RegNetX, no squeeze-and-excitation
  bool timm = false;
};

constexpr double kBottleneck = 1.0;  // every torchvision RegNet's bottleneck multiplier

constexpr Design kDesigns[] = {
    {"regnet_x_400mf", 22, 24, 24.48, 2.54, 16, 0},     {"regnet_x_800mf", 16, 56, 35.73, 2.28, 16, 0},
    {"regnet_x_1_6gf", 18, 80, 34.01, 2.25, 24, 0},     {"regnet_x_3_2gf", 25, 88, 26.31, 2.25, 48, 0},
    {"regnet_x_8gf", 23, 80, 49.56, 2.88, 120, 0},      {"regnet_x_16gf", 22, 216, 55.59, 2.1, 128, 0},
    {"regnet_x_32gf", 23, 320, 69.86, 2.0, 168, 0},     {"regnet_y_400mf", 16, 48, 27.89, 2.09, 8, 0.25},
    {"regnet_y_800mf", 14, 56, 38.84, 2.4, 16, 0.25},   {"regnet_y_1_6gf", 27, 48, 20.71, 2.65, 24, 0.25},
    {"regnet_y_3_2gf", 21, 80, 42.63, 2.66, 24, 0.25},  {"regnet_y_8gf", 17, 192, 76.82, 2.19, 56, 0.25},
    {"regnet_y_16gf", 18, 200, 106.23, 2.48, 112, 0.25}, {"regnet_y_32gf", 20, 232, 115.89, 2.53, 232, 0.25},
    {"regnet_y_128gf", 27, 456, 160.83, 2.52, 264, 0.25},
    // timm's (model_cfgs of timm.models.regnet)
    {"regnetx_002", 13, 24, 36.44, 2.49, 8, 0, true},      {"regnetx_004", 22, 24, 24.48, 2.54, 16, 0, true},
    {"regnetx_006", 16, 48, 36.97, 2.24, 24, 0, true},     {"regnetx_008", 16, 56, 35.73, 2.28, 16, 0, true},
    {"regnetx_016", 18, 80, 34.01, 2.25, 24, 0, true},     {"regnetx_032", 25, 88, 26.31, 2.25, 48, 0, true},
    {"regnetx_040", 23, 96, 38.65, 2.43, 40, 0, true},     {"regnetx_064", 17, 184, 60.83, 2.07, 56, 0, true},
    {"regnetx_080", 23, 80, 49.56, 2.88, 120, 0, true},    {"regnetx_120", 19, 168, 73.36, 2.37, 112, 0, true},
    {"regnetx_160", 22, 216, 55.59, 2.1, 128, 0, true},    {"regnetx_320", 23, 320, 69.86, 2.0, 168, 0, true},
    {"regnety_002", 13, 24, 36.44, 2.49, 8, 0.25, true},   {"regnety_004", 16, 48, 27.89, 2.09, 8, 0.25, true},
    {"regnety_006", 15, 48, 32.54, 2.32, 16, 0.25, true},  {"regnety_008", 14, 56, 38.84, 2.4, 16, 0.25, true},
    {"regnety_016", 27, 48, 20.71, 2.65, 24, 0.25, true},  {"regnety_032", 21, 80, 42.63, 2.66, 24, 0.25, true},
    {"regnety_040", 22, 96, 31.41, 2.24, 64, 0.25, true},  {"regnety_064", 25, 112, 33.22, 2.27, 72, 0.25, true},
    {"regnety_080", 17, 192, 76.82, 2.19, 56, 0.25, true}, {"regnety_120", 19, 168, 73.36, 2.37, 112, 0.25, true},
    {"regnety_160", 18, 200, 106.23, 2.48, 112, 0.25, true},
    {"regnety_320", 20, 232, 115.89, 2.53, 232, 0.25, true},
};

// Python's round(): half to even (the default floating-point rounding mode).
int64_t round_half_even(double v) { return int64_t(std::nearbyint(v)); }

struct Stage {
  int64_t width, depth, group_width;
};

// torchvision's BlockParams.from_init_params. The widths are computed with
// the same float32 tensor operations, so that rounding (half to even) and
// precision match it exactly; then runs of equal width become stages, and
// each stage width is made divisible by its group width (torchvision:
// _make_divisible; timm: rounded to the nearest multiple).
std::vector<Stage> stages_of(const Design& d) {
  constexpr int64_t kQuant = 8;
  const at::Tensor cont = at::arange(d.depth) * d.w_a + d.w_0;  // float32, as in torchvision
  const at::Tensor capacity = at::round(at::log(cont / d.w_0) / std::log(d.w_m));
  const at::Tensor scaled = at::mul(at::pow(d.w_m, capacity), d.w_0);
  const at::Tensor widths = (at::round(scaled / kQuant) * kQuant).to(at::kInt);
  std::vector<Stage> stages;
  for (int64_t i = 0; i < d.depth; ++i) {
    const int64_t w = widths[i].item<int>();
    if (stages.empty() || stages.back().width != w)
      stages.push_back({w, 1, d.group_width});
    else
      ++stages.back().depth;
  }
  for (auto& s : stages) {
    const auto bottleneck = int64_t(double(s.width) * kBottleneck);
    s.group_width = std::min(s.group_width, bottleneck);
    const int64_t divisible = d.timm ? round_half_even(double(bottleneck) / double(s.group_width)) * s.group_width
                                     : make_divisible(double(bottleneck), s.group_width);
    s.width = int64_t(double(divisible) / kBottleneck);
  }
  return stages;
}

// 1x1, grouped 3x3 (with squeeze-and-excitation in RegNetY), 1x1.
class BottleneckTransform : public torch::nn::Module {
 public:
  BottleneckTransform(int64_t in, int64_t out, int64_t stride, int64_t group_width, double se_ratio) {
    const int64_t w_b = round_half_even(double(out) * kBottleneck);
    a = register_module("a", ConvNormAct(in, w_b, 1, 1, 1, Act::ReLU));
    b = register_module("b", ConvNormAct(w_b, w_b, 3, stride, w_b / group_width, Act::ReLU));
    // The squeeze width follows the block's input width, not w_b.
    if (se_ratio > 0)
      se = register_module("se", SqueezeExcitation(w_b, round_half_even(se_ratio * double(in)), Act::ReLU,
                                                   Act::Sigmoid));
    c = register_module("c", ConvNormAct(w_b, out, 1, 1, 1, Act::None));
  }
  at::Tensor forward(const at::Tensor& x) {
    at::Tensor y = b(a(x));
    if (se) y = se(y);
    return c(y);
  }
  ConvNormAct a{nullptr}, b{nullptr}, c{nullptr};
  SqueezeExcitation se{nullptr};
};

class RegNetBlock : public torch::nn::Module {
 public:
  virtual at::Tensor forward(const at::Tensor& x) = 0;
};

class ResBottleneckBlock : public RegNetBlock {
 public:
  ResBottleneckBlock(int64_t in, int64_t out, int64_t stride, int64_t group_width, double se_ratio) {
    if (in != out || stride != 1) proj = register_module("proj", ConvNormAct(in, out, 1, stride, 1, Act::None));
    f = register_module("f", std::make_shared<BottleneckTransform>(in, out, stride, group_width, se_ratio));
  }
  at::Tensor forward(const at::Tensor& x) override { return torch::relu((proj ? proj(x) : x) + f->forward(x)); }
  ConvNormAct proj{nullptr};
  std::shared_ptr<BottleneckTransform> f;
};

// timm's Bottleneck: the same block, its layers conv1, conv2, se, conv3 and
// the shortcut's projection "downsample".
class TimmBottleneck : public RegNetBlock {
 public:
  TimmBottleneck(int64_t in, int64_t out, int64_t stride, int64_t group_width, double se_ratio) {
    const int64_t w_b = round_half_even(double(out) * kBottleneck);
    conv1 = register_module("conv1", TimmConvNormAct(in, w_b, 1, 1, 1, Act::ReLU));
    conv2 = register_module("conv2", TimmConvNormAct(w_b, w_b, 3, stride, w_b / group_width, Act::ReLU));
    if (se_ratio > 0)
      se = register_module("se", SqueezeExcitation(w_b, round_half_even(se_ratio * double(in)), Act::ReLU,
                                                   Act::Sigmoid));
    conv3 = register_module("conv3", TimmConvNormAct(w_b, out, 1, 1, 1, Act::None));
    if (in != out || stride != 1)
      downsample = register_module("downsample", TimmConvNormAct(in, out, 1, stride, 1, Act::None));
  }
  at::Tensor forward(const at::Tensor& x) override {
    at::Tensor y = conv2(conv1(x));
    if (se) y = se(y);
    return torch::relu(conv3(y) + (downsample ? downsample(x) : x));
  }
  TimmConvNormAct conv1{nullptr}, conv2{nullptr}, conv3{nullptr}, downsample{nullptr};
  SqueezeExcitation se{nullptr};
};

// torchvision names a stage's blocks "block<stage>-<index>", timm "b<index + 1>".
class AnyStage : public torch::nn::Module {
 public:
  AnyStage(int index, int64_t in, const Stage& s, double se_ratio, bool timm) {
    for (int64_t i = 0; i < s.depth; ++i) {
      const int64_t block_in = i == 0 ? in : s.width, stride = i == 0 ? 2 : 1;
      if (timm)
        blocks_.push_back(register_module("b" + std::to_string(i + 1),
                                          std::make_shared<TimmBottleneck>(block_in, s.width, stride,
                                                                           s.group_width, se_ratio)));
      else
        blocks_.push_back(register_module("block" + std::to_string(index) + "-" + std::to_string(i),
                                          std::make_shared<ResBottleneckBlock>(block_in, s.width, stride,
                                                                               s.group_width, se_ratio)));
    }
  }
  at::Tensor forward(at::Tensor x) {
    for (auto& b : blocks_) x = b->forward(x);
    return x;
  }

 private:
  std::vector<std::shared_ptr<RegNetBlock>> blocks_;
};

// torchvision: stem, trunk_output.block<n>, fc; timm: stem, s<n>, head.fc.
class RegNet : public ClassifierModuleImpl {
 public:
  RegNet(const Design& d, int64_t n) {
    constexpr int64_t kStemWidth = 32;
    if (d.timm) timm_stem = register_module("stem", TimmConvNormAct(3, kStemWidth, 3, 2, 1, Act::ReLU));
    else stem = register_module("stem", ConvNormAct(3, kStemWidth, 3, 2, 1, Act::ReLU));
    torch::nn::Module* parent = this;
    if (!d.timm) parent = register_module("trunk_output", std::make_shared<torch::nn::Module>()).get();
    int64_t width = kStemWidth;
    int index = 0;
    for (const Stage& s : stages_of(d)) {
      ++index;
      stages_.push_back(parent->register_module((d.timm ? "s" : "block") + std::to_string(index),
                                                std::make_shared<AnyStage>(index, width, s, d.se_ratio, d.timm)));
      width = s.width;
    }
    parent = this;
    if (d.timm) parent = register_module("head", std::make_shared<torch::nn::Module>()).get();
    fc = parent->register_module("fc", Linear(width, n));
  }
  at::Tensor embed(const at::Tensor& input) override {
    at::Tensor x = stem ? stem(input) : timm_stem(input);
    for (auto& s : stages_) x = s->forward(x);
    return torch::adaptive_avg_pool2d(x, {1, 1}).flatten(1);
  }
  at::Tensor logits(const at::Tensor& f) override { return fc(f); }
  ConvNormAct stem{nullptr};
  TimmConvNormAct timm_stem{nullptr};
  Linear fc{nullptr};

 private:
  std::vector<std::shared_ptr<AnyStage>> stages_;
};

}  // namespace

ClassifierModulePtr make_regnet(const std::string& name, const ArchParams& p) {
  for (const Design& d : kDesigns)
    if (name == d.name) return std::make_shared<RegNet>(d, p.num_classes);
  throw ModelError("unknown regnet variant '" + name + "'");
}

}  // namespace ptm::arch
