// ptm-inspect FILE|FOLDER [--arch NAME] [--num-classes N] [--key KEY]
// Prints what a model file holds and which architecture it fits.
// With --export-weights OUT it writes the weights with torchvision's keys
// (as torch.save would) and prints, as JSON, what a .pt2 export needs:
// architecture, classes, eval transform and labels (tools/ptm-export).
#include <cstdio>
#include <cstring>
#include <iostream>
#include <map>
#include <sstream>
#include <string>

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>
#include <torch/version.h>

#include "models/checkpoint.h"
#include "models/loader.h"
#include "models/architectures.h"
#include "models/registry.h"
#include "models/labels.h"
#include "models/model_folder.h"
#include "models/writer.h"

namespace {

int usage() {
  std::cerr << "usage: ptm-inspect FILE|FOLDER [--arch NAME] [--num-classes N] [--key ENTRY] [--keys]\n"
               "       ptm-inspect FILE [--arch NAME] [--labels FILE] --export-weights OUT.pth\n"
               "  FILE           .pth/.pt (zip or legacy), safetensors, TorchScript or .pt2 package\n"
               "  --arch NAME    load into this architecture and print the key report\n"
               "  --num-classes  with --arch: classes wanted (a different count gets a new head)\n"
               "  --key ENTRY    take the weights from this checkpoint entry\n"
               "  --keys         list every tensor with its dtype and shape\n"
               "  --list-architectures  print the built-in architecture names\n"
               "  --architectures-markdown  print docs/architectures.md (every architecture's defaults)\n"
               "  --export-weights OUT  write the weights with torchvision's keys to OUT and print\n"
               "                 architecture, classes, eval transform and labels as JSON\n"
               "  --labels FILE  with --export-weights: one label per line\n";
  return 2;
}

// A .pt2 package: read (never run) its file list and metadata.
int print_package(const std::string& file) {
  const ptm::PackageInfo p = ptm::read_package_info(file);
  std::cout << "file:        " << file << "\n"
            << "format:      aotinductor-package (compiled program: runs as exported; trusted files only)\n"
            << "models:     ";
  for (const auto& m : p.models) std::cout << " " << m;
  std::cout << "\ncompiled:    " << p.compiled_bytes << " bytes of shared objects in " << p.file_bytes << "\n";
  for (const auto& [k, v] : p.metadata) {
    if (k == "ptm.labels") {
      nlohmann::json j = nlohmann::json::parse(v, nullptr, false);
      std::cout << "metadata:    " << k << " = " << (j.is_array() ? std::to_string(j.size()) + " labels" : "(not a list)");
      if (j.is_array() && !j.empty()) std::cout << ", first " << j[0].dump();
      std::cout << "\n";
    } else {
      std::cout << "metadata:    " << k << " = " << v << "\n";
    }
  }
#if PTM_HAVE_AOTI
  std::cout << "this build:  runs it (LibTorch " TORCH_VERSION " has the package loader)\n";
#else
  std::cout << "this build:  cannot run it: LibTorch " TORCH_VERSION " has no package loader (2.6 and later have)\n";
#endif
  return 0;
}

// The weights of FILE as torchvision names them, for tools/ptm-export.
int export_weights(const std::string& file, std::string arch, int64_t classes, const std::string& key,
                   const std::string& labels_file, const std::string& out) {
  ptm::ReadOptions ro;
  ro.wrapper_key = key;
  ptm::Checkpoint ck = ptm::read_checkpoint(file, ro);
  if (ck.format == ptm::FileFormat::TorchScript)
    throw ptm::ModelError("'" + file + "' is TorchScript: export the Python model it came from instead");
  ptm::select_weights_prefix(ck.state, ck.notes, arch);
  int64_t found = 0;
  if (arch.empty()) {
    ptm::Candidate c = ptm::detect_architecture(ck.state);
    arch = c.name;
    found = c.num_classes;
  }
  const ptm::ArchInfo* info = ptm::find_architecture(arch);
  if (!info) throw ptm::ModelError("unknown architecture '" + arch + "'; known: " + ptm::architecture_names());
  if (found == 0) {
    const at::Tensor* w = ck.state.find(info->head + ".weight");
    found = w && w->dim() > 0 ? w->size(0) : 0;
  }
  const int64_t n = classes > 0 ? classes : found;
  if (n <= 0) throw ptm::ModelError("'" + file + "': cannot tell the number of classes; give --num-classes");
  auto model = ptm::create_architecture(arch, n, ptm::input_size_of(arch, ck.state));
  ptm::LoadOptions lo;
  lo.strict = true;
  lo.num_classes = classes;
  ptm::LoadReport r = ptm::load_into(*model, arch, ck.state, lo);
  ptm::StateDict sd;
  for (const auto& p : model->named_parameters(true)) sd.entries.push_back({p.key(), p.value().detach()});
  for (const auto& b : model->named_buffers(true)) sd.entries.push_back({b.key(), b.value().detach()});
  ptm::save_state_dict(out, sd);
  // Labels as ptminfer would take them for FILE.
  std::string from;
  const std::vector<std::string> labels = ptm::resolve_labels(file, labels_file, n, {}, &from);
  nlohmann::json j;
  j["architecture"] = arch;
  j["num_classes"] = n;
  // Weights made for another input size (ViT) keep torchvision's crop/resize ratio.
  const int64_t size = model->fixed_input_size() > 0 ? model->fixed_input_size() : info->crop_size;
  j["input_size"] = size;
  j["resize_size"] = ptm::scaled_resize(int(size), info->resize_size, info->crop_size);
  j["interpolation"] = info->interpolation == ptm::Interpolation::Bicubic ? "bicubic" : "bilinear";
  j["mean"] = info->mean;
  j["std"] = info->std;
  j["labels"] = labels;
  j["labels_from"] = from.empty() ? (n == 1000 ? "imagenet" : "class N") : from;
  j["load_report"] = r.summary();
  j["notes"] = ck.notes;
  std::cout << j.dump() << "\n";
  return 0;
}

}  // namespace

