// Names and facts of the built-in architectures (no LibTorch types here).
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace ptm {

enum class Interpolation { Bilinear, Bicubic };

struct ArchInfo {
  std::string name;      // torchvision's builder name
  std::string family;    // resnet, vgg, ...
  std::string head;      // state-dict prefix of the classification head
  int crop_size = 224;   // torchvision's IMAGENET1K_V1 eval transform
  int resize_size = 256;
  Interpolation interpolation = Interpolation::Bilinear;
};

const std::vector<ArchInfo>& architectures();
const ArchInfo* find_architecture(std::string_view name);
std::string architecture_names();  // comma-separated, for messages

}  // namespace ptm
