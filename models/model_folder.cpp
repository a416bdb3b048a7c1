#include "model_folder.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "error.h"

namespace ptm {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr std::uintmax_t kMaxConfigBytes = 16u << 20;  // label lists of a few 100k classes fit

std::optional<json> read_json(const fs::path& p) {
  std::error_code ec;
  if (!fs::is_regular_file(p, ec)) return std::nullopt;
  if (fs::file_size(p, ec) > kMaxConfigBytes)
    throw ModelError("'" + p.string() + "' is larger than 16 MiB; not a model config");
  std::ifstream in(p);
  try {
    json j = json::parse(in);
    if (!j.is_object()) throw ModelError("'" + p.string() + "' is not a JSON object");
    return j;
  } catch (const json::exception& e) {
    throw ModelError("'" + p.string() + "' is not valid JSON: " + e.what());
  }
}

// The weights in the folder, in the order the hub's libraries look for them.
std::string pick_weights(const fs::path& dir) {
  for (const char* name : {"model.safetensors", "pytorch_model.bin", "open_clip_model.safetensors"}) {
    std::error_code ec;
    if (fs::is_regular_file(dir / name, ec)) return (dir / name).string();
  }
  std::vector<std::string> found;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string ext = e.path().extension().string();
    if (e.is_regular_file() && (ext == ".safetensors" || ext == ".pth" || ext == ".pt" || ext == ".bin" || ext == ".ckpt"))
      found.push_back(e.path().string());
  }
  if (found.size() == 1) return found[0];
  if (found.empty())
    throw ModelError("'" + dir.string() + "' has no weights (model.safetensors, pytorch_model.bin, or one .safetensors, "
                     ".pth, .pt, .bin or .ckpt file)");
  if (fs::exists(dir / "model.safetensors.index.json") || fs::exists(dir / "pytorch_model.bin.index.json"))
    throw ModelError("'" + dir.string() + "' holds sharded weights; ptm reads one weights file: save the model whole");
  std::string list;
  for (const auto& f : found) list += (list.empty() ? "" : ", ") + fs::path(f).filename().string();
  throw ModelError("'" + dir.string() + "' holds several weights files (" + list + "); name one in model=");
}

std::array<float, 3> triple(const json& v, const std::string& what) {
  if (!v.is_array() || v.size() != 3) throw ModelError(what + " must be three numbers");
  std::array<float, 3> t{};
  for (size_t i = 0; i < 3; ++i) {
    if (!v[i].is_number()) throw ModelError(what + " must be three numbers");
    t[i] = v[i].get<float>();
  }
  return t;
}

Interpolation interpolation_named(const std::string& s, const std::string& what) {
  if (s == "bilinear") return Interpolation::Bilinear;
  if (s == "bicubic") return Interpolation::Bicubic;
  throw ModelError(what + " is '" + s + "'; ptm resamples bilinear or bicubic");
}

int positive(const json& v, const std::string& what) {
  if (!v.is_number_integer() || v.get<int64_t>() < 1 || v.get<int64_t>() > 4096)
    throw ModelError(what + " must be a whole number from 1 to 4096");
  return v.get<int>();
}

// timm: {"architecture", "num_classes", "label_names", "pretrained_cfg":
// {"input_size": [3, H, W], "crop_pct", "crop_mode", "interpolation", "mean", "std"}}.
void read_timm(const json& c, const std::string& file, ModelFolder& f) {
  if (!c.contains("pretrained_cfg") || !c["pretrained_cfg"].is_object()) return;  // const []: no missing keys
  const json& p = c["pretrained_cfg"];
  const std::string at = file + " pretrained_cfg.";
  std::vector<std::string> took;
  if (p.contains("input_size")) {
    const json& s = p["input_size"];
    if (!s.is_array() || s.size() != 3) throw ModelError(at + "input_size must be [channels, height, width]");
    const int h = positive(s[1], at + "input_size"), w = positive(s[2], at + "input_size");
    if (h != w) throw ModelError(at + "input_size is " + std::to_string(h) + "x" + std::to_string(w) +
                                 "; ptm runs square inputs: set input-size");
    if (s[0] != 3) throw ModelError(at + "input_size has " + s[0].dump() + " channels; ptm feeds 3 (RGB)");
    f.input_size = h;
    took.push_back("input size " + std::to_string(h));
    double crop_pct = 0.875;  // timm's default
    if (p.contains("crop_pct") && !p["crop_pct"].is_null()) {
      if (!p["crop_pct"].is_number() || !(p["crop_pct"].get<double>() > 0.0) || p["crop_pct"].get<double>() > 1.0)
        throw ModelError(at + "crop_pct must be a number in (0, 1]");
      crop_pct = p["crop_pct"].get<double>();
    }
    // timm's eval transform: Resize(floor(size / crop_pct)), CenterCrop(size).
    f.resize_size = int(std::floor(h / crop_pct));
    took.push_back("resize " + std::to_string(f.resize_size) + " (crop_pct " + std::to_string(crop_pct).substr(0, 5) + ")");
  }
  if (p.contains("crop_mode") && p["crop_mode"].is_string() && p["crop_mode"] != "center")
    throw ModelError(at + "crop_mode is '" + p["crop_mode"].get<std::string>() + "'; ptm crops in the centre");
  if (p.contains("interpolation") && p["interpolation"].is_string()) {
    f.interpolation = interpolation_named(p["interpolation"].get<std::string>(), at + "interpolation");
    took.push_back(p["interpolation"].get<std::string>());
  }
  if (p.contains("mean")) f.mean = triple(p["mean"], at + "mean");
  if (p.contains("std")) f.std = triple(p["std"], at + "std");
  if (f.mean || f.std) took.push_back("mean/std");
  if (!took.empty()) {
    std::string s;
    for (const auto& t : took) s += (s.empty() ? "" : ", ") + t;
    f.notes.push_back(s + " from " + file + " (pretrained_cfg)");
  }
}

