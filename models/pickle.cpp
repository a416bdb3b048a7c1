#include "pickle.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <unordered_map>

#include "bytes.h"

namespace ptm::pickle {

namespace {

constexpr int kMaxDepth = 200;

// Memory for the values one pickle builds, bounded by its length: a value
// costs ~300 bytes and an opcode as little as one, so a hostile pickle of
// 100 MB could otherwise ask for 10 GB or more. Real checkpoints' pickles
// need a few thousand values (the weights are storages, not values).
constexpr size_t kValueBytes = sizeof(Value) + 32 + sizeof(Ref);  // with the shared_ptr's control block and the graph's entry
constexpr size_t kBudgetFloor = size_t(256) << 20;
constexpr size_t kBudgetPerByte = 8;

// Every value one load made. A pickle can make values that refer to
// themselves (a list appended to itself, an object whose BUILD state holds
// it, through the memo): shared_ptr alone would never free such a cycle.
// The graph owns every value until the loaded result is dropped, then cuts
// the links between them, so nothing outlives the result, whatever the
// pickle did (a failed load drops it at once).
struct Graph {
  std::vector<Ref> values;
  ~Graph() {
    for (const Ref& v : values) {
      v->items.clear();
      v->dict.clear();
      v->state.reset();
      v->appended.clear();
    }
  }
};

struct Budget {
  size_t left = 0;
  size_t limit = 0;
  std::string what;
  Graph* graph = nullptr;
};
thread_local Budget* t_budget = nullptr;  // the pickle being read on this thread

Ref make(Value::Kind k) {
  if (Budget* b = t_budget) {
    if (b->left < kValueBytes)
      throw ModelError(b->what + ": the pickle builds more values than its length allows (over " +
                       std::to_string(b->limit >> 20) + " MB of memory): refused");
    b->left -= kValueBytes;
  }
  auto v = std::make_shared<Value>();
  v->kind = k;
  if (t_budget && t_budget->graph) t_budget->graph->values.push_back(v);
  return v;
}

using at::ScalarType;
constexpr auto kNone = ScalarType::Undefined;

// Every dtype a checkpoint may name, with what becomes of it. Files name a
// dtype as `torch.<name>` (v3 tensor records) or through its legacy
// storage class `torch.<storage>` (v2 records, the legacy format).
constexpr DType kDTypes[] = {
    {"float32", "FloatStorage", 4, 4, at::kFloat, Decode::Native},
    {"float64", "DoubleStorage", 8, 8, at::kDouble, Decode::Native},
    {"float16", "HalfStorage", 2, 2, at::kHalf, Decode::Native},
    {"bfloat16", "BFloat16Storage", 2, 2, at::kBFloat16, Decode::Native},
    {"int64", "LongStorage", 8, 8, at::kLong, Decode::Native},
    {"int32", "IntStorage", 4, 4, at::kInt, Decode::Native},
    {"int16", "ShortStorage", 2, 2, at::kShort, Decode::Native},
    {"int8", "CharStorage", 1, 1, at::kChar, Decode::Native},
    {"uint8", "ByteStorage", 1, 1, at::kByte, Decode::Native},
    {"bool", "BoolStorage", 1, 1, at::kBool, Decode::Native},
    {"float8_e4m3fn", nullptr, 1, 1, at::kFloat, Decode::Float8E4M3FN},
    {"float8_e4m3fnuz", nullptr, 1, 1, at::kFloat, Decode::Float8E4M3FNUZ},
    {"float8_e5m2", nullptr, 1, 1, at::kFloat, Decode::Float8E5M2},
    {"float8_e5m2fnuz", nullptr, 1, 1, at::kFloat, Decode::Float8E5M2FNUZ},
    {"float8_e8m0fnu", nullptr, 1, 1, at::kFloat, Decode::Float8E8M0FNU},
    {"uint16", nullptr, 2, 2, at::kLong, Decode::UInt16},
    {"uint32", nullptr, 4, 4, at::kLong, Decode::UInt32},
    {"uint64", nullptr, 8, 8, at::kLong, Decode::UInt64},
    {"complex32", nullptr, 4, 2, kNone, Decode::Refuse},
    {"complex64", "ComplexFloatStorage", 8, 4, kNone, Decode::Refuse},
    {"complex128", "ComplexDoubleStorage", 16, 8, kNone, Decode::Refuse},
    {"qint8", "QInt8Storage", 1, 1, kNone, Decode::Refuse},
    {"quint8", "QUInt8Storage", 1, 1, kNone, Decode::Refuse},
    {"qint32", "QInt32Storage", 4, 4, kNone, Decode::Refuse},
    {"quint4x2", "QUInt4x2Storage", 1, 1, kNone, Decode::Refuse},
    {"quint2x4", "QUInt2x4Storage", 1, 1, kNone, Decode::Refuse},
    {"float4_e2m1fn_x2", nullptr, 1, 1, kNone, Decode::Refuse},
    {"bits8", nullptr, 1, 1, kNone, Decode::Refuse},
    {"bits16", nullptr, 2, 2, kNone, Decode::Refuse},
    {"bits1x8", nullptr, 1, 1, kNone, Decode::Refuse},
    {"bits2x4", nullptr, 1, 1, kNone, Decode::Refuse},
    {"bits4x2", nullptr, 1, 1, kNone, Decode::Refuse},
};

const DType& byte_dtype() { return *find_dtype("uint8"); }

const DType* find_storage_class(const std::string& name) {
  for (const auto& d : kDTypes)
    if (d.storage && name == d.storage) return &d;
  return nullptr;
}

// The opcodes read here, named as in the pickle protocol's specification
// (the text forms of floats, strings and persistent ids are never written
// by torch.save and stay unsupported).
enum Op : uint8_t {
  MARK = '(', STOP = '.', POP = '0', POP_MARK = '1', DUP = '2', INT = 'I',
  BININT = 'J', BININT1 = 'K', LONG = 'L', BININT2 = 'M', NONE = 'N',
  BINPERSID = 'Q', REDUCE = 'R', BINSTRING = 'T', SHORT_BINSTRING = 'U',
  BINUNICODE = 'X', APPEND = 'a', BUILD = 'b', GLOBAL = 'c', DICT = 'd',
  EMPTY_DICT = '}', APPENDS = 'e', GET = 'g', BINGET = 'h', LONG_BINGET = 'j', LIST = 'l',
  EMPTY_LIST = ']', PUT = 'p', BINPUT = 'q', LONG_BINPUT = 'r', SETITEM = 's', TUPLE = 't',
  EMPTY_TUPLE = ')', SETITEMS = 'u', BINFLOAT = 'G',
  PROTO = 0x80, NEWOBJ = 0x81, TUPLE1 = 0x85, TUPLE2 = 0x86, TUPLE3 = 0x87, NEWTRUE = 0x88,
  NEWFALSE = 0x89, LONG1 = 0x8a, SHORT_BINBYTES = 'C', BINBYTES = 'B',
  SHORT_BINUNICODE = 0x8c, BINUNICODE8 = 0x8d, BINBYTES8 = 0x8e, EMPTY_SET = 0x8f,
  ADDITEMS = 0x90, NEWOBJ_EX = 0x92, STACK_GLOBAL = 0x93, MEMOIZE = 0x94, FRAME = 0x95,
};

uint64_t load_unsigned(const uint8_t* p, int size, bool big_endian);

class Machine;
// What calling an allowed global builds; nullptr for the tensor classes,
// which may only be named as _rebuild_from_type_v2's target type.
using Build = Ref (Machine::*)(const Value& args);
struct Callable {
  const char* name;
  Build build;
};
const Callable* find_callable(const std::string& name);

class Machine {
 public:
  Machine(const uint8_t* data, size_t size, const PersistentLoad& pl, std::string what)
      : in_(data, size, what), pl_(pl), what_(std::move(what)) {}

