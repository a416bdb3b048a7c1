// A model folder as the Hugging Face hub lays one out (timm, transformers):
// the weights beside config.json (and preprocessor_config.json). The
// configs give labels and the evaluation transform; nothing in them runs.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "registry.h"

namespace ptm {

struct ModelFolder {
  std::string path;                     // the folder
  std::string weights;                  // the weights file in it
  std::string architecture;             // as the config names it ("" when it does not)
  int64_t num_classes = 0;              // as the config says (0: not said)
  std::vector<std::string> labels;      // label_names (timm) or id2label (transformers)
  int input_size = 0, resize_size = 0;  // 0: not given
  bool stretch = false;                 // resize to the input size, aspect ratio not kept (no crop)
  std::optional<Interpolation> interpolation;
  std::optional<std::array<float, 3>> mean, std;
  std::vector<std::string> notes;       // what came from which file
};

bool is_model_folder(const std::string& path);  // a directory

// Reads the folder's weights choice and configs. Throws ModelError naming
// the file and field that is wrong or missing.
ModelFolder read_model_folder(const std::string& path);

}  // namespace ptm