// What a hub-style folder's configs say, and where each piece came from.
static void print_folder(const ptm::ModelFolder& f) {
  auto triple = [](const std::optional<std::array<float, 3>>& v) {
    std::ostringstream s;
    if (v) s << (*v)[0] << ", " << (*v)[1] << ", " << (*v)[2];
    else s << "(architecture's)";
    return s.str();
  };
  std::cout << "folder:      " << f.path << "\n"
            << "config arch: " << (f.architecture.empty() ? "(none)" : f.architecture) << "\n"
            << "config:      input " << (f.input_size ? std::to_string(f.input_size) : "(architecture's)") << ", resize "
            << (f.resize_size ? std::to_string(f.resize_size) : "(architecture's)")
            << (f.stretch ? " (no crop, aspect ratio not kept)" : "") << ", "
            << (f.interpolation ? (*f.interpolation == ptm::Interpolation::Bicubic ? "bicubic" : "bilinear")
                                : "(architecture's interpolation)")
            << ", mean " << triple(f.mean) << ", std " << triple(f.std) << "\n"
            << "labels:      " << (f.labels.empty() ? std::string("(none in the config)") :
                                   std::to_string(f.labels.size()) + ", e.g. '" + f.labels[0] + "'") << "\n";
  for (const auto& n : f.notes) std::cout << "from:        " << n << "\n";
}

