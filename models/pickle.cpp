#include "pickle.h"

#include <ATen/ATen.h>

#include <unordered_map>

#include "bytes.h"

namespace ptm::pickle {

namespace {

constexpr int kMaxDepth = 200;

Ref make(Value::Kind k) {
  auto v = std::make_shared<Value>();
  v->kind = k;
  return v;
}

struct StorageType {
  const char* name;
  at::ScalarType dtype;
};

constexpr StorageType kStorageTypes[] = {
    {"FloatStorage", at::kFloat},   {"DoubleStorage", at::kDouble},
    {"HalfStorage", at::kHalf},     {"BFloat16Storage", at::kBFloat16},
    {"LongStorage", at::kLong},     {"IntStorage", at::kInt},
    {"ShortStorage", at::kShort},   {"CharStorage", at::kChar},
    {"ByteStorage", at::kByte},     {"BoolStorage", at::kBool},
    {"UntypedStorage", at::kByte},
};

// Everything a state dict or a plain training checkpoint needs. Calls are
// interpreted by `call_global` below; nothing is looked up dynamically.
constexpr const char* kAllowedCalls[] = {
    "collections.OrderedDict",
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_tensor",
    "torch._utils._rebuild_parameter",
    "torch._utils._rebuild_parameter_with_state",
    "torch.Size",
    "torch.device",
    "builtins.set",
    "builtins.frozenset",
    "torch._utils._rebuild_from_type_v2",
    "torch.jit._pickle.restore_type_tag",  // LibTorch's pickle_save: (value, "Dict[str, Tensor]")
};

// Classes that may appear as the target type of _rebuild_from_type_v2; they
// are never instantiated.
constexpr const char* kTensorTypes[] = {
    "torch._tensor.Tensor",
    "torch.Tensor",
    "torch.nn.parameter.Parameter",
};

bool tensor_type(const std::string& name) {
  for (const char* a : kTensorTypes)
    if (name == a) return true;
  return false;
}

bool allowed_call(const std::string& name) {
  for (const char* a : kAllowedCalls)
    if (name == a) return true;
  return false;
}

class Machine {
 public:
  Machine(const uint8_t* data, size_t size, const PersistentLoad& pl, std::string what)
      : in_(data, size, what), pl_(pl), what_(std::move(what)) {}

  Ref run();
  size_t pos() const { return in_.pos(); }

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
    if (!d.is(Value::Kind::Dict)) fail(std::string("SETITEM(S) on a ") + d.kind_name());
    for (size_t k = 0; k < kv.size(); k += 2) {
      adopt(d, kv[k]);
      adopt(d, kv[k + 1]);
      d.dict.emplace_back(kv[k], kv[k + 1]);
    }
  }
  void append_items(Value& l, std::vector<Ref>& items) {
    if (l.is(Value::Kind::List)) {
      for (auto& it : items) {
        adopt(l, it);
        l.items.push_back(it);
      }
    } else {
      fail(std::string("APPEND(S) on a ") + l.kind_name());
    }
  }

