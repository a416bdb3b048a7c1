// torchvision.models.{googlenet, inception}: GoogLeNet (Inception v1) and
// Inception v3. Their auxiliary classifiers (aux1/aux2, AuxLogits) only run
// in training, so they are not built here: the registry lists their
// state-dict prefixes as ignored (ArchInfo::ignored), and checkpoints with or
// without them load alike.
#include "common.h"

#include "../error.h"

namespace ptm::arch {
namespace {

// torchvision's BasicConv2d: convolution without bias, BatchNorm (eps 1e-3),
// ReLU.
class BasicConv2dImpl : public torch::nn::Module {
 public:
  BasicConv2dImpl(int64_t in, int64_t out, torch::ExpandingArray<2> k, int64_t stride = 1,
                  torch::ExpandingArray<2> padding = 0) {
    conv = register_module(
        "conv", Conv2d(torch::nn::Conv2dOptions(in, out, k).stride(stride).padding(padding).bias(false)));
    bn = register_module("bn", batchnorm(out, Norm{0.001}));
  }
  at::Tensor forward(const at::Tensor& x) { return torch::relu(bn(conv(x))); }
  Conv2d conv{nullptr};
  torch::nn::BatchNorm2d bn{nullptr};
};
TORCH_MODULE(BasicConv2d);

// A module whose children are BasicConv2d layers named like torchvision's.
class ConvBranches : public torch::nn::Module {
 protected:
  BasicConv2d add(const std::string& name, int64_t in, int64_t out, torch::ExpandingArray<2> k, int64_t stride = 1,
                  torch::ExpandingArray<2> padding = 0) {
    return register_module(name, BasicConv2d(in, out, k, stride, padding));
  }
};

// torchvision's transform_input: the input arrives normalised with ImageNet's
// mean and std, the ported TensorFlow weights expect (x - 0.5) / 0.5.
at::Tensor imagenet_to_half_range(const at::Tensor& x) {
  const double mean[3] = {0.485, 0.456, 0.406}, std[3] = {0.229, 0.224, 0.225};
  std::vector<at::Tensor> ch;
  for (int64_t c = 0; c < 3; ++c) ch.push_back(x.narrow(1, c, 1) * (std[c] / 0.5) + (mean[c] - 0.5) / 0.5);
  return torch::cat(ch, 1);
}

// ---- GoogLeNet

// nn.Sequential(conv, conv) under "0" and "1".
class ConvPair : public torch::nn::Module {
 public:
  ConvPair(int64_t in, int64_t mid, int64_t out) {
    first_ = register_module("0", BasicConv2d(in, mid, 1));
    second_ = register_module("1", BasicConv2d(mid, out, 3, 1, 1));
  }
  at::Tensor forward(const at::Tensor& x) { return second_(first_(x)); }

 private:
  BasicConv2d first_{nullptr}, second_{nullptr};
};

// nn.Sequential(MaxPool2d, conv): the pool holds slot "0".
class PoolProjection : public torch::nn::Module {
 public:
  PoolProjection(int64_t in, int64_t out) { conv_ = register_module("1", BasicConv2d(in, out, 1)); }
  at::Tensor forward(const at::Tensor& x) { return conv_(torch::max_pool2d(x, 3, 1, 1, 1, true)); }

 private:
  BasicConv2d conv_{nullptr};
};

class GoogLeNetInception : public torch::nn::Module {
 public:
  GoogLeNetInception(int64_t in, int64_t c1, int64_t c3red, int64_t c3, int64_t c5red, int64_t c5, int64_t pool) {
    branch1 = register_module("branch1", BasicConv2d(in, c1, 1));
    branch2 = register_module("branch2", std::make_shared<ConvPair>(in, c3red, c3));
    // torchvision's "5x5" branch uses a 3x3 kernel (its published weights do).
    branch3 = register_module("branch3", std::make_shared<ConvPair>(in, c5red, c5));
    branch4 = register_module("branch4", std::make_shared<PoolProjection>(in, pool));
  }
  at::Tensor forward(const at::Tensor& x) {
    return torch::cat({branch1(x), branch2->forward(x), branch3->forward(x), branch4->forward(x)}, 1);
  }