  Ref run();
  bool scalar_op(uint8_t op);
  bool collection_op(uint8_t op);
  bool memo_op(uint8_t op);
  bool object_op(uint8_t op);
  size_t pos() const { return in_.pos(); }

  // The allowed calls (see kCallables).
  Ref ordered_dict(const Value& args);
  Ref rebuild_tensor_v2(const Value& args);
  Ref rebuild_tensor_v3(const Value& args);
  Ref rebuild_parameter(const Value& args);
  Ref rebuild_from_type_v2(const Value& args);
  Ref restore_type_tag(const Value& args);
  Ref size(const Value& args);
  Ref device(const Value& args);
  Ref set(const Value& args);

 private:
  [[noreturn]] void fail(const std::string& why) const { in_.fail(why); }

  Ref pop() {
    if (stack_.empty() || (!marks_.empty() && stack_.size() <= marks_.back()))
      fail("stack underflow");
    Ref v = std::move(stack_.back());
    stack_.pop_back();
    return v;
  }
  Ref& top() {
    if (stack_.empty()) fail("stack underflow");
    return stack_.back();
  }
  std::vector<Ref> pop_mark() {
    if (marks_.empty()) fail("MARK missing");
    size_t m = marks_.back();
    marks_.pop_back();
    std::vector<Ref> out(std::make_move_iterator(stack_.begin() + m),
                         std::make_move_iterator(stack_.end()));
    stack_.resize(m);
    return out;
  }
  void push(Ref v) { stack_.push_back(std::move(v)); }

  void adopt(Value& parent, const Ref& child) {
    if (child->depth + 1 > parent.depth) parent.depth = child->depth + 1;
    if (parent.depth > kMaxDepth) fail("objects nested deeper than " + std::to_string(kMaxDepth));
  }
  Ref make_seq(Value::Kind k, std::vector<Ref> items) {
    Ref v = make(k);
    for (auto& it : items) adopt(*v, it);
    v->items = std::move(items);
    return v;
  }
  void set_items(Value& d, std::vector<Ref>& kv) {
    if (kv.size() % 2) fail("odd number of items for a dict");
    if (!d.is(Value::Kind::Dict) && !d.is(Value::Kind::Object)) fail(std::string("SETITEM(S) on a ") + d.kind_name());
    for (size_t k = 0; k < kv.size(); k += 2) {
      adopt(d, kv[k]);
      adopt(d, kv[k + 1]);
      d.dict.emplace_back(kv[k], kv[k + 1]);
    }
  }
  void append_items(Value& l, std::vector<Ref>& items) {
    if (l.is(Value::Kind::List) || l.is(Value::Kind::Object)) {
      auto& to = l.is(Value::Kind::List) ? l.items : l.appended;  // an Object's items are its arguments
      for (auto& it : items) {
        adopt(l, it);
        to.push_back(it);
      }
    } else {
      fail(std::string("APPEND(S) on a ") + l.kind_name());
    }
  }

  Ref global(const std::string& module, const std::string& name);
  Ref call(const Value& fn, const Value& args);
  Ref placeholder(const std::string& name, const Value& args);
  Ref numpy_scalar(const Value& args);
  [[noreturn]] void refuse(const Value& v, const std::string& role) const { fail(refusal(v, role)); }
  Ref tensor(const Value& storage, const DType& dtype, const Value& offset, const Value& size,
             const Value& stride, const Value* metadata);
  bool negated(const Value& metadata);
  void memo_put(uint64_t idx) { memo_[idx] = top(); }
  Ref memo_get(uint64_t idx) {
    auto it = memo_.find(idx);
    if (it == memo_.end()) fail("memo key " + std::to_string(idx) + " not found");
    return it->second;
  }

