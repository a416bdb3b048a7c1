// Writing files we own atomically: a crash leaves the old file or the new
// one, never a torn one (temp file in the same directory, fsync, rename,
// fsync of the directory).
#pragma once

#include <string>
#include <vector>

#include "checkpoint.h"

namespace ptm {

void write_file_atomic(const std::string& path, const void* data, size_t size);

// A state dict as Python's torch.save writes it (zip format), loadable with
// torch.load and, for our architectures, torchvision's load_state_dict.
// With `labels`, they go into the same file (record kLabelsRecord, which
// torch.load ignores and read_checkpoint reads): weights and labels are
// then replaced together, by one rename.
std::vector<char> serialize_state_dict(const StateDict& state, const std::vector<std::string>* labels = nullptr);
void save_state_dict(const std::string& path, const StateDict& state, const std::vector<std::string>* labels = nullptr);

// What ptmtrainsink writes: the weights with their labels inside (one
// atomic replacement: a crash never pairs new weights with old labels),
// then the same labels beside them (labels_path_beside) for people and
// other tools. Returns the labels file's path.
std::string save_model_and_labels(const std::string& path, const StateDict& state,
                                  const std::vector<std::string>& labels);

// One label per line; throws ModelError for a label with a line break.
std::string labels_text(const std::vector<std::string>& labels);
void save_labels(const std::string& path, const std::vector<std::string>& labels);

}  // namespace ptm
