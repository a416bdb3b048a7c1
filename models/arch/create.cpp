#include "common.h"

#include "../error.h"
#include "../registry.h"

namespace ptm {

namespace arch {
bool& random_init() {
  thread_local bool on = true;
  return on;
}
}  // namespace arch

ClassifierModulePtr create_architecture(const std::string& name, int64_t num_classes, int64_t image_size,
                                        ArchInit init) {
  const ArchInfo* info = find_architecture(name);
  if (!info)
    throw ModelError("unknown architecture '" + name + "'; known: " + architecture_names());
  if (num_classes < 1 || num_classes > (int64_t(1) << 20))
    throw ModelError("num_classes must be between 1 and 1048576, got " + std::to_string(num_classes));
  struct Restore {
    bool was = arch::random_init();
    ~Restore() { arch::random_init() = was; }
  } restore;
  arch::random_init() = init == ArchInit::Random;
  ClassifierModulePtr m = info->make(name, ArchParams{num_classes, image_size});
  m->eval();
  return m;
}

}  // namespace ptm