 private:
  BasicConv2d branch1{nullptr};
  std::shared_ptr<ConvPair> branch2, branch3;
  std::shared_ptr<PoolProjection> branch4;
};

class GoogLeNet : public ClassifierModuleImpl {
 public:
  GoogLeNet(int64_t n, bool transform_input) : transform_input_(transform_input) {
    conv1 = register_module("conv1", BasicConv2d(3, 64, 7, 2, 3));
    conv2 = register_module("conv2", BasicConv2d(64, 64, 1));
    conv3 = register_module("conv3", BasicConv2d(64, 192, 3, 1, 1));
    struct Cfg {
      const char* name;
      int64_t in, c1, c3red, c3, c5red, c5, pool;
    };
    const Cfg cfgs[] = {
        {"inception3a", 192, 64, 96, 128, 16, 32, 32},     {"inception3b", 256, 128, 128, 192, 32, 96, 64},
        {"inception4a", 480, 192, 96, 208, 16, 48, 64},    {"inception4b", 512, 160, 112, 224, 24, 64, 64},
        {"inception4c", 512, 128, 128, 256, 24, 64, 64},   {"inception4d", 512, 112, 144, 288, 32, 64, 64},
        {"inception4e", 528, 256, 160, 320, 32, 128, 128}, {"inception5a", 832, 256, 160, 320, 32, 128, 128},
        {"inception5b", 832, 384, 192, 384, 48, 128, 128}};
    for (const auto& c : cfgs)
      blocks_.push_back(register_module(
          c.name, std::make_shared<GoogLeNetInception>(c.in, c.c1, c.c3red, c.c3, c.c5red, c.c5, c.pool)));
    fc = register_module("fc", Linear(1024, n));
  }
  at::Tensor embed(const at::Tensor& input) override {
    at::Tensor x = transform_input_ ? imagenet_to_half_range(input) : input;
    x = torch::max_pool2d(conv1(x), 3, 2, 0, 1, true);
    x = torch::max_pool2d(conv3(conv2(x)), 3, 2, 0, 1, true);
    x = blocks_[1]->forward(blocks_[0]->forward(x));  // 3a, 3b
    x = torch::max_pool2d(x, 3, 2, 0, 1, true);
    for (size_t i = 2; i < 7; ++i) x = blocks_[i]->forward(x);  // 4a-4e
    x = torch::max_pool2d(x, 2, 2, 0, 1, true);
    x = blocks_[8]->forward(blocks_[7]->forward(x));  // 5a, 5b
    return torch::adaptive_avg_pool2d(x, {1, 1}).flatten(1);  // dropout: identity in eval
  }
  at::Tensor logits(const at::Tensor& f) override { return fc(f); }

  BasicConv2d conv1{nullptr}, conv2{nullptr}, conv3{nullptr};
  Linear fc{nullptr};

 private:
  bool transform_input_;
  std::vector<std::shared_ptr<GoogLeNetInception>> blocks_;
};

// ---- Inception v3 (blocks A-E as torchvision names them)

at::Tensor avg3(const at::Tensor& x) { return torch::avg_pool2d(x, 3, 1, 1); }
at::Tensor max3s2(const at::Tensor& x) { return torch::max_pool2d(x, 3, 2); }

class InceptionA : public ConvBranches {
 public:
  InceptionA(int64_t in, int64_t pool_features) {
    b1x1_ = add("branch1x1", in, 64, 1);
    b5x5_1_ = add("branch5x5_1", in, 48, 1);
    b5x5_2_ = add("branch5x5_2", 48, 64, 5, 1, 2);
    dbl_1_ = add("branch3x3dbl_1", in, 64, 1);
    dbl_2_ = add("branch3x3dbl_2", 64, 96, 3, 1, 1);
    dbl_3_ = add("branch3x3dbl_3", 96, 96, 3, 1, 1);
    pool_ = add("branch_pool", in, pool_features, 1);
  }
  at::Tensor forward(const at::Tensor& x) {
    return torch::cat({b1x1_(x), b5x5_2_(b5x5_1_(x)), dbl_3_(dbl_2_(dbl_1_(x))), pool_(avg3(x))}, 1);
  }

