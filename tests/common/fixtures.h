// Access to the fixtures made by tests/fixtures/make_fixtures.py.
#pragma once

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <string>
#include <vector>

namespace ptm::test {

// Set by main() from argv[1] or $PTM_FIXTURES.
std::string& fixtures_dir();

inline std::string fixture(const std::string& name) { return fixtures_dir() + "/" + name; }

inline const nlohmann::json& manifest() {
  static const nlohmann::json m = [] {
    std::ifstream in(fixture("manifest.json"));
    if (!in) throw std::runtime_error("no manifest.json in " + fixtures_dir());
    return nlohmann::json::parse(in);
  }();
  return m;
}

inline at::Tensor read_f32(const std::string& name, std::vector<int64_t> shape) {
  std::ifstream in(fixture(name), std::ios::binary);
  if (!in) throw std::runtime_error("missing fixture " + name);
  at::Tensor t = at::empty(shape, at::kFloat);
  in.read(reinterpret_cast<char*>(t.data_ptr<float>()), std::streamsize(t.numel() * 4));
  if (in.gcount() != std::streamsize(t.numel() * 4)) throw std::runtime_error("short fixture " + name);
  return t;
}

inline at::Tensor input_batch() {
  static at::Tensor x = read_f32(manifest()["input"], manifest()["input_shape"].get<std::vector<int64_t>>());
  return x;
}

// max |a - b| relative to max(1, max |b|), the parity measure.
inline double relative_error(const at::Tensor& a, const at::Tensor& b) {
  double scale = std::max(1.0, b.abs().max().item<double>());
  return (a - b).abs().max().item<double>() / scale;
}

inline std::vector<int64_t> top5(const at::Tensor& logits_row) {
  auto idx = std::get<1>(logits_row.topk(5));
  return std::vector<int64_t>(idx.data_ptr<int64_t>(), idx.data_ptr<int64_t>() + 5);
}

}  // namespace ptm::test