  Ref global(const std::string& module, const std::string& name);
  Ref call(const Value& fn, const Value& args);
  Ref rebuild_tensor(const Value& args);
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
};

Ref Machine::global(const std::string& module, const std::string& name) {
  std::string full = module + "." + name;
  Ref g = make(Value::Kind::Global);
  g->s = full;
  if (module == "torch") {
    for (const auto& st : kStorageTypes)
      if (name == st.name) {
        g->storage_dtype = st.dtype;
        return g;
      }
  }
  if (!allowed_call(full) && !tensor_type(full))
    fail("refusing to load global '" + full +
         "': only tensors and plain containers may be read from a checkpoint "
         "(nothing in the file is executed). If this file holds a whole pickled "
         "model or custom objects, re-save it with torch.save(model.state_dict(), path)");
  return g;
}

int64_t checked_dim(const Value& v, const char* what) {
  int64_t d = as_int(v, what);
  if (d < 0) throw ModelError(std::string(what) + " is negative");
  return d;
}

Ref Machine::rebuild_tensor(const Value& args) {
  if (!args.is(Value::Kind::Tuple) || args.items.size() < 4)
    fail("malformed tensor record");
  const Value& st = *args.items[0];
  if (!st.is(Value::Kind::Storage)) fail("tensor record without a storage");
  const Storage& storage = *st.storage;
  int64_t offset = checked_dim(*args.items[1], "tensor storage offset");
  const Value& size = *args.items[2];
  const Value& stride = *args.items[3];
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
  uint64_t end;
  if (numel > 0 && (add_overflows(extent, uint64_t(offset), &end) || end >= uint64_t(storage.numel)))
    fail("tensor reaches element " + std::to_string(extent + uint64_t(offset)) +
         " of a storage holding " + std::to_string(storage.numel));
  Ref r = make(Value::Kind::Tensor);
  r->storage = st.storage;
  r->view_offset = offset;
  r->view_sizes = std::move(sizes);
  r->view_strides = std::move(strides);
  return r;
}

Ref Machine::call(const Value& fn, const Value& args) {
  if (!fn.is(Value::Kind::Global)) fail(std::string("cannot call a ") + fn.kind_name());
  if (!args.is(Value::Kind::Tuple)) fail("call arguments are not a tuple");
  const std::string& name = fn.s;
  if (name == "collections.OrderedDict") {
    if (!args.items.empty()) fail("OrderedDict with arguments is not supported");
    return make(Value::Kind::Dict);
  }
  if (name == "torch._utils._rebuild_tensor_v2" || name == "torch._utils._rebuild_tensor") return rebuild_tensor(args);
  if (name == "torch._utils._rebuild_parameter" ||
      name == "torch._utils._rebuild_parameter_with_state") {
    if (args.items.empty() || !args.items[0]->is(Value::Kind::Tensor))
      fail("parameter record without a tensor");
    return args.items[0];  // requires_grad and hooks do not matter for weights
  }
  if (name == "torch._utils._rebuild_from_type_v2") {
    // (func, new_type, args, state): a tensor subclass wrapper around an
    // allowed rebuild function; the type must be a plain tensor type.
    if (args.items.size() < 3 || !args.items[1]->is(Value::Kind::Global) || !tensor_type(args.items[1]->s))
      fail("_rebuild_from_type_v2 with an unsupported type");
    const Value& inner = *args.items[0];
    if (!inner.is(Value::Kind::Global) || inner.s == name || !allowed_call(inner.s))
      fail("_rebuild_from_type_v2 with an unsupported function");
    return call(inner, *args.items[2]);
  }
  if (name == "torch.jit._pickle.restore_type_tag") {
    if (args.items.empty()) fail("restore_type_tag without a value");
    return args.items[0];  // the type tag only annotates the value
  }
  if (tensor_type(name)) fail("refusing to construct '" + name + "'");
  if (name == "torch.Size") {
    if (args.items.size() != 1) fail("torch.Size takes one argument");
    return args.items[0];
  }
  if (name == "torch.device") {
    Ref r = make(Value::Kind::Str);
    for (auto& a : args.items)
      if (a->is(Value::Kind::Str)) r->s += a->s;
    return r;
  }
  if (name == "builtins.set" || name == "builtins.frozenset") {
    Ref r = make(Value::Kind::List);
    if (!args.items.empty() && args.items[0]->is(Value::Kind::List)) r->items = args.items[0]->items;
    return r;
  }
  if (fn.storage_dtype != at::ScalarType::Undefined)
    fail("storage '" + name + "' cannot be constructed directly");
  fail("refusing to call '" + name + "'");
}

Ref Machine::run() {
  size_t ops = 0;
  while (true) {
    if (++ops > (size_t(1) << 32)) fail("too many operations");
    const uint8_t op = in_.u8();
    switch (op) {
      case 0x80: {  // PROTO
        uint8_t proto = in_.u8();
        if (proto > 5) fail("unsupported pickle protocol " + std::to_string(proto));
        break;
      }
      case 0x95: in_.u64(); break;  // FRAME: the whole stream is in memory
      case '.': {                   // STOP
        Ref r = pop();
        return r;
      }
      case '(': marks_.push_back(stack_.size()); break;
      case '0': pop(); break;
      case '1': pop_mark(); break;
      case '2': push(top()); break;
      case 'N': push(make(Value::Kind::None)); break;
      case 0x88: case 0x89: {
        Ref v = make(Value::Kind::Bool);
        v->b = op == 0x88;
        push(v);
        break;
      }
      case 'J': push(make_int(in_.i32())); break;
      case 'K': push(make_int(in_.u8())); break;
      case 'M': push(make_int(in_.u16())); break;
      case 0x8a: {  // LONG1
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
      case 'I': {  // INT (text); "01"/"00" are booleans
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
      case 'L': {  // LONG (text)
        std::string s = in_.line();
        if (!s.empty() && s.back() == 'L') s.pop_back();
        try {
          push(make_int(std::stoll(s)));
        } catch (...) {
          fail("bad LONG literal");
        }
        break;
      }
      case 'G': {  // BINFLOAT, big-endian
        const uint8_t* p = in_.take(8);
        uint64_t u = 0;
        for (int k = 0; k < 8; ++k) u = (u << 8) | p[k];
        Ref v = make(Value::Kind::Float);
        std::memcpy(&v->f, &u, 8);
        push(v);
        break;
      }
      case 'X': push(make_str(in_.str(in_.u32()))); break;
      case 0x8c: push(make_str(in_.str(in_.u8()))); break;
      case 0x8d: push(make_str(in_.str(in_.u64()))); break;
      case 'T': push(make_str(in_.str(in_.u32()))); break;  // BINSTRING
      case 'U': push(make_str(in_.str(in_.u8()))); break;   // SHORT_BINSTRING
      case 'B': case 'C': case 0x8e: {                       // BIN(BYTES|SHORT|8)
        uint64_t n = op == 'B' ? in_.u32() : op == 'C' ? in_.u8() : in_.u64();
        Ref v = make(Value::Kind::Bytes);
        v->s = in_.str(n);
        push(v);
        break;
      }
      case ']': push(make(Value::Kind::List)); break;
      case '}': push(make(Value::Kind::Dict)); break;
      case ')': push(make(Value::Kind::Tuple)); break;
      case 0x8f: push(make(Value::Kind::List)); break;  // EMPTY_SET as a list
      case 'l': push(make_seq(Value::Kind::List, pop_mark())); break;
      case 't': push(make_seq(Value::Kind::Tuple, pop_mark())); break;
      case 0x85: push(make_seq(Value::Kind::Tuple, {pop()})); break;
      case 0x86: {
        Ref b = pop(), a = pop();
        push(make_seq(Value::Kind::Tuple, {a, b}));
        break;
      }
      case 0x87: {
        Ref c = pop(), b = pop(), a = pop();
        push(make_seq(Value::Kind::Tuple, {a, b, c}));
        break;
      }
      case 'd': {
        auto kv = pop_mark();
        Ref d = make(Value::Kind::Dict);
        set_items(*d, kv);
        push(d);
        break;
      }
      case 's': {
        Ref v = pop(), k = pop();
        std::vector<Ref> kv{k, v};
        set_items(*top(), kv);
        break;
      }
      case 'u': {
        auto kv = pop_mark();
        set_items(*top(), kv);
        break;
      }
      case 'a': {
        std::vector<Ref> one{pop()};
        append_items(*top(), one);
        break;
      }
      case 'e': case 0x90: {  // APPENDS, ADDITEMS
        auto items = pop_mark();
        append_items(*top(), items);
        break;
      }
      case 'q': memo_put(in_.u8()); break;
      case 'r': memo_put(in_.u32()); break;
      case 0x94: memo_put(memo_.size()); break;
      case 'p': {
        std::string s = in_.line();
        try {
          memo_put(std::stoull(s));
        } catch (...) {
          fail("bad PUT index");
        }
        break;
      }
      case 'h': push(memo_get(in_.u8())); break;
      case 'j': push(memo_get(in_.u32())); break;
      case 'g': {
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
      case 'c': {  // GLOBAL
        std::string module = in_.line();
        std::string name = in_.line();
        push(global(module, name));
        break;
      }
      case 0x93: {  // STACK_GLOBAL
        Ref name = pop(), module = pop();
        push(global(as_str(*module, "global module"), as_str(*name, "global name")));
        break;
      }
      case 'R': {  // REDUCE
        Ref args = pop(), fn = pop();
        push(call(*fn, *args));
        break;
      }
      case 0x81: {  // NEWOBJ: no class may be instantiated
        Ref args = pop(), cls = pop();
        if (cls->is(Value::Kind::Global) && cls->s == "collections.OrderedDict") {
          push(make(Value::Kind::Dict));
          break;
        }
        fail("refusing to instantiate '" + (cls->is(Value::Kind::Global) ? cls->s : std::string("?")) + "'");
      }
      case 'b': {  // BUILD: state for an object made by an allowed call
        Ref state = pop();
        Value& obj = *top();
        if (obj.is(Value::Kind::Dict) || obj.is(Value::Kind::Tensor)) break;  // e.g. OrderedDict._metadata
        fail(std::string("BUILD on a ") + obj.kind_name());
      }
      case 'Q': {  // BINPERSID
        Ref pid = pop();
        if (!pl_) fail("persistent id in a stream that has none");
        push(pl_(*pid));
        break;
      }
      default: {
        char buf[8];
        std::snprintf(buf, sizeof buf, "0x%02x", op);
        fail(std::string("unsupported pickle opcode ") + buf);
      }
    }
  }
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
  }
  return "?";
}

const at::Tensor& materialize(const Value& v) {
  if (!v.is(Value::Kind::Tensor)) throw ModelError(std::string("expected a tensor, found ") + v.kind_name());
  if (v.tensor.defined()) return v.tensor;
  const Storage& s = *v.storage;
  if (!s.bytes.defined()) throw ModelError("internal: tensor data not loaded");
  at::Tensor bytes = s.bytes;  // keeps the file buffer alive
  int64_t numel = 1;
  for (int64_t d : v.view_sizes) numel *= d;
  uint8_t* base = bytes.data_ptr<uint8_t>() + (numel ? size_t(v.view_offset) * c10::elementSize(s.dtype) : 0);
  v.tensor = at::from_blob(base, v.view_sizes, v.view_strides,
                           [bytes](void*) mutable { bytes.reset(); },
                           at::TensorOptions().dtype(s.dtype));
  return v.tensor;
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
  Machine m(data, size, persistent_load, what);
  Ref r = m.run();
  if (consumed) *consumed = m.pos();
  return r;
}

}  // namespace ptm::pickle
