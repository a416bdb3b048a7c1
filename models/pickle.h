// A restricted unpickler for PyTorch checkpoint files.
//
// It understands the opcodes `torch.save` emits (protocols 2-5) and builds an
// inert value tree. Globals are resolved against one fixed allowlist of the
// names a state dict or training checkpoint needs (plus the dtype table
// below). Any other global (`argparse.Namespace`, a pickled module's class,
// `os.system`, ...) becomes an inert placeholder: calling or instantiating it
// gives an Object holding its qualified name, its arguments and its BUILD
// state as plain values. Nothing from the file is ever called or imported. A
// few such objects are decoded into readable values (numpy scalars,
// `_codecs.encode`, `collections.defaultdict`, `builtins.complex` and
// `bytearray`). Placeholders are refused, by name, where tensors must be (a
// storage, a tensor record's arguments, a state dict's values: see
// refusal()). Tensor records are v2 (a typed storage: torch.save for
// the classic dtypes) and v3 (an untyped byte storage plus a dtype: torch
// 2.x for float8, uint16/32/64 and other new dtypes).
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

// How the elements of a dtype found in a file become a tensor the rest of
// ptm accepts.
enum class Decode {
  Native,          // used as stored (zero copy unless byte-swapped)
  Float8E4M3FN,    // float8 formats: every value is exact in float32
  Float8E4M3FNUZ,
  Float8E5M2,
  Float8E5M2FNUZ,
  Float8E8M0FNU,
  UInt16,          // unsigned integers: to int64 (uint64 only when it fits)
  UInt32,
  UInt64,
  Refuse,          // complex, quantized, packed: a classifier cannot use them
};

// One torch dtype as files spell it: the dtype name (`torch.float8_e4m3fn`),
// its legacy storage class (`torch.FloatStorage`) where it has one, and
// its size on disk. Every dtype the readers know is in one table.
struct DType {
  const char* name;      // "float32"
  const char* storage;   // "FloatStorage", or nullptr (saved as UntypedStorage)
  uint8_t size;          // bytes per element in the file
  uint8_t swap;          // byte-swap unit for big-endian files (complex: a half)
  at::ScalarType type;   // what it becomes in memory (Undefined when refused)
  Decode decode;
};

// The dtype named `torch.<name>`, or nullptr.
const DType* find_dtype(const std::string& name);
// torch's name of an in-memory type ("float32"), or c10's when it has none.
std::string dtype_name(at::ScalarType t);

// A storage found through a persistent id, with the raw bytes it refers to.
struct Storage {
  const DType* dtype = nullptr;  // typed storages; UntypedStorage counts uint8
  int64_t nbytes = 0;
  at::Tensor bytes;               // uint8, nbytes long, as in the file
  bool big_endian = false;        // the file's byte order
  const DType* viewed_as = nullptr;  // the dtype of the tensors built on it
  // Whole-storage copies made for tensors that cannot use `bytes` as they
  // are (byte-swapped, converted or negated), by (dtype, negate).
  mutable std::vector<std::pair<std::pair<const DType*, bool>, at::Tensor>> decoded;
};

struct Value {
  enum class Kind { None, Bool, Int, Float, Str, Bytes, Tuple, List, Dict, Tensor, Storage, Global, Object };
  Kind kind = Kind::None;
  bool b = false;
  int64_t i = 0;
  double f = 0.0;
  std::string s;                            // Str, Bytes, Global and Object ("module.name")
  std::vector<Ref> items;                   // Tuple, List; Object: the arguments it was made with
  std::vector<std::pair<Ref, Ref>> dict;    // Dict, in insertion order
  mutable at::Tensor tensor;                // Tensor, once materialised
  // A tensor record: storage plus a view validated against its size. The
  // bytes may arrive after the pickle (legacy format): see materialize().
  int64_t view_offset = 0;
  std::vector<int64_t> view_sizes, view_strides;
  bool negate = false;                      // Tensor saved with its neg bit set
  std::shared_ptr<pickle::Storage> storage; // Storage, Tensor
  // Tensor: its dtype. Global: the dtype it names (`torch.float16`) or, with
  // `names_storage`, the dtype of the storage class it names.
  const DType* dtype = nullptr;
  bool names_storage = false;
  bool inert = false;                       // Global: outside the allowlist, a placeholder
  Ref state;                                // Object: its BUILD state (or null)
  std::vector<Ref> appended;                // Object: items APPENDed to it
  // What a decoded value was in Python where its kind does not say
  // (`numpy.float64`, `bytearray`, `complex`).
  std::string tag;
  int depth = 0;                            // nesting depth, bounded

  bool is(Kind k) const { return kind == k; }
  const char* kind_name() const;
};

Ref make_none();
Ref make_int(int64_t v);
Ref make_str(std::string s);

// Resolves the persistent id tuple ('storage', type, key, location, count[, view]).
using PersistentLoad = std::function<Ref(const Value& pid)>;

// Unpickles `data`. `what` names the source in error messages. The result
// owns every value the pickle made (cycles included) and frees them all
// when it is dropped: values taken from it are for use while it is held.
// `consumed`, when given, receives the number of bytes read up to STOP
// (legacy files hold several pickles back to back).
Ref load(const uint8_t* data, size_t size, const PersistentLoad& persistent_load,
         const std::string& what, size_t* consumed = nullptr);

// The at::Tensor of a Kind::Tensor value, built on first use from its
// storage's bytes: a view sharing the file buffer where the stored bytes
// can be used as they are, else a view of a converted copy of the storage
// (big-endian files, float8 to float32, unsigned to int64). `what` names
// the tensor in errors (a refused dtype, a uint64 value int64 cannot hold).
const at::Tensor& materialize(const Value& v, const std::string& what);

// A placeholder: an Object or a Global outside the allowlist.
bool is_placeholder(const Value& v);
// The error for a placeholder found where a tensor (or a storage, a tensor
// type...) must be: "refusing to load global 'posix.system' as <role>: ...".
std::string refusal(const Value& v, const std::string& role);
// A one-line description for reports: `argparse.Namespace(lr=0.1, ...)`,
// `numpy.float64 = 0.934`, `tensor [64, 3, 7, 7] float32`; at most about
// `budget` characters.
std::string describe(const Value& v, size_t budget = 160);

// Helpers for readers.
int64_t as_int(const Value& v, const char* what);
const std::string& as_str(const Value& v, const char* what);

}  // namespace ptm::pickle
