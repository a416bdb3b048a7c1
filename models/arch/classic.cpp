// torchvision.models.{vgg, alexnet, squeezenet}: plain feature stacks whose
// state-dict keys are Sequential indices (ReLU/pool/dropout slots hold no
// weights but still take an index).
#include "common.h"

#include "../error.h"

namespace ptm::arch {
namespace {

// A torch.nn.Sequential stand-in: a list of steps, weighted ones registered
// under their Sequential index.
class Stack : public torch::nn::Module {
 public:
  template <typename M>
  void add_module(std::shared_ptr<M> m) {
    register_module(std::to_string(steps_.size()), m);
    steps_.push_back([m](const at::Tensor& x) { return m->forward(x); });
  }
  template <typename H>
  void add(H holder) { add_module(holder.ptr()); }
  void add_relu() { steps_.push_back([](const at::Tensor& x) { return torch::relu(x); }); }
  void add_dropout() { steps_.push_back([](const at::Tensor& x) { return x; }); }  // eval only
  void add_maxpool(int64_t k, int64_t s, bool ceil) {
    steps_.push_back([=](const at::Tensor& x) { return torch::max_pool2d(x, k, s, 0, 1, ceil); });
  }

  // Runs steps [from, to).
  at::Tensor run(at::Tensor x, size_t from = 0, size_t to = SIZE_MAX) {
    to = std::min(to, steps_.size());
    for (size_t i = from; i < to; ++i) x = steps_[i](x);
    return x;
  }
  size_t size() const { return steps_.size(); }

 private:
  std::vector<std::function<at::Tensor(const at::Tensor&)>> steps_;
};

class FireImpl : public torch::nn::Module {
 public:
  FireImpl(int64_t in, int64_t squeeze_planes, int64_t e1, int64_t e3) {
    squeeze = register_module("squeeze", conv(in, squeeze_planes, 1, 1, 0, 1, true));
    expand1x1 = register_module("expand1x1", conv(squeeze_planes, e1, 1, 1, 0, 1, true));
    expand3x3 = register_module("expand3x3", conv(squeeze_planes, e3, 3, 1, 1, 1, true));
  }
  at::Tensor forward(const at::Tensor& x) {
    at::Tensor s = torch::relu(squeeze(x));
    return torch::cat({torch::relu(expand1x1(s)), torch::relu(expand3x3(s))}, 1);
  }
  Conv2d squeeze{nullptr}, expand1x1{nullptr}, expand3x3{nullptr};
};

// features -> avgpool(n x n) -> flatten -> classifier[:-1] | classifier[-1]
class StackClassifier : public ClassifierModuleImpl {
 public:
  StackClassifier(int64_t pool) : pool_(pool) {
    features = register_module("features", std::make_shared<Stack>());
    classifier = register_module("classifier", std::make_shared<Stack>());
  }
  at::Tensor embed(const at::Tensor& x) override {
    at::Tensor f = torch::adaptive_avg_pool2d(features->run(x), {pool_, pool_}).flatten(1);
    return classifier->run(f, 0, classifier->size() - 1);
  }
  at::Tensor logits(const at::Tensor& f) override { return classifier->run(f, classifier->size() - 1); }

  std::shared_ptr<Stack> features, classifier;

