#include "common.h"

#include "../error.h"
#include "../registry.h"

namespace ptm {

ClassifierModulePtr create_architecture(const std::string& name, int64_t num_classes, int64_t image_size) {
  const ArchInfo* info = find_architecture(name);
  if (!info)
    throw ModelError("unknown architecture '" + name + "'; known: " + architecture_names());
  if (num_classes < 1 || num_classes > (int64_t(1) << 20))
    throw ModelError("num_classes must be between 1 and 1048576, got " + std::to_string(num_classes));
  ClassifierModulePtr m = info->make(name, ArchParams{num_classes, image_size});
  m->eval();
  return m;
}

}  // namespace ptm
