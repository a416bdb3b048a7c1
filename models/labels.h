// Class labels: ImageNet-1k built in, or a text file with one label per line.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ptm {

const std::vector<std::string>& imagenet_labels();

// One label per line; trailing '\r' and surrounding blanks are trimmed, empty
// lines are kept as empty labels only when followed by more labels (so the
// line number stays the class id). Throws ModelError naming the file.
std::vector<std::string> read_labels_file(const std::string& path);
// The same for text already read; `what` names it in errors.
std::vector<std::string> parse_labels(std::string_view text, const std::string& what);

// The labels file ptmtrainsink writes beside a model: "<stem>.labels.txt"
// for "<stem>.<ext>".
std::string labels_path_beside(const std::string& model_path);

// The labels of the model at `model_path` with `classes` outputs, in this
// order: `file` when given; the labels file beside the model; `carried`
// (e.g. a package's own) when not empty; ImageNet's for 1000 classes;
// "class N" (the classifier puts the labels saved inside a weights file
// after `file` and before the rest). `from` receives the file used ("" otherwise). A file whose
// count differs from `classes` throws ModelError naming it.
std::vector<std::string> resolve_labels(const std::string& model_path, const std::string& file, int64_t classes,
                                        const std::vector<std::string>& carried, std::string* from);

}  // namespace ptm