  Cursor in_;
  const PersistentLoad& pl_;
  std::string what_;
  std::vector<Ref> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, Ref> memo_;
  int proto_ = 0;  // the stream's protocol (0 until a PROTO opcode says)
};

// The one allowlist: everything a state dict or a plain training checkpoint
// calls, and what each call builds. Dtypes and storage classes come from
// kDTypes. Nothing is looked up dynamically.
constexpr Callable kCallables[] = {
    {"collections.OrderedDict", &Machine::ordered_dict},
    {"torch._utils._rebuild_tensor", &Machine::rebuild_tensor_v2},
    {"torch._utils._rebuild_tensor_v2", &Machine::rebuild_tensor_v2},
    {"torch._utils._rebuild_tensor_v3", &Machine::rebuild_tensor_v3},
    {"torch._utils._rebuild_parameter", &Machine::rebuild_parameter},
    {"torch._utils._rebuild_parameter_with_state", &Machine::rebuild_parameter},
    {"torch._utils._rebuild_from_type_v2", &Machine::rebuild_from_type_v2},
    {"torch.jit._pickle.restore_type_tag", &Machine::restore_type_tag},  // LibTorch's pickle_save
    {"torch.Size", &Machine::size},
    {"torch.device", &Machine::device},
    {"builtins.set", &Machine::set},
    {"builtins.frozenset", &Machine::set},
    {"torch._tensor.Tensor", nullptr},
    {"torch.Tensor", nullptr},
    {"torch.nn.parameter.Parameter", nullptr},
};

const Callable* find_callable(const std::string& name) {
  for (const auto& c : kCallables)
    if (name == c.name) return &c;
  return nullptr;
}

Ref Machine::global(const std::string& module_name, const std::string& name) {
  // Protocols 0-2 spell modules as Python 2 did: named as Python 3 does
  // (pickle's own _compat_pickle maps them back the same way).
  static const std::map<std::string, std::string> py2 = {
      {"__builtin__", "builtins"}, {"copy_reg", "copyreg"}, {"exceptions", "builtins"}, {"commands", "subprocess"},
      {"cPickle", "pickle"}, {"Queue", "queue"}, {"UserDict", "collections"}, {"UserList", "collections"},
      {"UserString", "collections"}, {"repr", "reprlib"}, {"thread", "_thread"}, {"StringIO", "io"},
      {"cStringIO", "io"}, {"urllib2", "urllib.request"}, {"urlparse", "urllib.parse"}, {"httplib", "http.client"}};
  const auto renamed = proto_ < 3 ? py2.find(module_name) : py2.end();
  const std::string& module = renamed == py2.end() ? module_name : renamed->second;
  std::string full = module + "." + name;
  Ref g = make(Value::Kind::Global);
  g->s = full;
  if (module == "torch") {
    if ((g->dtype = find_dtype(name))) return g;
    if ((g->dtype = find_storage_class(name))) {
      g->names_storage = true;
      return g;
    }
  }
  // Untyped storages count bytes; the tensor record names the dtype.
  if (full == "torch.storage.UntypedStorage" || full == "torch.UntypedStorage") {
    g->dtype = &byte_dtype();
    g->names_storage = true;
    return g;
  }
  // Anything else is a placeholder, never resolved: what it builds is an
  // inert Object (see placeholder()).
  g->inert = !find_callable(full);
  return g;
}

int64_t checked_dim(const Value& v, const char* what) {
  int64_t d = as_int(v, what);
  if (d < 0) throw ModelError(std::string(what) + " is negative");
  return d;
}

// The neg bit of the optional metadata dict torch >= 1.10 writes for
// tensors with a conj or neg bit set.
bool Machine::negated(const Value& metadata) {
  if (metadata.is(Value::Kind::None)) return false;
  if (!metadata.is(Value::Kind::Dict)) fail("malformed tensor metadata");
  bool neg = false;
  for (const auto& [k, v] : metadata.dict) {
    const std::string& key = as_str(*k, "tensor metadata key");
    const bool on = v->is(Value::Kind::Bool) && v->b;
    if (key == "neg") neg = on;
    else if (key == "conj") continue;  // only complex tensors have one, and those are refused
    else if (on) fail("tensor metadata '" + key + "' is not supported");
  }
  return neg;
}

Ref Machine::tensor(const Value& st, const DType& dtype, const Value& offset_v, const Value& size,
                    const Value& stride, const Value* metadata) {
  if (is_placeholder(st)) refuse(st, "a tensor's storage");
  if (!st.is(Value::Kind::Storage)) fail("tensor record without a storage");
  Storage& storage = *st.storage;
  // torch.save refuses to store one storage viewed with two dtypes; a file
  // that does is not one of its files (and would need two converted copies).
  if (storage.viewed_as && storage.viewed_as != &dtype)
    fail(std::string("one storage is used as torch.") + storage.viewed_as->name + " and as torch." + dtype.name);
  storage.viewed_as = &dtype;
  int64_t offset = checked_dim(offset_v, "tensor storage offset");
  if (!size.is(Value::Kind::Tuple) || !stride.is(Value::Kind::Tuple) ||
      size.items.size() != stride.items.size())
    fail("tensor size and stride do not match");
  if (size.items.size() > 16) fail("tensor has more than 16 dimensions");
  std::vector<int64_t> sizes, strides;
  uint64_t numel = 1, extent = 0;  // extent: index of the last element reached
  for (size_t k = 0; k < size.items.size(); ++k) {
    int64_t s = checked_dim(*size.items[k], "tensor size");
    int64_t t = checked_dim(*stride.items[k], "tensor stride");
    sizes.push_back(s);
    strides.push_back(t);
    uint64_t span;
    if (mul_overflows(numel, uint64_t(s), &numel)) fail("tensor element count overflows");
    if (s > 0) {
      if (mul_overflows(uint64_t(s - 1), uint64_t(t), &span) ||
          add_overflows(extent, span, &extent))
        fail("tensor extent overflows");
    }
  }
  const uint64_t capacity = uint64_t(storage.nbytes) / dtype.size;
  uint64_t end;
  if (numel > 0 && (add_overflows(extent, uint64_t(offset), &end) || end >= capacity))
    fail("tensor reaches element " + std::to_string(extent + uint64_t(offset)) +
         " of a storage holding " + std::to_string(capacity) + " torch." + dtype.name + " elements");
  Ref r = make(Value::Kind::Tensor);
  r->storage = st.storage;
  r->dtype = &dtype;
  r->view_offset = offset;
  r->view_sizes = std::move(sizes);
  r->view_strides = std::move(strides);
  r->negate = metadata && negated(*metadata);
  return r;
}

// (storage, offset, size, stride[, requires_grad, backward_hooks[, metadata]]):
// the storage's class gives the dtype.
Ref Machine::rebuild_tensor_v2(const Value& args) {
  if (args.items.size() < 4 || args.items.size() > 7) fail("malformed tensor record");
  const Value& st = *args.items[0];
  if (is_placeholder(st)) refuse(st, "a tensor's storage");
  if (!st.is(Value::Kind::Storage)) fail("tensor record without a storage");
  return tensor(st, *st.storage->dtype, *args.items[1], *args.items[2], *args.items[3],
                args.items.size() == 7 ? args.items[6].get() : nullptr);
}

// (storage, offset, size, stride, requires_grad, backward_hooks, dtype[, metadata]):
// dtypes without a legacy storage class; the storage is untyped (bytes).
Ref Machine::rebuild_tensor_v3(const Value& args) {
  if (args.items.size() < 7 || args.items.size() > 8) fail("malformed tensor record (v3)");
  const Value& dt = *args.items[6];
  if (is_placeholder(dt)) refuse(dt, "a tensor's dtype");
  if (!dt.is(Value::Kind::Global) || !dt.dtype || dt.names_storage) fail("tensor record (v3) without a dtype");
  return tensor(*args.items[0], *dt.dtype, *args.items[1], *args.items[2], *args.items[3],
                args.items.size() == 8 ? args.items[7].get() : nullptr);
}

Ref Machine::ordered_dict(const Value& args) {
  if (!args.items.empty()) fail("OrderedDict with arguments is not supported");
  return make(Value::Kind::Dict);
}

Ref Machine::rebuild_parameter(const Value& args) {
  if (!args.items.empty() && is_placeholder(*args.items[0])) refuse(*args.items[0], "a parameter's tensor");
  if (args.items.empty() || !args.items[0]->is(Value::Kind::Tensor)) fail("parameter record without a tensor");
  return args.items[0];  // requires_grad and hooks do not matter for weights
}

// (func, new_type, args, state): a tensor subclass wrapper around an
// allowed call; the type must be a plain tensor type.
Ref Machine::rebuild_from_type_v2(const Value& args) {
  if (args.items.size() < 3 || !args.items[1]->is(Value::Kind::Global)) fail("_rebuild_from_type_v2 with an unsupported type");
  if (args.items[1]->inert) refuse(*args.items[1], "a tensor type");
  if (is_placeholder(*args.items[0])) refuse(*args.items[0], "a tensor's rebuild function");
  const Callable* type = find_callable(args.items[1]->s);
  if (!type || type->build) fail("_rebuild_from_type_v2 with an unsupported type");
  const Value& inner = *args.items[0];
  const Callable* fn = inner.is(Value::Kind::Global) ? find_callable(inner.s) : nullptr;
  if (!fn || !fn->build || fn->build == &Machine::rebuild_from_type_v2)
    fail("_rebuild_from_type_v2 with an unsupported function");
  return call(inner, *args.items[2]);
}

Ref Machine::restore_type_tag(const Value& args) {
  if (args.items.empty()) fail("restore_type_tag without a value");
  return args.items[0];  // the type tag only annotates the value
}

Ref Machine::size(const Value& args) {
  if (args.items.size() != 1) fail("torch.Size takes one argument");
  return args.items[0];
}

Ref Machine::device(const Value& args) {
  Ref r = make(Value::Kind::Str);
  for (auto& a : args.items)
    if (a->is(Value::Kind::Str)) r->s += a->s;
  return r;
}

Ref Machine::set(const Value& args) {
  Ref r = make(Value::Kind::List);
  if (!args.items.empty() && args.items[0]->is(Value::Kind::List)) r->items = args.items[0]->items;
  return r;
}

Ref Machine::call(const Value& fn, const Value& args) {
  if (!args.is(Value::Kind::Tuple)) fail("call arguments are not a tuple");
  // A placeholder called (a __reduce__ chain through one): another one.
  if (fn.is(Value::Kind::Object)) return placeholder(fn.s + "(...)", args);
  if (!fn.is(Value::Kind::Global)) fail(std::string("cannot call a ") + fn.kind_name());
  if (fn.inert) return placeholder(fn.s, args);
  if (fn.names_storage) fail("storage '" + fn.s + "' cannot be constructed directly");
  if (fn.dtype) fail("refusing to call dtype '" + fn.s + "'");
  const Callable* c = find_callable(fn.s);
  if (!c) fail("refusing to call '" + fn.s + "'");
  if (!c->build) fail("refusing to construct '" + fn.s + "'");
  return (this->*c->build)(args);
}

// What calling or instantiating a global outside the allowlist builds: an
// Object naming it, with its arguments, or for a few well-known names the
// plain value it stands for. Nothing is called.
Ref Machine::placeholder(const std::string& name, const Value& args) {
  const auto& a = args.items;
  if (name == "collections.defaultdict") return make(Value::Kind::Dict);  // its default factory does not matter
  if (name == "_codecs.encode" && a.size() == 2 && a[0]->is(Value::Kind::Str) && a[1]->is(Value::Kind::Str) &&
      (a[1]->s == "latin1" || a[1]->s == "latin-1")) {
    // Python 3 bytes in a protocol-2 pickle: text of code points 0-255
    // (UTF-8 here), one byte each.
    Ref b = make(Value::Kind::Bytes);
    const std::string& t = a[0]->s;
    for (size_t k = 0; k < t.size(); ++k) {
      const uint8_t c = uint8_t(t[k]);
      if (c < 0x80) {
        b->s += char(c);
      } else if ((c == 0xc2 || c == 0xc3) && k + 1 < t.size()) {
        b->s += char(((c & 0x03) << 6) | (uint8_t(t[++k]) & 0x3f));
      } else {
        fail("_codecs.encode: text outside latin-1");
      }
    }
    return b;
  }
  if (name == "numpy.core.multiarray.scalar" || name == "numpy._core.multiarray.scalar") {
    if (Ref v = numpy_scalar(args)) return v;
  }
  if (name == "builtins.bytearray" && !a.empty() &&
      (a[0]->is(Value::Kind::Bytes) || a[0]->is(Value::Kind::Str))) {
    Ref b = make(Value::Kind::Bytes);
    b->s = a[0]->s;
    b->tag = "bytearray";
    return b;
  }
  if (name == "builtins.complex" && a.size() == 2 && a[0]->is(Value::Kind::Float) && a[1]->is(Value::Kind::Float)) {
    Ref c = make(Value::Kind::Str);
    char buf[80];
    std::snprintf(buf, sizeof buf, "(%.17g%+.17gj)", a[0]->f, a[1]->f);
    c->s = buf;
    c->tag = "complex";
    return c;
  }
  // torch.__version__ (a str subclass) as torch 1.10 and later pickle it.
  if (name == "torch.torch_version.TorchVersion" && a.size() == 1 && a[0]->is(Value::Kind::Str)) {
    Ref v = make(Value::Kind::Str);
    v->s = a[0]->s;
    v->tag = name;
    return v;
  }
  // A torchvision weights enum member (ResNet50_Weights.IMAGENET1K_V2):
  // pickled as getattr(cls, name) (Python 3.11's Enum), named by its
  // member name, never looked up; or as cls(value), its value a Weights
  // record, named by its url.
  auto weights_enum = [](const std::string& n) {
    return n.rfind("torchvision.models.", 0) == 0 && n.size() > 8 && n.compare(n.size() - 8, 8, "_Weights") == 0;
  };
  if (name == "builtins.getattr" && a.size() == 2 && a[0]->is(Value::Kind::Global) && weights_enum(a[0]->s) &&
      a[1]->is(Value::Kind::Str)) {
    Ref v = make(Value::Kind::Str);
    v->s = a[1]->s;
    v->tag = a[0]->s;
    return v;
  }
  if (weights_enum(name) && a.size() == 1 && a[0]->is(Value::Kind::Object) && a[0]->state &&
      a[0]->state->is(Value::Kind::Dict)) {
    for (const auto& [k, val] : a[0]->state->dict)
      if (k->is(Value::Kind::Str) && k->s == "url" && val->is(Value::Kind::Str)) {
        Ref v = make(Value::Kind::Str);
        v->s = val->s;
        v->tag = name;
        return v;
      }
  }
  Ref o = make(Value::Kind::Object);
  o->s = name;
  // numpy arrays: _reconstruct(ndarray, (0,), b'b') + BUILD (version, shape,
  // dtype, fortran order, data); described by shape and dtype.
  if (name == "numpy.core.multiarray._reconstruct" || name == "numpy._core.multiarray._reconstruct") {
    o->s = "numpy.ndarray";
    return o;
  }
  // copyreg._reconstructor(cls, base, state): protocol 0/1's form of an
  // instance of cls.
  if (name == "copyreg._reconstructor" && a.size() == 3 && a[0]->is(Value::Kind::Global)) {
    o->s = a[0]->s;
    if (!a[2]->is(Value::Kind::None)) {
      adopt(*o, a[2]);
      o->state = a[2];
    }
    return o;
  }
  for (const auto& it : a) adopt(*o, it);
  o->items = a;
  return o;
}

// numpy.core.multiarray.scalar(dtype, bytes): a numpy scalar of a plain
// numeric dtype, decoded from its bytes; nullptr when it is anything else.
Ref Machine::numpy_scalar(const Value& args) {
  if (args.items.size() != 2) return nullptr;
  const Value& dt = *args.items[0];
  const Value& data = *args.items[1];
  if (!dt.is(Value::Kind::Object) || dt.s != "numpy.dtype" || dt.items.empty() || !dt.items[0]->is(Value::Kind::Str) ||
      !data.is(Value::Kind::Bytes))
    return nullptr;
  const std::string& code = dt.items[0]->s;  // "f8", "i8", "b1", ...
  bool big = false;
  if (dt.state && dt.state->is(Value::Kind::Tuple) && dt.state->items.size() > 1 &&
      dt.state->items[1]->is(Value::Kind::Str))
    big = dt.state->items[1]->s == ">";
  if (code.size() < 2 || code.size() > 3) return nullptr;
  const char k = code[0];
  const int size = std::atoi(code.c_str() + 1);
  if (size_t(size) != data.s.size() || (k != 'f' && k != 'i' && k != 'u' && k != 'b') ||
      (size != 1 && size != 2 && size != 4 && size != 8))
    return nullptr;
  const uint64_t u = load_unsigned(reinterpret_cast<const uint8_t*>(data.s.data()), size, big);
  Ref v;
  if (k == 'f') {
    v = make(Value::Kind::Float);
    if (size == 8) {
      std::memcpy(&v->f, &u, 8);
    } else if (size == 4) {
      float f;
      const uint32_t w = uint32_t(u);
      std::memcpy(&f, &w, 4);
      v->f = f;
    } else if (size == 2) {
      v->f = float(c10::Half(uint16_t(u), c10::Half::from_bits()));
    } else {
      return nullptr;
    }
    v->tag = "numpy.float" + std::to_string(size * 8);
  } else if (k == 'b') {
    v = make(Value::Kind::Bool);
    v->b = u != 0;
    v->tag = "numpy.bool_";
  } else {
    v = make(Value::Kind::Int);
    const int bits = size * 8;
    v->i = k == 'i' && bits < 64 && (u >> (bits - 1)) ? int64_t(u | (~uint64_t(0) << bits)) : int64_t(u);
    v->tag = std::string(k == 'i' ? "numpy.int" : "numpy.uint") + std::to_string(bits);
  }
  return v;
}

// The interpreter loop: framing and stack marks here, each family of
// opcodes in its own function (false: not one of that family).
Ref Machine::run() {
  size_t ops = 0;
  while (true) {
    if (++ops > (size_t(1) << 32)) fail("too many operations");
    const uint8_t op = in_.u8();
    switch (op) {
      case PROTO: {
        uint8_t proto = in_.u8();
        if (proto > 5) fail("unsupported pickle protocol " + std::to_string(proto));
        proto_ = proto;
        continue;
      }
      case FRAME: in_.u64(); continue;  // the whole stream is in memory
      case STOP: return pop();
      case MARK: marks_.push_back(stack_.size()); continue;
      case POP: pop(); continue;
      case POP_MARK: pop_mark(); continue;
      case DUP: push(top()); continue;
      default: break;
    }
    if (scalar_op(op) || collection_op(op) || memo_op(op) || object_op(op)) continue;
    char buf[8];
    std::snprintf(buf, sizeof buf, "0x%02x", op);
    fail(std::string("unsupported pickle opcode ") + buf);
  }
}

// Literals: None, booleans, integers, floats, text and bytes.
bool Machine::scalar_op(uint8_t op) {
  switch (op) {
    case NONE: push(make(Value::Kind::None)); break;
    case NEWTRUE: case NEWFALSE: {
      Ref v = make(Value::Kind::Bool);
      v->b = op == NEWTRUE;
      push(v);
      break;
    }
    case BININT: push(make_int(in_.i32())); break;
    case BININT1: push(make_int(in_.u8())); break;
    case BININT2: push(make_int(in_.u16())); break;
    case LONG1: {
      // Wider integers (the legacy format's magic number) keep their
      // low 64 bits: nothing we read needs more.
      uint8_t n = in_.u8();
      const uint8_t* p = in_.take(n);
      uint64_t u = 0;
      for (int k = 0; k < n && k < 8; ++k) u |= uint64_t(p[k]) << (8 * k);
      if (n > 0 && n < 8 && (p[n - 1] & 0x80)) u |= ~uint64_t(0) << (8 * n);
      push(make_int(int64_t(u)));
      break;
    }
    case INT: {  // text; "01"/"00" are booleans
      std::string s = in_.line();
      Ref v;
      if (s == "01" || s == "00") {
        v = make(Value::Kind::Bool);
        v->b = s == "01";
      } else {
        try {
          v = make_int(std::stoll(s));
        } catch (...) {
          fail("bad INT literal");
        }
      }
      push(v);
      break;
    }
    case LONG: {  // text
      std::string s = in_.line();
      if (!s.empty() && s.back() == 'L') s.pop_back();
      try {
        push(make_int(std::stoll(s)));
      } catch (...) {
        fail("bad LONG literal");
      }
      break;
    }
    case BINFLOAT: {  // big-endian
      const uint8_t* p = in_.take(8);
      uint64_t u = 0;
      for (int k = 0; k < 8; ++k) u = (u << 8) | p[k];
      Ref v = make(Value::Kind::Float);
      std::memcpy(&v->f, &u, 8);
      push(v);
      break;
    }
    case BINUNICODE: push(make_str(in_.str(in_.u32()))); break;
    case SHORT_BINUNICODE: push(make_str(in_.str(in_.u8()))); break;
    case BINUNICODE8: push(make_str(in_.str(in_.u64()))); break;
    case BINSTRING: push(make_str(in_.str(in_.u32()))); break;
    case SHORT_BINSTRING: push(make_str(in_.str(in_.u8()))); break;
    case BINBYTES: case SHORT_BINBYTES: case BINBYTES8: {
      uint64_t n = op == BINBYTES ? in_.u32() : op == SHORT_BINBYTES ? in_.u8() : in_.u64();
      Ref v = make(Value::Kind::Bytes);
      v->s = in_.str(n);
      push(v);
      break;
    }
    default: return false;
  }
  return true;
}

// Lists, tuples, dicts and sets, and the items added to them.
bool Machine::collection_op(uint8_t op) {
  switch (op) {
    case EMPTY_LIST: push(make(Value::Kind::List)); break;
    case EMPTY_DICT: push(make(Value::Kind::Dict)); break;
    case EMPTY_TUPLE: push(make(Value::Kind::Tuple)); break;
    case EMPTY_SET: push(make(Value::Kind::List)); break;  // a set, read as a list
    case LIST: push(make_seq(Value::Kind::List, pop_mark())); break;
    case TUPLE: push(make_seq(Value::Kind::Tuple, pop_mark())); break;
    case TUPLE1: push(make_seq(Value::Kind::Tuple, {pop()})); break;
    case TUPLE2: {
      Ref b = pop(), a = pop();
      push(make_seq(Value::Kind::Tuple, {a, b}));
      break;
    }
    case TUPLE3: {
      Ref c = pop(), b = pop(), a = pop();
      push(make_seq(Value::Kind::Tuple, {a, b, c}));
      break;
    }
    case DICT: {
      auto kv = pop_mark();
      Ref d = make(Value::Kind::Dict);
      set_items(*d, kv);
      push(d);
      break;
    }
    case SETITEM: {
      Ref v = pop(), k = pop();
      std::vector<Ref> kv{k, v};
      set_items(*top(), kv);
      break;
    }
    case SETITEMS: {
      auto kv = pop_mark();
      set_items(*top(), kv);
      break;
    }
    case APPEND: {
      std::vector<Ref> one{pop()};
      append_items(*top(), one);
      break;
    }
    case APPENDS: case ADDITEMS: {
      auto items = pop_mark();
      append_items(*top(), items);
      break;
    }
    default: return false;
  }
  return true;
}

// The memo: values stored by index and fetched again.
bool Machine::memo_op(uint8_t op) {
  switch (op) {
    case BINPUT: memo_put(in_.u8()); break;
    case LONG_BINPUT: memo_put(in_.u32()); break;
    case MEMOIZE: memo_put(memo_.size()); break;
    case PUT: {
      std::string s = in_.line();
      try {
        memo_put(std::stoull(s));
      } catch (const ModelError&) {
        throw;
      } catch (...) {
        fail("bad PUT index");
      }
      break;
    }
    case BINGET: push(memo_get(in_.u8())); break;
    case LONG_BINGET: push(memo_get(in_.u32())); break;
    case GET: {
      std::string s = in_.line();
      try {
        push(memo_get(std::stoull(s)));
      } catch (const ModelError&) {
        throw;
      } catch (...) {
        fail("bad GET index");
      }
      break;
    }
    default: return false;
  }
  return true;
}

// Globals, calls, instances, their state, and persistent ids (tensors' storages).
bool Machine::object_op(uint8_t op) {
  switch (op) {
    case GLOBAL: {
      std::string module = in_.line();
      std::string name = in_.line();
      push(global(module, name));
      break;
    }
    case STACK_GLOBAL: {
      Ref name = pop(), module = pop();
      push(global(as_str(*module, "global module"), as_str(*name, "global name")));
      break;
    }
    case REDUCE: {
      Ref args = pop(), fn = pop();
      push(call(*fn, *args));
      break;
    }
    case NEWOBJ: case NEWOBJ_EX: {  // cls.__new__(cls, *args): an OrderedDict or a placeholder
      if (op == NEWOBJ_EX) pop();  // keyword arguments: not kept
      Ref args = pop(), cls = pop();
      if (cls->is(Value::Kind::Global) && cls->s == "collections.OrderedDict") {
        push(make(Value::Kind::Dict));
        break;
      }
      if (cls->is(Value::Kind::Global) && cls->inert) {
        if (!args->is(Value::Kind::Tuple)) fail("NEWOBJ arguments are not a tuple");
        push(placeholder(cls->s, *args));
        break;
      }
      fail("refusing to instantiate '" + (cls->is(Value::Kind::Global) ? cls->s : std::string("?")) + "'");
    }
    case BUILD: {  // an object's state: kept on placeholders, ignored on dicts and tensors
      Ref state = pop();
      Value& obj = *top();
      if (obj.is(Value::Kind::Dict) || obj.is(Value::Kind::Tensor)) break;  // e.g. OrderedDict._metadata
      if (obj.is(Value::Kind::Object)) {
        adopt(obj, state);
        obj.state = state;
        break;
      }
      fail(std::string("BUILD on a ") + obj.kind_name());
    }
    case BINPERSID: {
      Ref pid = pop();
      if (!pl_) fail("persistent id in a stream that has none");
      push(pl_(*pid));
      break;
    }
    default: return false;
  }
  return true;
}

// ------------------------------------------------------------ decoding

// float8 formats to float32, exactly (every value is representable), as a
// table of the 256 bit patterns. `fn`: no infinities, NaN only where every
// exponent and mantissa bit is set; `fnuz`: no infinities and no negative
// zero, NaN is 0x80; e8m0: an unsigned power of two, 0xff is NaN.
struct Float8Table {
  float v[256];
  Float8Table(Decode d) {
    const int mbits = d == Decode::Float8E4M3FN || d == Decode::Float8E4M3FNUZ ? 3 : 2;
    const int ebits = 7 - mbits;
    const int bias = d == Decode::Float8E4M3FN ? 7 : d == Decode::Float8E4M3FNUZ ? 8 : d == Decode::Float8E5M2 ? 15 : 16;
    const float nan = std::numeric_limits<float>::quiet_NaN();
    for (int b = 0; b < 256; ++b) {
      if (d == Decode::Float8E8M0FNU) {
        v[b] = b == 0xff ? nan : std::ldexp(1.0f, b - 127);
        continue;
      }
      const int e = (b >> mbits) & ((1 << ebits) - 1), m = b & ((1 << mbits) - 1);
      const bool neg = b & 0x80;
      float x = e == 0 ? std::ldexp(float(m), 1 - bias - mbits) : std::ldexp(float((1 << mbits) | m), e - bias - mbits);
      const bool top = e == (1 << ebits) - 1;
      if (d == Decode::Float8E5M2 && top) x = m == 0 ? std::numeric_limits<float>::infinity() : nan;
      if (d == Decode::Float8E4M3FN && top && m == (1 << mbits) - 1) x = nan;
      if ((d == Decode::Float8E4M3FNUZ || d == Decode::Float8E5M2FNUZ) && b == 0x80) {
        v[b] = nan;
        continue;
      }
      v[b] = neg ? -x : x;
    }
  }
};

const float* float8_table(Decode d) {
  static const Float8Table e4m3fn(Decode::Float8E4M3FN), e4m3fnuz(Decode::Float8E4M3FNUZ),
      e5m2(Decode::Float8E5M2), e5m2fnuz(Decode::Float8E5M2FNUZ), e8m0(Decode::Float8E8M0FNU);
  switch (d) {
    case Decode::Float8E4M3FN: return e4m3fn.v;
    case Decode::Float8E4M3FNUZ: return e4m3fnuz.v;
    case Decode::Float8E5M2: return e5m2.v;
    case Decode::Float8E5M2FNUZ: return e5m2fnuz.v;
    default: return e8m0.v;
  }
}

uint64_t load_unsigned(const uint8_t* p, int size, bool big_endian) {
  uint64_t u = 0;
  for (int k = 0; k < size; ++k) u |= uint64_t(p[big_endian ? size - 1 - k : k]) << (8 * k);
  return u;
}

// The whole storage as a 1-D tensor of `t`'s in-memory type: the file's
// bytes themselves where they can be used as they are, else a converted
// copy, made once per (dtype, negate) and kept with the storage.
at::Tensor storage_tensor(const Storage& s, const DType& t, bool negate) {
  const int64_t count = s.nbytes / t.size;
  const uint8_t* raw = s.bytes.data_ptr<uint8_t>();
  if (t.decode == Decode::Native && (!s.big_endian || t.swap == 1) && !negate) {
    at::Tensor keep = s.bytes;  // keeps the file buffer alive
    return at::from_blob(const_cast<uint8_t*>(raw), {count}, [keep](void*) mutable { keep.reset(); },
                         at::TensorOptions().dtype(t.type));
  }
  const auto key = std::make_pair(&t, negate);
  for (const auto& [k, tensor] : s.decoded)
    if (k == key) return tensor;
  at::Tensor out = at::empty({count}, at::TensorOptions().dtype(t.type));
  switch (t.decode) {
    case Decode::Native: {
      uint8_t* o = static_cast<uint8_t*>(out.data_ptr());
      std::memcpy(o, raw, size_t(count) * t.size);
      if (s.big_endian)
        for (int64_t k = 0; k < count * t.size / t.swap; ++k) std::reverse(o + k * t.swap, o + (k + 1) * t.swap);
      break;
    }
    case Decode::UInt16: case Decode::UInt32: case Decode::UInt64: {
      int64_t* o = out.data_ptr<int64_t>();  // uint64 above 2^63-1 turns negative: refused by materialize()
      for (int64_t k = 0; k < count; ++k) o[k] = int64_t(load_unsigned(raw + k * t.size, t.size, s.big_endian));
      break;
    }
    default: {
      const float* table = float8_table(t.decode);
      float* o = out.data_ptr<float>();
      for (int64_t k = 0; k < count; ++k) o[k] = table[raw[k]];
    }
  }
  if (negate) out.neg_();
  s.decoded.emplace_back(key, out);
  return out;
}

}  // namespace

const char* Value::kind_name() const {
  switch (kind) {
    case Kind::None: return "None";
    case Kind::Bool: return "bool";
    case Kind::Int: return "int";
    case Kind::Float: return "float";
    case Kind::Str: return "str";
    case Kind::Bytes: return "bytes";
    case Kind::Tuple: return "tuple";
    case Kind::List: return "list";
    case Kind::Dict: return "dict";
    case Kind::Tensor: return "tensor";
    case Kind::Storage: return "storage";
    case Kind::Global: return "global";
    case Kind::Object: return "object";
  }
  return "?";
}

bool is_placeholder(const Value& v) {
  return v.is(Value::Kind::Object) || (v.is(Value::Kind::Global) && v.inert);
}

std::string refusal(const Value& v, const std::string& role) {
  const bool named = v.is(Value::Kind::Object) || v.is(Value::Kind::Global);
  return "refusing to load global '" + (named ? v.s : std::string(v.kind_name())) + "' as " + role +
         ": only tensors may be there (nothing in the file is executed). If this file holds custom objects "
         "in place of weights, re-save it with torch.save(model.state_dict(), path)";
}

namespace {

void describe_into(const Value& v, std::string& out, size_t budget);

void describe_seq(const std::vector<Ref>& items, const char* open, const char* close, std::string& out,
                  size_t budget) {
  out += open;
  for (size_t k = 0; k < items.size(); ++k) {
    if (out.size() > budget) {
      out += "...";
      break;
    }
    if (k) out += ", ";
    describe_into(*items[k], out, budget);
  }
  out += close;
}

void describe_into(const Value& v, std::string& out, size_t budget) {
  if (out.size() > budget) {
    out += "...";
    return;
  }
  char buf[64];
  switch (v.kind) {
    case Value::Kind::None: out += "None"; return;
    case Value::Kind::Bool: out += v.b ? "True" : "False"; return;
    case Value::Kind::Int: out += std::to_string(v.i); return;
    case Value::Kind::Float:
      std::snprintf(buf, sizeof buf, "%.6g", v.f);
      out += buf;
      return;
    case Value::Kind::Str:
      if (v.tag == "complex") out += v.s;
      else out += "'" + v.s.substr(0, 80) + (v.s.size() > 80 ? "...'" : "'");
      return;
    case Value::Kind::Bytes: out += "<" + std::to_string(v.s.size()) + " bytes>"; return;
    case Value::Kind::Tuple: describe_seq(v.items, "(", v.items.size() == 1 ? ",)" : ")", out, budget); return;
    case Value::Kind::List: describe_seq(v.items, "[", "]", out, budget); return;
    case Value::Kind::Dict:
      out += "{";
      for (size_t k = 0; k < v.dict.size(); ++k) {
        if (out.size() > budget) {
          out += "...";
          break;
        }
        if (k) out += ", ";
        describe_into(*v.dict[k].first, out, budget);
        out += ": ";
        describe_into(*v.dict[k].second, out, budget);
      }
      out += "}";
      return;
    case Value::Kind::Tensor:
      out += "tensor [";
      for (size_t d = 0; d < v.view_sizes.size(); ++d) out += (d ? ", " : "") + std::to_string(v.view_sizes[d]);
      out += std::string("] ") + (v.dtype ? v.dtype->name : "?");
      return;
    case Value::Kind::Storage: out += "storage"; return;
    case Value::Kind::Global: out += v.s; return;
    case Value::Kind::Object:
      out += v.s;
      if (v.s == "numpy.ndarray" && v.state && v.state->is(Value::Kind::Tuple) && v.state->items.size() > 2) {
        out += " ";
        describe_into(*v.state->items[1], out, budget);  // the shape
        const Value& dt = *v.state->items[2];
        if (dt.is(Value::Kind::Object) && dt.s == "numpy.dtype" && !dt.items.empty() && dt.items[0]->is(Value::Kind::Str)) {
          const std::string& c = dt.items[0]->s;  // "f4": float32
          const std::map<char, std::string> kinds = {{'f', "float"}, {'i', "int"}, {'u', "uint"}, {'b', "bool"}};
          const auto k = c.empty() ? kinds.end() : kinds.find(c[0]);
          out += " " + (k == kinds.end() ? c : k->second + (c[0] == 'b' ? "" : std::to_string(8 * std::atoi(c.c_str() + 1))));
        }
        return;
      }
      // Keyword-style objects (argparse.Namespace, dataclasses): name(k=v, ...).
      if (v.items.empty() && v.state && v.state->is(Value::Kind::Dict)) {
        out += "(";
        size_t k = 0;
        for (const auto& [key, val] : v.state->dict) {
          if (out.size() > budget) {
            out += "...";
            break;
          }
          if (k++) out += ", ";
          out += key->is(Value::Kind::Str) ? key->s : std::string("?");
          out += "=";
          describe_into(*val, out, budget);
        }
        out += ")";
        return;
      }
      describe_seq(v.items, "(", ")", out, budget);
      return;
  }
}

}  // namespace

std::string describe(const Value& v, size_t budget) {
  std::string out = v.tag.empty() ? std::string() : v.tag + " = ";
  describe_into(v, out, budget);
  return out;
}


const at::Tensor& materialize(const Value& v, const std::string& what) {
  if (!v.is(Value::Kind::Tensor)) throw ModelError(what + ": expected a tensor, found " + v.kind_name());
  if (v.tensor.defined()) return v.tensor;
  const Storage& s = *v.storage;
  const DType& t = *v.dtype;
  if (t.decode == Decode::Refuse)
    throw ModelError(what + " has dtype torch." + t.name + ", which a classifier cannot use");
  if (v.negate && t.type == at::kBool) throw ModelError(what + " is a negated bool tensor");
  if (!s.bytes.defined()) throw ModelError("internal: tensor data not loaded");
  int64_t numel = 1;
  for (int64_t d : v.view_sizes) numel *= d;
  if (numel == 0) {
    v.tensor = at::empty(v.view_sizes, at::TensorOptions().dtype(t.type));
    return v.tensor;
  }
  at::Tensor view = storage_tensor(s, t, v.negate).as_strided(v.view_sizes, v.view_strides, v.view_offset);
  if (t.decode == Decode::UInt64 && view.lt(0).any().item<bool>())
    throw ModelError(what + " (torch.uint64) holds a value above 2^63-1, which int64 cannot hold");
  v.tensor = view;
  return v.tensor;
}

const DType* find_dtype(const std::string& name) {
  for (const auto& d : kDTypes)
    if (name == d.name) return &d;
  return nullptr;
}

std::string dtype_name(at::ScalarType t) {
  for (const auto& d : kDTypes)
    if (d.decode == Decode::Native && d.type == t) return d.name;
  return c10::toString(t);
}

Ref make_none() { return make(Value::Kind::None); }
Ref make_int(int64_t v) {
  Ref r = make(Value::Kind::Int);
  r->i = v;
  return r;
}
Ref make_str(std::string s) {
  Ref r = make(Value::Kind::Str);
  r->s = std::move(s);
  return r;
}

int64_t as_int(const Value& v, const char* what) {
  if (v.is(Value::Kind::Int)) return v.i;
  if (v.is(Value::Kind::Bool)) return v.b;
  throw ModelError(std::string(what) + " should be an int, found " + v.kind_name());
}

const std::string& as_str(const Value& v, const char* what) {
  if (v.is(Value::Kind::Str) || v.is(Value::Kind::Bytes)) return v.s;
  throw ModelError(std::string(what) + " should be a string, found " + v.kind_name());
}

Ref load(const uint8_t* data, size_t size, const PersistentLoad& persistent_load,
         const std::string& what, size_t* consumed) {
  auto graph = std::make_shared<Graph>();
  Budget budget;
  budget.limit = budget.left = kBudgetFloor + kBudgetPerByte * size;
  budget.what = what;
  budget.graph = graph.get();
  struct Scope {
    Budget* saved;
    explicit Scope(Budget* b) : saved(t_budget) { t_budget = b; }
    ~Scope() { t_budget = saved; }
  } scope(&budget);
  Machine m(data, size, persistent_load, what);
  Ref r = m.run();
  if (consumed) *consumed = m.pos();
  // The result shares the graph's lifetime: values taken from it stay
  // whole for as long as the result is held.
  return Ref(graph, r.get());
}

}  // namespace ptm::pickle