// transformers: preprocessor_config.json {"size": {"shortest_edge": N} |
// {"height": H, "width": W} | N, "crop_size", "do_center_crop", "resample",
// "image_mean", "image_std"}.
void read_preprocessor(const json& c, const std::string& file, ModelFolder& f) {
  auto side = [&](const json& v, const std::string& what) -> int {
    if (v.is_number_integer()) return positive(v, file + " " + what);
    if (v.is_object() && v.contains("shortest_edge")) return positive(v["shortest_edge"], file + " " + what);
    if (v.is_object() && v.contains("height") && v.contains("width")) {
      const int h = positive(v["height"], file + " " + what), w = positive(v["width"], file + " " + what);
      if (h != w) throw ModelError(file + " " + what + " is " + std::to_string(h) + "x" + std::to_string(w) +
                                   "; ptm runs square inputs: set input-size");
      return h;
    }
    throw ModelError(file + " " + what + " is not a size ptm reads");
  };
  const bool crop = c.value("do_center_crop", false) && c.contains("crop_size");
  if (c.contains("size") && c.value("do_resize", true)) {
    const int s = side(c["size"], "size");
    f.resize_size = s;
    f.input_size = crop ? side(c["crop_size"], "crop_size") : s;
    // {"height", "width"} without a crop: resized to that size, aspect ratio not kept.
    f.stretch = !crop && c["size"].is_object() && c["size"].contains("height");
  }
  if (c.contains("resample") && c["resample"].is_number_integer()) {
    const int r = c["resample"].get<int>();  // PIL's codes
    if (r != 2 && r != 3) throw ModelError(file + " resample is " + std::to_string(r) + "; ptm resamples bilinear (2) or bicubic (3)");
    f.interpolation = r == 3 ? Interpolation::Bicubic : Interpolation::Bilinear;
  }
  if (c.contains("image_mean")) f.mean = triple(c["image_mean"], file + " image_mean");
  if (c.contains("image_std")) f.std = triple(c["image_std"], file + " image_std");
  f.notes.push_back("preprocessing from " + file);
}

}  // namespace

bool is_model_folder(const std::string& path) {
  std::error_code ec;
  return fs::is_directory(path, ec);
}

ModelFolder read_model_folder(const std::string& path) {
  const fs::path dir(path);
  ModelFolder f;
  f.path = path;
  f.weights = pick_weights(dir);
  const std::string cfg_name = (dir / "config.json").string();
  const std::optional<json> cfg = read_json(dir / "config.json");
  if (cfg) {
    const json& c = *cfg;
    if (c.contains("architecture") && c["architecture"].is_string()) f.architecture = c["architecture"];
    else if (c.contains("architectures") && c["architectures"].is_array() && !c["architectures"].empty() &&
             c["architectures"][0].is_string())
      f.architecture = c["architectures"][0];
    if (c.contains("num_classes") && c["num_classes"].is_number_integer()) f.num_classes = c["num_classes"];
    if (c.contains("label_names") && c["label_names"].is_array()) {
      for (const auto& l : c["label_names"]) {
        if (!l.is_string()) throw ModelError(cfg_name + " label_names must be strings");
        f.labels.push_back(l);
      }
    } else if (c.contains("id2label") && c["id2label"].is_object()) {
      // Keys are class ids as strings: "0", "1", ...; every id from 0 must be there.
      const size_t n = c["id2label"].size();
      f.labels.assign(n, "");
      for (auto it = c["id2label"].begin(); it != c["id2label"].end(); ++it) {
        size_t id = 0;
        std::istringstream s(it.key());
        if (!(s >> id) || !s.eof() || id >= n || !it.value().is_string())
          throw ModelError(cfg_name + " id2label must map the ids 0.." + std::to_string(n - 1) + " to names");
        f.labels[id] = it.value();
      }
      if (f.num_classes == 0) f.num_classes = int64_t(n);
    }
    if (!f.labels.empty()) f.notes.push_back(std::to_string(f.labels.size()) + " labels from " + cfg_name);
    read_timm(c, cfg_name, f);
  }
  const std::string pre_name = (dir / "preprocessor_config.json").string();
  if (const std::optional<json> pre = read_json(dir / "preprocessor_config.json")) read_preprocessor(*pre, pre_name, f);
  if (!cfg && f.notes.empty()) f.notes.push_back("'" + path + "' has no config.json: labels and preprocessing are the architecture's");
  if (f.resize_size > 0 && f.resize_size < f.input_size)
    throw ModelError("'" + path + "': the config resizes to " + std::to_string(f.resize_size) + ", smaller than its " +
                     std::to_string(f.input_size) + " input");
  return f;
}

}  // namespace ptm
