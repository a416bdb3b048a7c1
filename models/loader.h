// Matching a state dict to an architecture: detection from keys and shapes,
// and loading with a report of missing, unexpected and mis-shaped keys.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "checkpoint.h"

namespace torch::nn {
class Module;
}

namespace ptm {

struct ShapeMismatch {
  std::string key;
  std::vector<int64_t> expected, found;
};

struct LoadReport {
  std::string architecture;
  int64_t num_classes = 0;
  size_t loaded = 0;
  std::vector<std::string> missing, unexpected;
  std::vector<ShapeMismatch> mismatched;
  std::vector<std::string> notes;
  bool head_replaced = false;

  bool clean() const { return missing.empty() && unexpected.empty() && mismatched.empty(); }
  std::string summary() const;  // one line
  std::string details() const;  // one line per problem
};

struct Candidate {
  std::string name;
  int64_t num_classes = 0;
  int64_t image_size = 0;  // read from a position table (ViT); 0: not fixed by the weights
  size_t matched = 0, missing = 0, unexpected = 0, mismatched = 0;
  double score = 0;  // 1.0 = exact
  bool exact() const { return missing == 0 && unexpected == 0 && mismatched == 0; }
  // Other architectures the weights fit exactly (the same layout, e.g. timm's
  // ViT and DeiT of one width): detection answers the first listed.
  std::vector<std::string> also;
};

// Ranks every built-in architecture against the state dict, best first.
std::vector<Candidate> rank_architectures(const StateDict& sd);
// The exact match, or ModelError naming the closest candidates: how many of
// their keys and shapes match, and the first keys that differ.
Candidate detect_architecture(const StateDict& sd);
// One candidate against the state dict: "resnet18: 102 of 122 keys and
// shapes match (...); first missing: layer4.0.conv1.weight; ...".
std::string differences(const Candidate& c, const StateDict& sd);
// Weights under a prefix that not every key shares (a LightningModule's
// `model.` beside its loss's `criterion.weight`; a teacher beside the
// student): when the keys as they are fit no built-in architecture (or not
// `architecture`, when given), the largest group of keys under a common
// prefix (one to three names) that fits is taken, the prefix stripped, and
// a note says what was taken and left out. Returns whether `sd` changed.
bool select_weights_prefix(StateDict& sd, std::vector<std::string>& notes, const std::string& architecture = "");
// The input size the weights of `architecture` were made for, where its
// position table fixes it (ViT: 384 for a (1, 577, 768) vit_b_16 table);
// 0 for other architectures, or when the table is absent or not square.
int64_t input_size_of(const std::string& architecture, const StateDict& sd);

struct LoadOptions {
  bool strict = true;
  // When set and different from the checkpoint's, the classification head
  // is left freshly initialised (torchvision's transfer-learning recipe).
  int64_t num_classes = 0;
  // Let parameters share the checkpoint's memory instead of copying it
  // when dtype and layout already fit (the read buffer then stays alive
  // for as long as the model: use it when the file is mostly weights).
  bool share_memory = false;
};

// Copies tensors into `module`'s parameters and buffers (converting dtype).
// Strict: throws ModelError with the report when anything does not match.
LoadReport load_into(torch::nn::Module& module, const std::string& architecture, const StateDict& sd,
                     const LoadOptions& options);

std::string shape_str(const std::vector<int64_t>& s);

}  // namespace ptm
