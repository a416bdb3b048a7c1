// A restricted unpickler for PyTorch checkpoint files.
//
// It understands the opcodes `torch.save` emits (protocols 2-5) and builds an
// inert value tree. Globals are resolved against a fixed allowlist of the
// names a state dict or training checkpoint needs; any other global (a
// pickled module, `os.system`, `builtins.eval`, ...) stops the read with an
// error naming it. Nothing from the file is ever called or imported.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace ptm::pickle {

struct Value;
using Ref = std::shared_ptr<Value>;

// A storage found through a persistent id, with the raw bytes it refers to.
struct Storage {
  at::ScalarType dtype = at::ScalarType::Float;
  int64_t numel = 0;
  at::Tensor bytes;  // uint8, numel * element size long
};

struct Value {
  enum class Kind { None, Bool, Int, Float, Str, Bytes, Tuple, List, Dict, Tensor, Storage, Global };
  Kind kind = Kind::None;
  bool b = false;
  int64_t i = 0;
  double f = 0.0;
  std::string s;                            // Str, Bytes, Global ("module.name")
  std::vector<Ref> items;                   // Tuple, List
  std::vector<std::pair<Ref, Ref>> dict;    // Dict, in insertion order
  mutable at::Tensor tensor;                // Tensor, once materialised
  // A tensor record: storage plus a view validated against its size. The
  // bytes may arrive after the pickle (legacy format): see materialize().
  int64_t view_offset = 0;
  std::vector<int64_t> view_sizes, view_strides;
  std::shared_ptr<pickle::Storage> storage; // Storage
  at::ScalarType storage_dtype = at::ScalarType::Undefined;  // Global naming a storage type
  int depth = 0;                            // nesting depth, bounded

  bool is(Kind k) const { return kind == k; }
  const char* kind_name() const;
};

Ref make_none();
Ref make_int(int64_t v);
Ref make_str(std::string s);

// Resolves the persistent id tuple ('storage', type, key, location, numel[, view]).
using PersistentLoad = std::function<Ref(const Value& pid)>;

// Unpickles `data`. `what` names the source in error messages.
// `consumed`, when given, receives the number of bytes read up to STOP
// (legacy files hold several pickles back to back).
Ref load(const uint8_t* data, size_t size, const PersistentLoad& persistent_load,
         const std::string& what, size_t* consumed = nullptr);

// The at::Tensor of a Kind::Tensor value, built on first use from its
// storage's bytes (a view sharing the file buffer, no copy).
const at::Tensor& materialize(const Value& v);

// Helpers for readers.
int64_t as_int(const Value& v, const char* what);
const std::string& as_str(const Value& v, const char* what);

}  // namespace ptm::pickle