 private:
  BasicConv2d b1x1_{nullptr}, b5x5_1_{nullptr}, b5x5_2_{nullptr}, dbl_1_{nullptr}, dbl_2_{nullptr},
      dbl_3_{nullptr}, pool_{nullptr};
};

class InceptionB : public ConvBranches {
 public:
  explicit InceptionB(int64_t in) {
    b3x3_ = add("branch3x3", in, 384, 3, 2);
    dbl_1_ = add("branch3x3dbl_1", in, 64, 1);
    dbl_2_ = add("branch3x3dbl_2", 64, 96, 3, 1, 1);
    dbl_3_ = add("branch3x3dbl_3", 96, 96, 3, 2);
  }
  at::Tensor forward(const at::Tensor& x) {
    return torch::cat({b3x3_(x), dbl_3_(dbl_2_(dbl_1_(x))), max3s2(x)}, 1);
  }

 private:
  BasicConv2d b3x3_{nullptr}, dbl_1_{nullptr}, dbl_2_{nullptr}, dbl_3_{nullptr};
};

// 1x7 / 7x1 factorised convolutions ("same" padding along the long side).
constexpr std::array<int64_t, 2> kRow{1, 7}, kRowPad{0, 3}, kCol{7, 1}, kColPad{3, 0};

class InceptionC : public ConvBranches {
 public:
  InceptionC(int64_t in, int64_t c7) {
    b1x1_ = add("branch1x1", in, 192, 1);
    b7_1_ = add("branch7x7_1", in, c7, 1);
    b7_2_ = add("branch7x7_2", c7, c7, kRow, 1, kRowPad);
    b7_3_ = add("branch7x7_3", c7, 192, kCol, 1, kColPad);
    dbl_1_ = add("branch7x7dbl_1", in, c7, 1);
    dbl_2_ = add("branch7x7dbl_2", c7, c7, kCol, 1, kColPad);
    dbl_3_ = add("branch7x7dbl_3", c7, c7, kRow, 1, kRowPad);
    dbl_4_ = add("branch7x7dbl_4", c7, c7, kCol, 1, kColPad);
    dbl_5_ = add("branch7x7dbl_5", c7, 192, kRow, 1, kRowPad);
    pool_ = add("branch_pool", in, 192, 1);
  }
  at::Tensor forward(const at::Tensor& x) {
    at::Tensor dbl = dbl_5_(dbl_4_(dbl_3_(dbl_2_(dbl_1_(x)))));
    return torch::cat({b1x1_(x), b7_3_(b7_2_(b7_1_(x))), dbl, pool_(avg3(x))}, 1);
  }

 private:
  BasicConv2d b1x1_{nullptr}, b7_1_{nullptr}, b7_2_{nullptr}, b7_3_{nullptr}, dbl_1_{nullptr}, dbl_2_{nullptr},
      dbl_3_{nullptr}, dbl_4_{nullptr}, dbl_5_{nullptr}, pool_{nullptr};
};

class InceptionD : public ConvBranches {
 public:
  explicit InceptionD(int64_t in) {
    b3_1_ = add("branch3x3_1", in, 192, 1);
    b3_2_ = add("branch3x3_2", 192, 320, 3, 2);
    b7_1_ = add("branch7x7x3_1", in, 192, 1);
    b7_2_ = add("branch7x7x3_2", 192, 192, kRow, 1, kRowPad);
    b7_3_ = add("branch7x7x3_3", 192, 192, kCol, 1, kColPad);
    b7_4_ = add("branch7x7x3_4", 192, 192, 3, 2);
  }
  at::Tensor forward(const at::Tensor& x) {
    return torch::cat({b3_2_(b3_1_(x)), b7_4_(b7_3_(b7_2_(b7_1_(x)))), max3s2(x)}, 1);
  }

 private:
  BasicConv2d b3_1_{nullptr}, b3_2_{nullptr}, b7_1_{nullptr}, b7_2_{nullptr}, b7_3_{nullptr}, b7_4_{nullptr};
};

class InceptionE : public ConvBranches {
 public:
  explicit InceptionE(int64_t in) {
    const std::array<int64_t, 2> row{1, 3}, row_pad{0, 1}, col{3, 1}, col_pad{1, 0};
    b1x1_ = add("branch1x1", in, 320, 1);
    b3_1_ = add("branch3x3_1", in, 384, 1);
    b3_2a_ = add("branch3x3_2a", 384, 384, row, 1, row_pad);
    b3_2b_ = add("branch3x3_2b", 384, 384, col, 1, col_pad);
    dbl_1_ = add("branch3x3dbl_1", in, 448, 1);
    dbl_2_ = add("branch3x3dbl_2", 448, 384, 3, 1, 1);
    dbl_3a_ = add("branch3x3dbl_3a", 384, 384, row, 1, row_pad);
    dbl_3b_ = add("branch3x3dbl_3b", 384, 384, col, 1, col_pad);
    pool_ = add("branch_pool", in, 192, 1);
  }
  at::Tensor forward(const at::Tensor& x) {
    at::Tensor b3 = b3_1_(x), dbl = dbl_2_(dbl_1_(x));
    return torch::cat({b1x1_(x), torch::cat({b3_2a_(b3), b3_2b_(b3)}, 1),
                       torch::cat({dbl_3a_(dbl), dbl_3b_(dbl)}, 1), pool_(avg3(x))},
                      1);
  }

