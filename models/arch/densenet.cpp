// torchvision.models.densenet (memory_efficient off, drop_rate 0).
#include "common.h"

#include "../error.h"

namespace ptm::arch {
namespace {

class DenseLayer : public torch::nn::Module {
 public:
  DenseLayer(int64_t in, int64_t growth, int64_t bn_size) {
    norm1 = register_module("norm1", batchnorm(in));
    conv1 = register_module("conv1", conv(in, bn_size * growth, 1));
    norm2 = register_module("norm2", batchnorm(bn_size * growth));
    conv2 = register_module("conv2", conv(bn_size * growth, growth, 3, 1, 1));
  }
  at::Tensor forward(const at::Tensor& x) {
    at::Tensor y = conv1(torch::relu(norm1(x)));
    return conv2(torch::relu(norm2(y)));
  }
  torch::nn::BatchNorm2d norm1{nullptr}, norm2{nullptr};
  Conv2d conv1{nullptr}, conv2{nullptr};
};

class DenseBlock : public torch::nn::Module {
 public:
  DenseBlock(int64_t layers, int64_t in, int64_t growth, int64_t bn_size) {
    for (int64_t i = 0; i < layers; ++i)
      layers_.push_back(register_module("denselayer" + std::to_string(i + 1),
                                        std::make_shared<DenseLayer>(in + i * growth, growth, bn_size)));
  }
  at::Tensor forward(const at::Tensor& x) {
    std::vector<at::Tensor> feats{x};
    for (auto& l : layers_) feats.push_back(l->forward(torch::cat(feats, 1)));
    return torch::cat(feats, 1);
  }

 private:
  std::vector<std::shared_ptr<DenseLayer>> layers_;
};

class Transition : public torch::nn::Module {
 public:
  Transition(int64_t in, int64_t out) {
    norm = register_module("norm", batchnorm(in));
    conv = register_module("conv", arch::conv(in, out, 1));
  }
  at::Tensor forward(const at::Tensor& x) {
    return torch::avg_pool2d(conv(torch::relu(norm(x))), 2, 2);
  }
  torch::nn::BatchNorm2d norm{nullptr};
  Conv2d conv{nullptr};
};

class Features : public torch::nn::Module {
 public:
  Features(int64_t growth, std::vector<int64_t> blocks, int64_t init) {
    conv0 = register_module("conv0", conv(3, init, 7, 2, 3));
    norm0 = register_module("norm0", batchnorm(init));
    int64_t c = init;
    for (size_t i = 0; i < blocks.size(); ++i) {
      blocks_.push_back(register_module("denseblock" + std::to_string(i + 1),
                                        std::make_shared<DenseBlock>(blocks[i], c, growth, 4)));
      c += blocks[i] * growth;
      if (i + 1 != blocks.size()) {
        transitions_.push_back(register_module("transition" + std::to_string(i + 1),
                                               std::make_shared<Transition>(c, c / 2)));
        c /= 2;
      }
    }
    norm5 = register_module("norm5", batchnorm(c));
    channels = c;
  }
  at::Tensor forward(const at::Tensor& input) {
    at::Tensor x = torch::max_pool2d(torch::relu(norm0(conv0(input))), 3, 2, 1);
    for (size_t i = 0; i < blocks_.size(); ++i) {
      x = blocks_[i]->forward(x);
      if (i < transitions_.size()) x = transitions_[i]->forward(x);
    }
    return norm5(x);
  }
  Conv2d conv0{nullptr};
  torch::nn::BatchNorm2d norm0{nullptr}, norm5{nullptr};
  int64_t channels = 0;

 private:
  std::vector<std::shared_ptr<DenseBlock>> blocks_;
  std::vector<std::shared_ptr<Transition>> transitions_;
};

class DenseNet : public ClassifierModuleImpl {
 public:
  DenseNet(int64_t growth, std::vector<int64_t> blocks, int64_t init, int64_t n) {
    features = register_module("features", std::make_shared<Features>(growth, blocks, init));
    classifier = register_module("classifier", Linear(features->channels, n));
  }
  at::Tensor embed(const at::Tensor& x) override {
    return torch::adaptive_avg_pool2d(torch::relu(features->forward(x)), {1, 1}).flatten(1);
  }
  at::Tensor logits(const at::Tensor& f) override { return classifier(f); }
  std::shared_ptr<Features> features;
  Linear classifier{nullptr};
};

}  // namespace

ClassifierModulePtr make_densenet(const std::string& name, const ArchParams& p) {
  const int64_t n = p.num_classes;
  if (name == "densenet121") return std::make_shared<DenseNet>(32, std::vector<int64_t>{6, 12, 24, 16}, 64, n);
  if (name == "densenet161") return std::make_shared<DenseNet>(48, std::vector<int64_t>{6, 12, 36, 24}, 96, n);
  if (name == "densenet169") return std::make_shared<DenseNet>(32, std::vector<int64_t>{6, 12, 32, 32}, 64, n);
  if (name == "densenet201") return std::make_shared<DenseNet>(32, std::vector<int64_t>{6, 12, 48, 32}, 64, n);
  throw ModelError("unknown densenet variant '" + name + "'");
}

}  // namespace ptm::arch
