// torchvision.models.shufflenetv2.
#include "common.h"

#include "../error.h"

namespace ptm::arch {
namespace {

class ConvBNSeq : public torch::nn::Module {
 public:
  template <typename H>
  void add(H holder) {
    auto m = holder.ptr();
    register_module(std::to_string(steps_.size()), m);
    steps_.push_back([m](const at::Tensor& x) { return m->forward(x); });
  }
  void conv_(Conv2d c) { add(c); }
  void bn_(int64_t ch) { add(batchnorm(ch)); }
  void relu_() { steps_.push_back([](const at::Tensor& x) { return torch::relu(x); }); }
  at::Tensor forward(at::Tensor x) {
    for (auto& s : steps_) x = s(x);
    return x;
  }

 private:
  std::vector<std::function<at::Tensor(const at::Tensor&)>> steps_;
};

// torchvision's channel_shuffle(x, groups), as the single ATen op so a
// traced graph stays valid for every input shape.
at::Tensor shuffle_channels(const at::Tensor& x, int64_t groups) { return torch::channel_shuffle(x, groups); }

class InvertedResidual : public torch::nn::Module {
 public:
  InvertedResidual(int64_t inp, int64_t oup, int64_t stride) : stride_(stride) {
    const int64_t bf = oup / 2;
    branch1 = register_module("branch1", std::make_shared<ConvBNSeq>());
    if (stride > 1) {
      branch1->conv_(conv(inp, inp, 3, stride, 1, inp));
      branch1->bn_(inp);
      branch1->conv_(conv(inp, bf, 1));
      branch1->bn_(bf);
      branch1->relu_();
    }
    branch2 = register_module("branch2", std::make_shared<ConvBNSeq>());
    branch2->conv_(conv(stride > 1 ? inp : bf, bf, 1));
    branch2->bn_(bf);
    branch2->relu_();
    branch2->conv_(conv(bf, bf, 3, stride, 1, bf));
    branch2->bn_(bf);
    branch2->conv_(conv(bf, bf, 1));
    branch2->bn_(bf);
    branch2->relu_();
  }
  at::Tensor forward(const at::Tensor& x) {
    at::Tensor out;
    if (stride_ == 1) {
      auto halves = x.chunk(2, 1);
      out = torch::cat({halves[0], branch2->forward(halves[1])}, 1);
    } else {
      out = torch::cat({branch1->forward(x), branch2->forward(x)}, 1);
    }
    return shuffle_channels(out, 2);
  }
  std::shared_ptr<ConvBNSeq> branch1, branch2;

 private:
  int64_t stride_;
};

class ShuffleNetV2 : public ClassifierModuleImpl {
 public:
  ShuffleNetV2(std::array<int64_t, 5> ch, int64_t n) {
    const int64_t repeats[] = {4, 8, 4};
    conv1 = register_module("conv1", std::make_shared<ConvBNSeq>());
    conv1->conv_(conv(3, ch[0], 3, 2, 1));
    conv1->bn_(ch[0]);
    conv1->relu_();
    int64_t in = ch[0];
    for (int s = 0; s < 3; ++s) {
      auto stage = std::make_shared<Chain<std::shared_ptr<InvertedResidual>>>();
      stage->push_back(std::make_shared<InvertedResidual>(in, ch[s + 1], 2));
      for (int64_t i = 1; i < repeats[s]; ++i)
        stage->push_back(std::make_shared<InvertedResidual>(ch[s + 1], ch[s + 1], 1));
      stages_[s] = register_module("stage" + std::to_string(s + 2), stage);
      in = ch[s + 1];
    }
    conv5 = register_module("conv5", std::make_shared<ConvBNSeq>());
    conv5->conv_(conv(in, ch[4], 1));
    conv5->bn_(ch[4]);
    conv5->relu_();
    fc = register_module("fc", Linear(ch[4], n));
  }
  at::Tensor embed(const at::Tensor& input) override {
    at::Tensor x = torch::max_pool2d(conv1->forward(input), 3, 2, 1);
    for (auto& s : stages_) x = s->forward(x);
    return conv5->forward(x).mean({2, 3});
  }
  at::Tensor logits(const at::Tensor& f) override { return fc(f); }
  std::shared_ptr<ConvBNSeq> conv1, conv5;
  Linear fc{nullptr};

 private:
  std::array<ChainPtr<std::shared_ptr<InvertedResidual>>, 3> stages_;
};

}  // namespace

ClassifierModulePtr make_shufflenet_v2(const std::string& name, const ArchParams& p) {
  const int64_t n = p.num_classes;
  if (name == "shufflenet_v2_x0_5") return std::make_shared<ShuffleNetV2>(std::array<int64_t, 5>{24, 48, 96, 192, 1024}, n);
  if (name == "shufflenet_v2_x1_0") return std::make_shared<ShuffleNetV2>(std::array<int64_t, 5>{24, 116, 232, 464, 1024}, n);
  if (name == "shufflenet_v2_x1_5") return std::make_shared<ShuffleNetV2>(std::array<int64_t, 5>{24, 176, 352, 704, 1024}, n);
  if (name == "shufflenet_v2_x2_0") return std::make_shared<ShuffleNetV2>(std::array<int64_t, 5>{24, 244, 488, 976, 2048}, n);
  throw ModelError("unknown shufflenet_v2 variant '" + name + "'");
}

}  // namespace ptm::arch
