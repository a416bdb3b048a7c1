// ptm-inspect FILE [--arch NAME] [--num-classes N] [--key KEY]
// Prints what a model file holds and which architecture it fits.
#include <cstdio>
#include <cstring>
#include <iostream>
#include <map>
#include <string>

#include <ATen/core/Tensor.h>

#include "models/checkpoint.h"
#include "models/loader.h"
#include "models/architectures.h"
#include "models/registry.h"

namespace {

int usage() {
  std::cerr << "usage: ptm-inspect FILE [--arch NAME] [--num-classes N] [--key ENTRY] [--keys]\n"
               "  FILE           .pth/.pt (zip or legacy), safetensors or TorchScript\n"
               "  --arch NAME    load into this architecture and print the key report\n"
               "  --num-classes  with --arch: classes wanted (a different count gets a new head)\n"
               "  --key ENTRY    take the weights from this checkpoint entry\n"
               "  --keys         list every tensor with its dtype and shape\n"
               "  --list-architectures  print the built-in architecture names\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string file, arch, key;
  int64_t classes = 0;
  bool keys = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument(a + " needs a value");
      return argv[++i];
    };
    try {
      if (a == "--arch") arch = value();
      else if (a == "--num-classes") classes = std::stoll(value());
      else if (a == "--key") key = value();
      else if (a == "--keys") keys = true;
      else if (a == "--list-architectures") {
        for (const auto& info : ptm::architectures()) std::cout << info.name << "\n";
        return 0;
      } else if (a == "-h" || a == "--help") return usage();
      else if (!a.empty() && a[0] == '-') return usage();
      else if (file.empty()) file = a;
      else return usage();
    } catch (const std::exception& e) {
      std::cerr << "ptm-inspect: " << e.what() << "\n";
      return 2;
    }
  }
  if (file.empty()) return usage();
  try {
    ptm::ReadOptions ro;
    ro.wrapper_key = key;
    ptm::Checkpoint ck = ptm::read_checkpoint(file, ro);
    std::map<std::string, size_t> dtypes;
    int64_t params = 0, buffers = 0;
    auto ends_with = [](const std::string& s, const std::string& t) {
      return s.size() >= t.size() && s.compare(s.size() - t.size(), t.size(), t) == 0;
    };
    for (const auto& e : ck.state.entries) {
      ++dtypes[std::string(c10::toString(e.tensor.scalar_type()))];
      const bool buffer = ends_with(e.name, "running_mean") || ends_with(e.name, "running_var") ||
                          ends_with(e.name, "num_batches_tracked");
      (buffer ? buffers : params) += e.tensor.numel();
    }
    std::cout << "file:        " << file << "\n"
              << "format:      " << ptm::format_name(ck.format) << "\n";
    if (!ck.wrapper_key.empty()) std::cout << "weights in:  '" << ck.wrapper_key << "'\n";
    std::cout << "tensors:     " << ck.state.size() << "\n"
              << "parameters:  " << params << " (+ " << buffers << " in normalisation statistics)\n"
              << "dtypes:     ";
    for (const auto& [d, n] : dtypes) std::cout << " " << d << " (" << n << ")";
    std::cout << "\n";
    for (const auto& n : ck.notes) std::cout << "note:        " << n << "\n";
    if (keys)
      for (const auto& e : ck.state.entries)
        std::cout << "  " << e.name << " " << c10::toString(e.tensor.scalar_type()) << " "
                  << ptm::shape_str(e.tensor.sizes().vec()) << "\n";
    if (ck.format == ptm::FileFormat::TorchScript) {
      std::cout << "architecture: TorchScript program (runs as saved; trusted files only)\n";
      return 0;
    }
    auto ranked = ptm::rank_architectures(ck.state);
    if (!ranked.empty() && ranked[0].exact()) {
      std::cout << "architecture: " << ranked[0].name << "\n"
                << "classes:     " << ranked[0].num_classes << "\n";
    } else {
      std::cout << "architecture: unknown; closest:";
      for (size_t i = 0; i < std::min<size_t>(3, ranked.size()); ++i)
        std::cout << " " << ranked[i].name << " (" << int(ranked[i].score * 100) << "%)";
      std::cout << "\n";
    }
    if (!arch.empty()) {
      const ptm::ArchInfo* info = ptm::find_architecture(arch);
      if (!info) throw ptm::ModelError("unknown architecture '" + arch + "'; known: " + ptm::architecture_names());
      int64_t n = classes;
      if (n <= 0) {
        const at::Tensor* w = ck.state.find(info->head + ".weight");
        n = w && w->dim() > 0 ? w->size(0) : 1000;
      }
      auto model = ptm::create_architecture(arch, n);
      ptm::LoadOptions lo;
      lo.strict = false;
      lo.num_classes = classes;
      ptm::LoadReport r = ptm::load_into(*model, arch, ck.state, lo);
      std::cout << "key report:  " << r.summary() << "\n" << r.details();
      return r.clean() || r.head_replaced ? 0 : 1;
    }
    return !ranked.empty() && ranked[0].exact() ? 0 : 1;
  } catch (const std::exception& e) {
    std::cerr << "ptm-inspect: " << e.what() << "\n";
    return 1;
  }
}
