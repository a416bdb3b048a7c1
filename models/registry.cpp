#include "registry.h"

#include <algorithm>
#include <cmath>
#include <utility>

namespace ptm {

// The factories (arch/*.cpp); declared here so that this file needs no
// LibTorch header.
namespace arch {
using Ptr = std::shared_ptr<ClassifierModuleImpl>;
Ptr make_resnet(const std::string&, const ArchParams&);
Ptr make_vgg(const std::string&, const ArchParams&);
Ptr make_alexnet(const std::string&, const ArchParams&);
Ptr make_squeezenet(const std::string&, const ArchParams&);
Ptr make_densenet(const std::string&, const ArchParams&);
Ptr make_mobilenet_v2(const std::string&, const ArchParams&);
Ptr make_mobilenet_v3(const std::string&, const ArchParams&);
Ptr make_efficientnet(const std::string&, const ArchParams&);
Ptr make_shufflenet_v2(const std::string&, const ArchParams&);
Ptr make_mnasnet(const std::string&, const ArchParams&);
Ptr make_googlenet(const std::string&, const ArchParams&);
Ptr make_inception_v3(const std::string&, const ArchParams&);
Ptr make_convnext(const std::string&, const ArchParams&);
Ptr make_efficientnet_v2(const std::string&, const ArchParams&);
Ptr make_regnet(const std::string&, const ArchParams&);
Ptr make_vit(const std::string&, const ArchParams&);
Ptr make_timm_vit(const std::string&, const ArchParams&);
Ptr make_swin(const std::string&, const ArchParams&);
Ptr make_maxvit(const std::string&, const ArchParams&);
Ptr make_timm_efficientnet(const std::string&, const ArchParams&);
}  // namespace arch

const std::vector<ArchInfo>& architectures() {
  using I = Interpolation;
  static const std::vector<ArchInfo> list = [] {
    std::vector<ArchInfo> v;
    // crop, resize and interpolation: torchvision's eval transform of the
    // architecture's first weights.
    auto add = [&](std::string name, std::string family, std::string head, ArchFactory make, int crop = 224,
                   int resize = 256, I interp = I::Bilinear) {
      ArchInfo a;
      a.name = std::move(name);
      a.family = std::move(family);
      a.head = std::move(head);
      a.make = make;
      a.crop_size = crop;
      a.resize_size = resize;
      a.interpolation = interp;
      v.push_back(std::move(a));
    };
    for (const char* n : {"resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
                          "resnext50_32x4d", "wide_resnet50_2", "resnext101_32x8d"})
      add(n, "resnet", "fc", arch::make_resnet);
    add("resnext101_64x4d", "resnet", "fc", arch::make_resnet, 224, 232);
    add("wide_resnet101_2", "resnet", "fc", arch::make_resnet);
    for (const char* n : {"vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn"})
      add(n, "vgg", "classifier.6", arch::make_vgg);
    add("alexnet", "alexnet", "classifier.6", arch::make_alexnet);
    add("squeezenet1_0", "squeezenet", "classifier.1", arch::make_squeezenet);
    add("squeezenet1_1", "squeezenet", "classifier.1", arch::make_squeezenet);
    for (const char* n : {"densenet121", "densenet161", "densenet169", "densenet201"})
      add(n, "densenet", "classifier", arch::make_densenet);
    add("mobilenet_v2", "mobilenet_v2", "classifier.1", arch::make_mobilenet_v2);
    add("mobilenet_v3_small", "mobilenet_v3", "classifier.3", arch::make_mobilenet_v3);
    add("mobilenet_v3_large", "mobilenet_v3", "classifier.3", arch::make_mobilenet_v3);
    const int crops[] = {224, 240, 288, 300, 380, 456, 528, 600};
    const int resizes[] = {256, 256, 288, 320, 384, 456, 528, 600};
    for (int b = 0; b < 8; ++b)
      add("efficientnet_b" + std::to_string(b), "efficientnet", "classifier.1", arch::make_efficientnet, crops[b],
          resizes[b], I::Bicubic);
    add("shufflenet_v2_x0_5", "shufflenet_v2", "fc", arch::make_shufflenet_v2);
    add("shufflenet_v2_x1_0", "shufflenet_v2", "fc", arch::make_shufflenet_v2);
    add("shufflenet_v2_x1_5", "shufflenet_v2", "fc", arch::make_shufflenet_v2, 224, 232);
    add("shufflenet_v2_x2_0", "shufflenet_v2", "fc", arch::make_shufflenet_v2, 224, 232);
    // Published weights come without the auxiliary heads, training
    // checkpoints (aux_logits=True) with them.
    add("googlenet", "googlenet", "fc", arch::make_googlenet);
    v.back().ignored = {"aux1", "aux2"};
    add("inception_v3", "inception", "fc", arch::make_inception_v3, 299, 342);
    v.back().ignored = {"AuxLogits"};
    add("mnasnet0_5", "mnasnet", "classifier.1", arch::make_mnasnet);
    add("mnasnet0_75", "mnasnet", "classifier.1", arch::make_mnasnet, 224, 232);
    add("mnasnet1_0", "mnasnet", "classifier.1", arch::make_mnasnet);
    add("mnasnet1_3", "mnasnet", "classifier.1", arch::make_mnasnet, 224, 232);
    add("convnext_tiny", "convnext", "classifier.2", arch::make_convnext, 224, 236);
    add("convnext_small", "convnext", "classifier.2", arch::make_convnext, 224, 230);
    add("convnext_base", "convnext", "classifier.2", arch::make_convnext, 224, 232);
    add("convnext_large", "convnext", "classifier.2", arch::make_convnext, 224, 232);
    add("efficientnet_v2_s", "efficientnet_v2", "classifier.1", arch::make_efficientnet_v2, 384, 384);
    add("efficientnet_v2_m", "efficientnet_v2", "classifier.1", arch::make_efficientnet_v2, 480, 480);
    add("efficientnet_v2_l", "efficientnet_v2", "classifier.1", arch::make_efficientnet_v2, 480, 480, I::Bicubic);
    v.back().mean = v.back().std = {0.5f, 0.5f, 0.5f};
    for (const char* n : {"regnet_x_400mf", "regnet_x_800mf", "regnet_x_1_6gf", "regnet_x_3_2gf", "regnet_x_8gf",
                          "regnet_x_16gf", "regnet_x_32gf", "regnet_y_400mf", "regnet_y_800mf", "regnet_y_1_6gf",
                          "regnet_y_3_2gf", "regnet_y_8gf", "regnet_y_16gf", "regnet_y_32gf"})
      add(n, "regnet", "fc", arch::make_regnet);
    // Its only weights are SWAG's end-to-end fine-tune at 384.
    add("regnet_y_128gf", "regnet", "fc", arch::make_regnet, 384, 384, I::Bicubic);
    auto vit = [&](std::string name, int crop = 224, int resize = 256, I interp = I::Bilinear) {
      add(std::move(name), "vit", "heads.head", arch::make_vit, crop, resize, interp);
      v.back().position_table = "encoder.pos_embedding";
    };
    vit("vit_b_16");
    vit("vit_b_32");
    vit("vit_l_16", 224, 242);
    vit("vit_l_32");
    vit("vit_h_14", 518, 518, I::Bicubic);  // its only weights (SWAG) are for 518
    add("swin_t", "swin", "head", arch::make_swin, 224, 232, I::Bicubic);
    add("swin_s", "swin", "head", arch::make_swin, 224, 246, I::Bicubic);
    add("swin_b", "swin", "head", arch::make_swin, 224, 238, I::Bicubic);
    add("swin_v2_t", "swin_v2", "head", arch::make_swin, 256, 260, I::Bicubic);
    add("swin_v2_s", "swin_v2", "head", arch::make_swin, 256, 260, I::Bicubic);
    add("swin_v2_b", "swin_v2", "head", arch::make_swin, 256, 272, I::Bicubic);
    add("maxvit_t", "maxvit", "classifier.5", arch::make_maxvit, 224, 224, I::Bicubic);

    // timm's models under timm's names and key names; crop, resize (timm:
    // floor(crop / crop_pct)), interpolation, mean and std from the model's
    // default pretrained config. DeiT has the layout of the ViT of its width:
    // detection answers the ViT (listed first); architecture= picks DeiT's
    // preprocessing.
    auto timm_vit = [&](std::string name, bool imagenet_norm) {
      add(std::move(name), "vit", "head", arch::make_timm_vit, 224, 248, I::Bicubic);
      v.back().source = "timm";
      v.back().position_table = "pos_embed";
      if (!imagenet_norm) v.back().mean = v.back().std = {0.5f, 0.5f, 0.5f};
    };
    for (const char* n : {"vit_tiny_patch16_224", "vit_small_patch16_224", "vit_small_patch32_224",
                          "vit_base_patch16_224", "vit_base_patch32_224", "vit_large_patch16_224"})
      timm_vit(n, false);
    for (const char* n : {"deit_tiny_patch16_224", "deit_small_patch16_224", "deit_base_patch16_224"})
      timm_vit(n, true);
    for (const char* n : {"deit_tiny_distilled_patch16_224", "deit_small_distilled_patch16_224",
                          "deit_base_distilled_patch16_224"}) {
      timm_vit(n, true);
      v.back().second_head = "head_dist";
      v.back().prefix_tokens = 2;
    }
    // Where timm's name is torchvision's too, ptm's is timm/<name> (as on
    // the Hugging Face hub).
    auto timm = [&](std::string name, std::string family, std::string head, ArchFactory make, int crop, int resize) {
      add(std::move(name), std::move(family), std::move(head), make, crop, resize, I::Bicubic);
      v.back().source = "timm";
    };
    for (const char* n : {"resnet18d", "resnet26d", "resnet34d", "resnet50d"})
      timm(n, "resnet", "fc", arch::make_resnet, 224, 256);  // crop_pct 0.875
    timm("resnet101d", "resnet", "fc", arch::make_resnet, 256, 269);  // 0.95 at 256
    timm("resnet152d", "resnet", "fc", arch::make_resnet, 256, 269);
    timm("timm/convnext_tiny", "convnext", "head.fc", arch::make_convnext, 224, 235);  // crop_pct 0.95
    timm("timm/convnext_small", "convnext", "head.fc", arch::make_convnext, 224, 235);
    timm("timm/convnext_base", "convnext", "head.fc", arch::make_convnext, 224, 256);  // 0.875
    timm("timm/convnext_large", "convnext", "head.fc", arch::make_convnext, 224, 256);
    // timm's EfficientNet / MobileNet builder (timm.models.efficientnet, mobilenetv3).
    timm("timm/efficientnet_b0", "efficientnet", "classifier", arch::make_timm_efficientnet, 224, 256);
    timm("timm/efficientnet_b1", "efficientnet", "classifier", arch::make_timm_efficientnet, 240, 266);
    v.back().mean = v.back().std = {0.5f, 0.5f, 0.5f};  // its default weights (ra4_e3600_r240_in1k)
    timm("timm/efficientnet_b2", "efficientnet", "classifier", arch::make_timm_efficientnet, 256, 292);
    timm("timm/efficientnet_b3", "efficientnet", "classifier", arch::make_timm_efficientnet, 288, 329);
    timm("timm/efficientnet_b4", "efficientnet", "classifier", arch::make_timm_efficientnet, 320, 365);
    for (const char* n : {"mobilenetv3_large_100", "mobilenetv3_small_050", "mobilenetv3_small_075",
                          "mobilenetv3_small_100"})
      timm(n, "mobilenet_v3", "classifier", arch::make_timm_efficientnet, 224, 256);
    timm("mobilenetv4_conv_small", "mobilenet_v4", "classifier", arch::make_timm_efficientnet, 224, 256);
    timm("mobilenetv4_conv_medium", "mobilenet_v4", "classifier", arch::make_timm_efficientnet, 256, 269);
    timm("mobilenetv4_conv_large", "mobilenet_v4", "classifier", arch::make_timm_efficientnet, 384, 404);
    // timm's RegNets, resized for the crop fraction of each one's default
    // weights (pycls' 0.875: 256, torchvision's v2 recipe 0.965: 232, timm's 0.95: 235).
    const std::pair<const char*, int> regnets[] = {
        {"regnetx_002", 256}, {"regnetx_004", 256}, {"regnetx_006", 256}, {"regnetx_008", 232},
        {"regnetx_016", 232}, {"regnetx_032", 232}, {"regnetx_040", 256}, {"regnetx_064", 256},
        {"regnetx_080", 232}, {"regnetx_120", 256}, {"regnetx_160", 232}, {"regnetx_320", 232},
        {"regnety_002", 256}, {"regnety_004", 232}, {"regnety_006", 256}, {"regnety_008", 256},
        {"regnety_016", 232}, {"regnety_032", 235}, {"regnety_040", 235}, {"regnety_064", 235},
        {"regnety_080", 235}, {"regnety_120", 235}, {"regnety_160", 235}, {"regnety_320", 232}};
    for (const auto& [n, resize] : regnets) timm(n, "regnet", "head.fc", arch::make_regnet, 224, resize);
    return v;
  }();
  return list;
}

const ArchInfo* find_architecture(std::string_view name) {
  for (const auto& a : architectures())
    if (a.name == name) return &a;
  return nullptr;
}

bool in_head(const ArchInfo& info, const std::string& key) {
  auto under = [&](const std::string& prefix) {
    return !prefix.empty() && key.size() > prefix.size() && key.compare(0, prefix.size(), prefix) == 0 &&
           key[prefix.size()] == '.';
  };
  return under(info.head) || under(info.second_head);
}

int scaled_resize(int size, int resize, int crop) {
  return std::max(size, int(std::lround(double(size) * resize / crop)));
}

std::string architecture_names() {
  std::string s;
  for (const auto& a : architectures()) s += (s.empty() ? "" : ", ") + a.name;
  return s;
}

}  // namespace ptm
