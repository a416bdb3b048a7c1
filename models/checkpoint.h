// Reading model files into a flat, ordered state dict.
//
// The format is chosen from the file's content, never its name:
//   - PyTorch zip (`torch.save`, torch >= 1.6), read with our restricted
//     unpickler (see pickle.h);
//   - PyTorch legacy (pre-1.6 / `_use_new_zipfile_serialization=False`);
//   - safetensors, with the format's published safety rules;
//   - TorchScript archives, through torch::jit::load. TorchScript runs code
//     from the file: load only TorchScript files you trust;
//   - AOTInductor packages (`.pt2`, torch._inductor.aoti_compile_and_package):
//     compiled programs, not weights. Only their file list and metadata are
//     read here (read_package_info); running one (Classifier) loads its
//     machine code: trusted files only.
// Training-checkpoint wrappers ({'state_dict': ...}, {'model': ...}, EMA
// weights, ...) are unwrapped and DataParallel / torch.compile prefixes
// (`module.`, `_orig_mod.`) stripped; what was done is recorded in `notes`.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "error.h"

namespace ptm {

enum class FileFormat { TorchZip, TorchLegacy, SafeTensors, TorchScript, AOTInductor };
const char* format_name(FileFormat f);

struct NamedTensor {
  std::string name;
  at::Tensor tensor;
};

struct StateDict {
  std::vector<NamedTensor> entries;

  const at::Tensor* find(const std::string& name) const;
  size_t size() const { return entries.size(); }
  int64_t numel() const;
  int64_t nbytes() const;
};

struct ReadOptions {
  // Verify zip CRCs of every record (detects bit rot inside tensor data).
  bool verify_checksums = true;
  // Pick this wrapper key instead of the default order
  // (state_dict, model_state_dict, model, net, ...; EMA weights first where
  // a checkpoint has both).
  std::string wrapper_key;
};

// The record of a torch.save zip archive that holds ptm's labels
// ("<archive>/ptm/labels.txt"): one label per line.
inline constexpr const char* kLabelsRecord = "ptm/labels.txt";

struct Checkpoint {
  std::string path;
  FileFormat format = FileFormat::TorchZip;
  StateDict state;
  std::string wrapper_key;          // where the state dict was found ("" = top level)
  std::string module_class;         // a whole pickled model's class ("torchvision.models.resnet.ResNet")
  std::vector<std::string> notes;   // unwrapping / prefix stripping done
  // Class labels saved inside the file with the weights (ptmtrainsink's
  // record "<archive>/ptm/labels.txt", which torch.load ignores); empty when none.
  std::vector<std::string> labels;
  uint64_t file_bytes = 0;
};

// Throws ModelError naming the file and what is wrong with it.
FileFormat sniff_format(const std::string& path);
Checkpoint read_checkpoint(const std::string& path, const ReadOptions& options = {});

// What an AOTInductor package (.pt2) holds, read without running anything:
// its model names and the metadata exported with each model (string keys
// and values, e.g. "AOTI_DEVICE_KEY": "cpu", and ptm's own "ptm.*" keys
// written by tools/ptm-export). Throws ModelError for anything else.
struct PackageInfo {
  std::vector<std::string> models;  // in file order; "model" by default
  std::vector<std::pair<std::string, std::string>> metadata;  // of models[0], sorted by key
  uint64_t file_bytes = 0;
  uint64_t compiled_bytes = 0;  // its shared objects (machine code, often the weights too)
  const std::string* find(const std::string& key) const;
};
PackageInfo read_package_info(const std::string& path);

// Parameters and buffers of a TorchScript archive (torchscript.cpp).
StateDict read_torchscript_state(const std::string& path);

}  // namespace ptm
