#include "labels.h"

#include <unistd.h>

#include "bytes.h"

namespace ptm {

std::vector<std::string> read_labels_file(const std::string& path) {
  Bytes b = read_file(path, uint64_t(64) << 20);
  return parse_labels(b.view(0, b.size), "'" + path + "'");
}

std::vector<std::string> parse_labels(std::string_view text, const std::string& what) {
  if (text.find('\0') != std::string_view::npos) throw ModelError(what + " is not a text file of labels");
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    std::string_view line = text.substr(pos, nl == std::string_view::npos ? std::string_view::npos : nl - pos);
    pos = nl == std::string_view::npos ? text.size() : nl + 1;
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t')) line.remove_suffix(1);
    while (!line.empty() && (line.front() == ' ' || line.front() == '\t')) line.remove_prefix(1);
    out.emplace_back(line);
  }
  while (!out.empty() && out.back().empty()) out.pop_back();
  if (out.empty()) throw ModelError(what + " holds no labels");
  return out;
}

std::string labels_path_beside(const std::string& model) {
  const auto slash = model.find_last_of('/');
  const auto dot = model.find_last_of('.');
  const bool has_ext = dot != std::string::npos && (slash == std::string::npos || dot > slash + 1);
  return (has_ext ? model.substr(0, dot) : model) + ".labels.txt";
}

std::vector<std::string> resolve_labels(const std::string& model_path, const std::string& file, int64_t classes,
                                        const std::vector<std::string>& carried, std::string* from) {
  std::string use = file;
  // A labels file written beside the model (ptmtrainsink does) is used.
  if (use.empty() && ::access(labels_path_beside(model_path).c_str(), R_OK) == 0) use = labels_path_beside(model_path);
  if (from) *from = use;
  std::vector<std::string> labels;
  if (!use.empty()) {
    labels = read_labels_file(use);
    if (int64_t(labels.size()) != classes)
      throw ModelError("'" + use + "' has " + std::to_string(labels.size()) + " labels but the model has " +
                       std::to_string(classes) + " classes");
  } else if (!carried.empty()) {
    labels = carried;
  } else if (classes == 1000) {
    labels = imagenet_labels();
  } else {
    for (int64_t i = 0; i < classes; ++i) labels.push_back("class " + std::to_string(i));
  }
  return labels;
}

}  // namespace ptm
