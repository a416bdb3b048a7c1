// The built-in architectures: torch::nn modules whose attribute names are
// torchvision's, so torchvision state-dict keys load unchanged. This header
// pulls in torch::nn::Module; include it only where a module is needed.
#pragma once

#include <torch/nn/module.h>

#include <memory>
#include <string>

namespace ptm {

// Base of every built-in classifier. forward() = logits(embed(x)); `embed`
// stops right before the classification head (what fine-tuning trains).
class ClassifierModuleImpl : public torch::nn::Module {
 public:
  at::Tensor forward(const at::Tensor& x) { return logits(embed(x)); }
  virtual at::Tensor embed(const at::Tensor& x) = 0;
  virtual at::Tensor logits(const at::Tensor& features) = 0;
  // What a linear head sees (timm's pre-logits): embed()'s output, or for
  // modules with more than one head (DeiT distilled) the input a head trained
  // in their place reads.
  virtual at::Tensor pre_logits(const at::Tensor& features) { return features; }
  // The one input size (S x S) the module takes when its parameters fix it
  // (ViT's position table); 0: any size.
  virtual int64_t fixed_input_size() const { return 0; }
};
using ClassifierModulePtr = std::shared_ptr<ClassifierModuleImpl>;

// Random: torchvision's initialisation. Empty: the parameters are allocated,
// not set (faster, and no memory touched): only for a module whose every
// parameter is loaded next (a strict load_into without a new head).
enum class ArchInit { Random, Empty };

// Builds `name` (a torchvision name, e.g. "resnet50") with `num_classes`
// outputs; `image_size` matters only to architectures with position tables
// (0: the architecture's default). Throws ModelError for an unknown name,
// listing the known ones.
ClassifierModulePtr create_architecture(const std::string& name, int64_t num_classes, int64_t image_size = 0,
                                        ArchInit init = ArchInit::Random);

}  // namespace ptm