// docs/architectures.md, generated from the registry (a test keeps the
// committed file equal to this output).
static void print_architectures_markdown() {
  auto triple = [](const std::array<float, 3>& v) {
    std::ostringstream s;
    s << v[0] << ", " << v[1] << ", " << v[2];
    return s.str();
  };
  std::cout << "# Built-in architectures\n\n"
               "Generated by `ptm-inspect --architectures-markdown` from the registry (models/registry.cpp); "
               "do not edit.\n\n"
               "A `.pth`, `.safetensors` or checkpoint of one of these loads with no `architecture=`: the "
               "architecture and class count are detected from the tensor names and shapes. The default "
               "preprocessing is torchvision's evaluation transform of the architecture's first published "
               "weights (timm's architectures: timm's transform of the model's default pretrained config, "
               "resize = floor(input / crop_pct)): resize the shorter side to *resize*, centre-crop *input*, then "
               "normalise. A model folder's config.json overrides it. A ViT takes only the "
               "input size its position table was made for: weights made for another size (e.g. vit_b_16 at 384) "
               "run at that size, with the resize/crop ratio kept. timm's DeiT has the layout of timm's ViT of "
               "its width: its weights are detected as the ViT; `architecture=deit_...` (or a folder's config "
               "naming it) picks DeiT's preprocessing.\n\n"
               "| architecture | source | family | input | resize | interpolation | mean | std | head |\n"
               "|---|---|---|---|---|---|---|---|---|\n";
  for (const auto& a : ptm::architectures())
    std::cout << "| " << a.name << " | " << a.source << " | " << a.family << " | " << a.crop_size << " | "
              << a.resize_size << " | "
              << (a.interpolation == ptm::Interpolation::Bicubic ? "bicubic" : "bilinear") << " | "
              << triple(a.mean) << " | " << triple(a.std) << " | `" << a.head << "` |\n";
  std::cout << "\n" << ptm::architectures().size() << " architectures.\n";
}

int main(int argc, char** argv) {
  std::string file, arch, key, export_to, labels_file;
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
      else if (a == "--export-weights") export_to = value();
      else if (a == "--labels") labels_file = value();
      else if (a == "--list-architectures") {
        for (const auto& info : ptm::architectures()) std::cout << info.name << "\n";
        return 0;
      } else if (a == "--architectures-markdown") {
        print_architectures_markdown();
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
    if (ptm::is_model_folder(file)) {
      const ptm::ModelFolder f = ptm::read_model_folder(file);
      print_folder(f);
      file = f.weights;
    }
    if (ptm::sniff_format(file) == ptm::FileFormat::AOTInductor) return print_package(file);
    if (!export_to.empty()) return export_weights(file, arch, classes, key, labels_file, export_to);
    ptm::ReadOptions ro;
    ro.wrapper_key = key;
    ptm::Checkpoint ck = ptm::read_checkpoint(file, ro);
    if (ck.format != ptm::FileFormat::TorchScript) ptm::select_weights_prefix(ck.state, ck.notes, arch);
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
      if (ranked[0].image_size > 0)
        std::cout << "input size:  " << ranked[0].image_size << "x" << ranked[0].image_size
                  << " (fixed by its position table)\n";
      for (size_t i = 1; i < ranked.size() && ranked[i].exact(); ++i)
        std::cout << "also fits:   " << ranked[i].name << " (the same layout, another default preprocessing: "
                  << "--arch " << ranked[i].name << ", or architecture= in ptminfer)\n";
    } else {
      std::cout << "architecture: unknown; closest:";
      for (size_t i = 0; i < std::min<size_t>(3, ranked.size()); ++i)
        std::cout << " " << ranked[i].name << " (" << int(ranked[i].score * 100) << "%)";
      std::cout << "\n";
      for (size_t i = 0; i < std::min<size_t>(3, ranked.size()); ++i)
        std::cout << "  " << ptm::differences(ranked[i], ck.state) << "\n";
    }
    if (!arch.empty()) {
      const ptm::ArchInfo* info = ptm::find_architecture(arch);
      if (!info) throw ptm::ModelError("unknown architecture '" + arch + "'; known: " + ptm::architecture_names());
      int64_t n = classes;
      if (n <= 0) {
        const at::Tensor* w = ck.state.find(info->head + ".weight");
        n = w && w->dim() > 0 ? w->size(0) : 1000;
      }
      auto model = ptm::create_architecture(arch, n, ptm::input_size_of(arch, ck.state));
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
