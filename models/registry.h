// Names and facts of the built-in architectures (no LibTorch types here).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace ptm {

enum class Interpolation { Bilinear, Bicubic };

class ClassifierModuleImpl;  // architectures.h

// What a factory builds: the class count, and for architectures whose
// parameters depend on it (position tables) the input size.
struct ArchParams {
  int64_t num_classes = 1000;
  int64_t image_size = 0;  // 0: the architecture's default (ArchInfo::crop_size)
};
using ArchFactory = std::shared_ptr<ClassifierModuleImpl> (*)(const std::string& name, const ArchParams& params);

constexpr std::array<float, 3> kImageNetMean{{0.485f, 0.456f, 0.406f}};
constexpr std::array<float, 3> kImageNetStd{{0.229f, 0.224f, 0.225f}};

// Adding an architecture: its module file under arch/ (torchvision's
// attribute names, a factory), and its rows in registry.cpp; detection
// signatures, parity fixtures' names and docs follow from this table.
struct ArchInfo {
  std::string name;      // torchvision's builder name, or timm's model name
  std::string family;    // resnet, vgg, ...
  std::string source = "torchvision";  // whose modules, key names and transform: torchvision or timm
  std::string head;      // state-dict prefix of the classification head
  // A second head of the same shape (DeiT's distillation head, whose logits
  // are averaged with the head's): sized, replaced and trained with it.
  std::string second_head;
  ArchFactory make = nullptr;
  int crop_size = 224;   // torchvision's eval transform of the first weights
  int resize_size = 256;
  Interpolation interpolation = Interpolation::Bilinear;
  std::array<float, 3> mean = kImageNetMean, std = kImageNetStd;
  // State-dict prefixes of training-only parts the module does not build
  // (auxiliary classifiers): a checkpoint may carry them or not; their keys
  // are accepted and ignored, by detection and loading alike.
  std::vector<std::string> ignored;
  // Architectures whose input size is fixed by a learnt position table
  // (ViT): its state-dict key. Its token count is free in detection, and
  // gives the size a checkpoint was trained at.
  std::string position_table;
  int prefix_tokens = 1;  // the table's rows before the patches' (class, distillation tokens)
};

// `key` is in the classification head (or the second head): its first
// dimension is the class count.
bool in_head(const ArchInfo& info, const std::string& key);

const std::vector<ArchInfo>& architectures();
const ArchInfo* find_architecture(std::string_view name);
std::string architecture_names();  // comma-separated, for messages
// The resize side for an input of `size` that keeps a transform's
// resize/crop proportion (torchvision's 256/224 gives 73 for 64), never
// below the input itself.
int scaled_resize(int size, int resize, int crop);

}  // namespace ptm