 private:
  int64_t pool_;
};

// SqueezeNet's head is a 1x1 convolution: embed() ends at the features map.
class SqueezeNet : public ClassifierModuleImpl {
 public:
  SqueezeNet() {
    features = register_module("features", std::make_shared<Stack>());
    classifier = register_module("classifier", std::make_shared<Stack>());
  }
  at::Tensor embed(const at::Tensor& x) override { return features->run(x); }
  at::Tensor logits(const at::Tensor& f) override {
    return torch::adaptive_avg_pool2d(classifier->run(f), {1, 1}).flatten(1);
  }
  std::shared_ptr<Stack> features, classifier;
};

void add_vgg_head(Stack& c, int64_t in, int64_t hidden, int64_t n) {
  c.add(Linear(in, hidden));
  c.add_relu();
  c.add_dropout();
  c.add(Linear(hidden, hidden));
  c.add_relu();
  c.add_dropout();
  c.add(Linear(hidden, n));
}

}  // namespace

ClassifierModulePtr make_vgg(const std::string& name, const ArchParams& p) {
  const int64_t n = p.num_classes;
  static const std::map<std::string, std::vector<int>> cfgs = {
      {"vgg11", {64, 0, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0}},
      {"vgg13", {64, 64, 0, 128, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0}},
      {"vgg16", {64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0}},
      {"vgg19", {64, 64, 0, 128, 128, 0, 256, 256, 256, 256, 0, 512, 512, 512, 512, 0, 512, 512, 512, 512, 0}},
  };
  const bool bn = name.size() > 3 && name.compare(name.size() - 3, 3, "_bn") == 0;
  auto it = cfgs.find(bn ? name.substr(0, name.size() - 3) : name);
  if (it == cfgs.end()) throw ModelError("unknown vgg variant '" + name + "'");
  auto m = std::make_shared<StackClassifier>(7);
  int64_t in = 3;
  for (int v : it->second) {
    if (v == 0) {
      m->features->add_maxpool(2, 2, false);
      continue;
    }
    m->features->add(conv(in, v, 3, 1, 1, 1, true));
    if (bn) m->features->add(batchnorm(v));
    m->features->add_relu();
    in = v;
  }
  add_vgg_head(*m->classifier, 512 * 7 * 7, 4096, n);
  return m;
}

ClassifierModulePtr make_alexnet(const std::string&, const ArchParams& p) {
  const int64_t n = p.num_classes;
  auto m = std::make_shared<StackClassifier>(6);
  Stack& f = *m->features;
  f.add(conv(3, 64, 11, 4, 2, 1, true));
  f.add_relu();
  f.add_maxpool(3, 2, false);
  f.add(conv(64, 192, 5, 1, 2, 1, true));
  f.add_relu();
  f.add_maxpool(3, 2, false);
  f.add(conv(192, 384, 3, 1, 1, 1, true));
  f.add_relu();
  f.add(conv(384, 256, 3, 1, 1, 1, true));
  f.add_relu();
  f.add(conv(256, 256, 3, 1, 1, 1, true));
  f.add_relu();
  f.add_maxpool(3, 2, false);
  Stack& c = *m->classifier;
  c.add_dropout();
  c.add(Linear(256 * 6 * 6, 4096));
  c.add_relu();
  c.add_dropout();
  c.add(Linear(4096, 4096));
  c.add_relu();
  c.add(Linear(4096, n));
  return m;
}

ClassifierModulePtr make_squeezenet(const std::string& name, const ArchParams& p) {
  const int64_t n = p.num_classes;
  auto m = std::make_shared<SqueezeNet>();
  Stack& f = *m->features;
  auto fire = [&](int64_t in, int64_t s, int64_t e1, int64_t e3) {
    f.add_module(std::make_shared<FireImpl>(in, s, e1, e3));
  };
  if (name == "squeezenet1_0") {
    f.add(conv(3, 96, 7, 2, 0, 1, true));
    f.add_relu();
    f.add_maxpool(3, 2, true);
    fire(96, 16, 64, 64);
    fire(128, 16, 64, 64);
    fire(128, 32, 128, 128);
    f.add_maxpool(3, 2, true);
    fire(256, 32, 128, 128);
    fire(256, 48, 192, 192);
    fire(384, 48, 192, 192);
    fire(384, 64, 256, 256);
    f.add_maxpool(3, 2, true);
    fire(512, 64, 256, 256);
  } else if (name == "squeezenet1_1") {
    f.add(conv(3, 64, 3, 2, 0, 1, true));
    f.add_relu();
    f.add_maxpool(3, 2, true);
    fire(64, 16, 64, 64);
    fire(128, 16, 64, 64);
    f.add_maxpool(3, 2, true);
    fire(128, 32, 128, 128);
    fire(256, 32, 128, 128);
    f.add_maxpool(3, 2, true);
    fire(256, 48, 192, 192);
    fire(384, 48, 192, 192);
    fire(384, 64, 256, 256);
    fire(512, 64, 256, 256);
  } else {
    throw ModelError("unknown squeezenet variant '" + name + "'");
  }
  Stack& c = *m->classifier;
  c.add_dropout();
  c.add(conv(512, n, 1, 1, 0, 1, true));
  c.add_relu();
  return m;
}

}  // namespace ptm::arch
