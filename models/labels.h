// Class labels: ImageNet-1k built in, or a text file with one label per line.
#pragma once

#include <string>
#include <vector>

namespace ptm {

const std::vector<std::string>& imagenet_labels();

// One label per line; trailing '\r' and surrounding blanks are trimmed, empty
// lines are kept as empty labels only when followed by more labels (so the
// line number stays the class id). Throws ModelError naming the file.
std::vector<std::string> read_labels_file(const std::string& path);

// The labels file ptmtrainsink writes beside a model: "<stem>.labels.txt"
// for "<stem>.<ext>".
std::string labels_path_beside(const std::string& model_path);

}  // namespace ptm
