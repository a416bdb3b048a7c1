// torchvision.models.regnet: RegNetX and RegNetY (RegNetX + squeeze-and-
// excitation), every variant one row of design parameters.
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
};

struct Stage {
  int64_t width, depth, group_width;
};

// torchvision's BlockParams.from_init_params. The widths are computed with
// the same float32 tensor operations, so that rounding (half to even) and
// precision match it exactly; then runs of equal width become stages, and
// each stage width is made divisible by its group width.
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
    s.width = int64_t(double(make_divisible(double(bottleneck), s.group_width)) / kBottleneck);
  }
  return stages;
}

// Python's round(): half to even (the default floating-point rounding mode).
int64_t round_half_even(double v) { return int64_t(std::nearbyint(v)); }

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

class ResBottleneckBlock : public torch::nn::Module {
 public:
  ResBottleneckBlock(int64_t in, int64_t out, int64_t stride, int64_t group_width, double se_ratio) {
    if (in != out || stride != 1) proj = register_module("proj", ConvNormAct(in, out, 1, stride, 1, Act::None));
    f = register_module("f", std::make_shared<BottleneckTransform>(in, out, stride, group_width, se_ratio));
  }
  at::Tensor forward(const at::Tensor& x) { return torch::relu((proj ? proj(x) : x) + f->forward(x)); }
  ConvNormAct proj{nullptr};
  std::shared_ptr<BottleneckTransform> f;
};

// torchvision names a stage's blocks "block<stage>-<index>".
class AnyStage : public torch::nn::Module {
 public:
  AnyStage(int index, int64_t in, const Stage& s, double se_ratio) {
    for (int64_t i = 0; i < s.depth; ++i)
      blocks_.push_back(register_module(
          "block" + std::to_string(index) + "-" + std::to_string(i),
          std::make_shared<ResBottleneckBlock>(i == 0 ? in : s.width, s.width, i == 0 ? 2 : 1, s.group_width,
                                               se_ratio)));
  }
  at::Tensor forward(at::Tensor x) {
    for (auto& b : blocks_) x = b->forward(x);
    return x;
  }

 private:
  std::vector<std::shared_ptr<ResBottleneckBlock>> blocks_;
};

class RegNet : public ClassifierModuleImpl {
 public:
  RegNet(const Design& d, int64_t n) {
    constexpr int64_t kStemWidth = 32;
    stem = register_module("stem", ConvNormAct(3, kStemWidth, 3, 2, 1, Act::ReLU));
    auto trunk = register_module("trunk_output", std::make_shared<torch::nn::Module>());
    int64_t width = kStemWidth;
    int index = 0;
    for (const Stage& s : stages_of(d)) {
      ++index;
      stages_.push_back(trunk->register_module("block" + std::to_string(index),
                                               std::make_shared<AnyStage>(index, width, s, d.se_ratio)));
      width = s.width;
    }
    fc = register_module("fc", torch::nn::Linear(width, n));
  }
  at::Tensor embed(const at::Tensor& input) override {
    at::Tensor x = stem(input);
    for (auto& s : stages_) x = s->forward(x);
    return torch::adaptive_avg_pool2d(x, {1, 1}).flatten(1);
  }
  at::Tensor logits(const at::Tensor& f) override { return fc(f); }
  ConvNormAct stem{nullptr};
  torch::nn::Linear fc{nullptr};

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
