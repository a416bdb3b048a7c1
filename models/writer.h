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
std::vector<char> serialize_state_dict(const StateDict& state);
void save_state_dict(const std::string& path, const StateDict& state);

// One label per line.
void save_labels(const std::string& path, const std::vector<std::string>& labels);

}  // namespace ptm