 private:
  BasicConv2d b1x1_{nullptr}, b3_1_{nullptr}, b3_2a_{nullptr}, b3_2b_{nullptr}, dbl_1_{nullptr}, dbl_2_{nullptr},
      dbl_3a_{nullptr}, dbl_3b_{nullptr}, pool_{nullptr};
};

class Inception3 : public ClassifierModuleImpl {
 public:
  Inception3(int64_t n, bool transform_input) : transform_input_(transform_input) {
    stem_.push_back(register_module("Conv2d_1a_3x3", BasicConv2d(3, 32, 3, 2)));
    stem_.push_back(register_module("Conv2d_2a_3x3", BasicConv2d(32, 32, 3)));
    stem_.push_back(register_module("Conv2d_2b_3x3", BasicConv2d(32, 64, 3, 1, 1)));
    stem_.push_back(register_module("Conv2d_3b_1x1", BasicConv2d(64, 80, 1)));
    stem_.push_back(register_module("Conv2d_4a_3x3", BasicConv2d(80, 192, 3)));
    mixed(std::make_shared<InceptionA>(192, 32), "Mixed_5b");
    mixed(std::make_shared<InceptionA>(256, 64), "Mixed_5c");
    mixed(std::make_shared<InceptionA>(288, 64), "Mixed_5d");
    mixed(std::make_shared<InceptionB>(288), "Mixed_6a");
    mixed(std::make_shared<InceptionC>(768, 128), "Mixed_6b");
    mixed(std::make_shared<InceptionC>(768, 160), "Mixed_6c");
    mixed(std::make_shared<InceptionC>(768, 160), "Mixed_6d");
    mixed(std::make_shared<InceptionC>(768, 192), "Mixed_6e");
    mixed(std::make_shared<InceptionD>(768), "Mixed_7a");
    mixed(std::make_shared<InceptionE>(1280), "Mixed_7b");
    mixed(std::make_shared<InceptionE>(2048), "Mixed_7c");
    fc = register_module("fc", Linear(2048, n));
  }
  at::Tensor embed(const at::Tensor& input) override {
    at::Tensor x = transform_input_ ? imagenet_to_half_range(input) : input;
    x = stem_[2](stem_[1](stem_[0](x)));
    x = max3s2(x);
    x = max3s2(stem_[4](stem_[3](x)));
    for (auto& m : mixed_) x = m(x);
    return torch::adaptive_avg_pool2d(x, {1, 1}).flatten(1);  // dropout: identity in eval
  }
  at::Tensor logits(const at::Tensor& f) override { return fc(f); }

  Linear fc{nullptr};

 private:
  template <typename M>
  void mixed(std::shared_ptr<M> m, const std::string& name) {
    register_module(name, m);
    mixed_.push_back([m](const at::Tensor& x) { return m->forward(x); });
  }

  bool transform_input_;
  std::vector<BasicConv2d> stem_;
  std::vector<std::function<at::Tensor(const at::Tensor&)>> mixed_;
};

}  // namespace

// transform_input defaults to true: torchvision turns it on whenever its
// published (TensorFlow-ported) weights are loaded, so those weights and
// every fine-tune of them expect it. Only a model trained from scratch with
// transform_input=False differs, and its keys cannot tell.
ClassifierModulePtr make_googlenet(const std::string& name, const ArchParams& p) {
  if (name != "googlenet") throw ModelError("unknown googlenet variant '" + name + "'");
  return std::make_shared<GoogLeNet>(p.num_classes, true);
}

ClassifierModulePtr make_inception_v3(const std::string& name, const ArchParams& p) {
  if (name != "inception_v3") throw ModelError("unknown inception variant '" + name + "'");
  return std::make_shared<Inception3>(p.num_classes, true);
}

}  // namespace ptm::arch
