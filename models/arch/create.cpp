#include "common.h"

#include "../error.h"
#include "../registry.h"

namespace ptm {

ClassifierModulePtr create_architecture(const std::string& name, int64_t num_classes) {
  const ArchInfo* info = find_architecture(name);
  if (!info)
    throw ModelError("unknown architecture '" + name + "'; known: " + architecture_names());
  if (num_classes < 1 || num_classes > (int64_t(1) << 20))
    throw ModelError("num_classes must be between 1 and 1048576, got " + std::to_string(num_classes));
  const std::string& f = info->family;
  ClassifierModulePtr m;
  if (f == "resnet") m = arch::make_resnet(name, num_classes);
  else if (f == "vgg") m = arch::make_vgg(name, num_classes);
  else if (f == "alexnet") m = arch::make_alexnet(num_classes);
  else if (f == "squeezenet") m = arch::make_squeezenet(name, num_classes);
  else if (f == "densenet") m = arch::make_densenet(name, num_classes);
  else if (f == "mobilenet_v2") m = arch::make_mobilenet_v2(num_classes);
  else if (f == "mobilenet_v3") m = arch::make_mobilenet_v3(name, num_classes);
  else if (f == "efficientnet") m = arch::make_efficientnet(name, num_classes);
  else if (f == "shufflenet_v2") m = arch::make_shufflenet_v2(name, num_classes);
  else throw ModelError("internal: no factory for family '" + f + "'");
  m->eval();
  return m;
}

}  // namespace ptm
