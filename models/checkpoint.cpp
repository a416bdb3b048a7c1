#include "checkpoint.h"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <map>
#include <regex>
#include <unordered_map>
#include <unordered_set>

#include "bytes.h"
#include "labels.h"
#include "pickle.h"
#include "zip.h"

namespace ptm {

using pickle::Ref;
using pickle::Value;

const char* format_name(FileFormat f) {
  switch (f) {
    case FileFormat::TorchZip: return "pytorch-zip";
    case FileFormat::TorchLegacy: return "pytorch-legacy";
    case FileFormat::SafeTensors: return "safetensors";
    case FileFormat::TorchScript: return "torchscript";
    case FileFormat::AOTInductor: return "aotinductor-package";
  }
  return "?";
}

const at::Tensor* StateDict::find(const std::string& name) const {
  for (const auto& e : entries)
    if (e.name == name) return &e.tensor;
  return nullptr;
}

int64_t StateDict::nbytes() const {
  int64_t n = 0;
  for (const auto& e : entries) n += e.tensor.nbytes();
  return n;
}

int64_t StateDict::numel() const {
  int64_t n = 0;
  for (const auto& e : entries) n += e.tensor.numel();
  return n;
}

namespace {

// Pickle protocol 2 header of the legacy format's magic number
// (0x1950a86a20f9469cfc6c as LONG1).
const std::string kLegacyMagic("\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19", 14);


// ---------------------------------------------------------------- unwrap

bool is_tensor_dict(const Value& v) {
  if (!v.is(Value::Kind::Dict) || v.dict.empty()) return false;
  size_t tensors = 0;
  for (const auto& [k, val] : v.dict) {
    if (!k->is(Value::Kind::Str)) return false;
    if (val->is(Value::Kind::Tensor)) ++tensors;
  }
  return tensors * 2 > v.dict.size();
}

const Value* dict_get(const Value& d, const std::string& key) {
  for (const auto& [k, val] : d.dict)
    if (k->is(Value::Kind::Str) && k->s == key) return val.get();
  return nullptr;
}

const char* const kWrapperKeys[] = {"state_dict", "model_state_dict", "model", "net",
                                    "network", "state_dict_ema", "model_ema", "ema",
                                    "module", "weights", "params"};

// Exponential-moving-average copies of the weights, as training tools name them.
const char* const kEmaKeys[] = {"state_dict_ema", "model_ema", "ema"};

bool is_ema_key(const std::string& k) {
  for (const char* e : kEmaKeys)
    if (k == e) return true;
  return false;
}

std::string describe_keys(const Value& d) {
  std::string s;
  size_t k = 0;
  for (const auto& [key, val] : d.dict) {
    if (k++ == 12) {
      s += ", ...";
      break;
    }
    if (!s.empty()) s += ", ";
    s += key->is(Value::Kind::Str) ? "'" + key->s + "'" : std::string("<") + key->kind_name() + ">";
    s += " (" + (pickle::is_placeholder(*val) ? pickle::describe(*val, 60) : std::string(val->kind_name())) + ")";
  }
  return s;
}

// A pickled torch.nn.Module (torch.save(model)): an Object whose BUILD state
// has the module's `_parameters`, `_buffers` and `_modules`.
bool is_module(const Value& v) {
  return v.is(Value::Kind::Object) && v.state && v.state->is(Value::Kind::Dict) &&
         dict_get(*v.state, "_parameters") && dict_get(*v.state, "_modules");
}

// Its state dict, as module.state_dict() orders it: each module's
// parameters, then its persistent buffers, then its submodules'.
void flatten_module(const Value& m, const std::string& prefix, Value& out, const std::string& path, int depth) {
  if (depth > 64) throw ModelError("'" + path + "': modules nested deeper than 64");
  const Value& st = *m.state;
  std::unordered_set<std::string> transient;
  if (const Value* np = dict_get(st, "_non_persistent_buffers_set"))
    for (const auto& n : np->items)
      if (n->is(Value::Kind::Str)) transient.insert(n->s);
  auto take = [&](const char* field, bool buffers) {
    const Value* d = dict_get(st, field);
    if (!d || !d->is(Value::Kind::Dict)) return;
    for (const auto& [k, v] : d->dict) {
      if (!k->is(Value::Kind::Str) || v->is(Value::Kind::None) || (buffers && transient.count(k->s))) continue;
      if (!v->is(Value::Kind::Tensor))
        throw ModelError("'" + path + "': " +
                         (pickle::is_placeholder(*v) ? pickle::refusal(*v, "the tensor '" + prefix + k->s + "'")
                                                     : "'" + prefix + k->s + "' is a " + v->kind_name() + ", not a tensor"));
      out.dict.emplace_back(pickle::make_str(prefix + k->s), v);
    }
  };
  take("_parameters", false);
  take("_buffers", true);
  const Value* subs = dict_get(st, "_modules");
  if (!subs || !subs->is(Value::Kind::Dict)) return;
  for (const auto& [k, v] : subs->dict) {
    if (!k->is(Value::Kind::Str) || v->is(Value::Kind::None)) continue;
    if (!is_module(*v))
      throw ModelError("'" + path + "': submodule '" + prefix + k->s + "' is a " + pickle::describe(*v, 60) +
                       ", not a module");
    flatten_module(*v, prefix + k->s + ".", out, path, depth + 1);
  }
}

// The module a pickled object stands for: itself, or the module a wrapper
// is made around (torch.compile's OptimizedModule pickles as
// OptimizedModule(model, context)); nullptr when it is neither.
const Value* module_of(const Value& v) {
  if (is_module(v)) return &v;
  if (v.is(Value::Kind::Object) && !v.items.empty() && is_module(*v.items[0])) return v.items[0].get();
  return nullptr;
}

// The state dict of a whole pickled model, kept alive in `keep`.
const Value& module_state(const Value& wrapper, Checkpoint& ck, std::vector<Ref>& keep) {
  const Value& m = *module_of(wrapper);
  Ref d = std::make_shared<Value>();
  d->kind = Value::Kind::Dict;
  flatten_module(m, "", *d, ck.path, 0);
  keep.push_back(d);
  ck.module_class = m.s;
  ck.notes.push_back("a whole pickled model (" + wrapper.s + (&m != &wrapper ? " around " + m.s : std::string()) +
                     "): its weights read from the module tree, nothing from the file run");
  return *d;
}

const Value& unwrap(const Value& root, const ReadOptions& opt, Checkpoint& ck, std::vector<Ref>& keep) {
  const Value* cur = &root;
  for (int level = 0; level < 4; ++level) {
    if (module_of(*cur)) cur = &module_state(*cur, ck, keep);
    if (!cur->is(Value::Kind::Dict))
      throw ModelError("'" + ck.path + "' holds a " +
                       (pickle::is_placeholder(*cur) ? pickle::describe(*cur, 80) : std::string(cur->kind_name())) +
                       ", not a state dict (a dict of tensors)");
    if (is_tensor_dict(*cur) && (opt.wrapper_key.empty() || level > 0)) return *cur;
    const Value* next = nullptr;
    std::string used;
    if (!opt.wrapper_key.empty() && level == 0) {
      next = dict_get(*cur, opt.wrapper_key);
      if (!next)
        throw ModelError("'" + ck.path + "' has no entry '" + opt.wrapper_key +
                         "'; its top level holds " + describe_keys(*cur));
      used = opt.wrapper_key;
    } else {
      auto usable = [&](const char* k) {
        const Value* v = dict_get(*cur, k);
        return v && ((v->is(Value::Kind::Dict) && !v->dict.empty()) || module_of(*v)) ? v : nullptr;
      };
      for (const char* k : kWrapperKeys) {
        if (const Value* v = usable(k)) {
          next = v;
          used = k;
          break;
        }
      }
      // A training checkpoint with both (timm's CheckpointSaver, YOLO-style
      // {'model', 'ema'}): the EMA weights, usually the better ones, as
      // timm's own loader takes them; the other set is named in a note.
      if (next && !is_ema_key(used))
        for (const char* k : kEmaKeys)
          if (const Value* v = usable(k)) {
            ck.notes.push_back("took the EMA weights '" + std::string(k) + "' (usually the better ones), not '" +
                               used + "': checkpoint-key=" + used + " (ptm-inspect --key " + used +
                               ") takes those");
            next = v;
            used = k;
            break;
          }
    }
    if (!next && (opt.wrapper_key.empty() || level > 0)) {
      // Keys no training tool uses ({'run': {'weights': ...}}): the one
      // entry that holds a dict or a module, when there is only one.
      const Value* only = nullptr;
      size_t dicts = 0;
      for (const auto& [k, v] : cur->dict)
        if (k->is(Value::Kind::Str) && ((v->is(Value::Kind::Dict) && !v->dict.empty()) || module_of(*v))) {
          ++dicts;
          only = v.get();
          used = k->s;
        }
      if (dicts == 1) {
        next = only;
        ck.notes.push_back("weights looked for under '" + used + "', the only entry holding a dict");
      }
    }
    if (!next)
      throw ModelError("'" + ck.path + "' holds no state dict" + (level ? " under '" + ck.wrapper_key + "'" : "") +
                       ": it has " + describe_keys(*cur) + " (checkpoint-key names the entry to use)");
    ck.wrapper_key += (ck.wrapper_key.empty() ? "" : ".") + used;
    // What else the wrapper holds that Python would have had to import
    // (an argparse.Namespace, numpy scalars): kept inert and reported.
    for (const auto& [k, v] : cur->dict)
      if (k->is(Value::Kind::Str) && k->s != used && (pickle::is_placeholder(*v) || !v->tag.empty()))
        ck.notes.push_back("kept inert, not used: '" + k->s + "' " + pickle::describe(*v));
    cur = next;
  }
  throw ModelError("'" + ck.path + "': state dict nested too deeply");
}

void strip_prefixes(StateDict& sd, std::vector<std::string>& notes) {
  // DataParallel's module., torch.compile's _orig_mod., and any other first
  // name every key shares: a wrapping module's attribute (a LightningModule's
  // model., net., backbone.). Every architecture ptm builds has more than one
  // top-level name (a body and a head), so a shared one is never its own.
  for (int level = 0; level < 4 && !sd.entries.empty(); ++level) {
    const std::string& first = sd.entries.front().name;
    const size_t dot = first.find('.');
    if (dot == std::string::npos || dot == 0) return;
    const std::string p = first.substr(0, dot + 1);
    for (const auto& e : sd.entries)
      if (e.name.size() <= p.size() || e.name.compare(0, p.size(), p) != 0) return;
    for (auto& e : sd.entries) e.name.erase(0, p.size());
    notes.push_back("stripped prefix '" + p + "' from every key");
  }
}

// Key spellings of older torchvision releases, rewritten to today's, as data:
// (pattern, replacement). torchvision's own loaders apply the same: DenseNet
// to its published weights, ViT's MLP block to checkpoints saved before
// torchvision 0.13 (`_load_from_state_dict`, version < 2).
struct KeyRule {
  const char* contains;  // cheap prefilter: keys without it are left alone
  const char* pattern;
  const char* replacement;
  const char* note;
};
const KeyRule kKeyRules[] = {
    {"denselayer", R"(^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$)",
     "$1$2", "renamed DenseNet keys from torchvision's published layout ('norm.1' -> 'norm1')"},
    {"mlp.linear_1", R"(^(encoder\.layers\.encoder_layer_\d+\.mlp)\.linear_1\.(weight|bias)$)", "$1.0.$2",
     "renamed ViT MLP keys from torchvision < 0.13 ('mlp.linear_1' -> 'mlp.0')"},
    {"mlp.linear_2", R"(^(encoder\.layers\.encoder_layer_\d+\.mlp)\.linear_2\.(weight|bias)$)", "$1.3.$2",
     "renamed ViT MLP keys from torchvision < 0.13 ('mlp.linear_2' -> 'mlp.3')"},
};

void normalize_keys(StateDict& sd, std::vector<std::string>& notes) {
  strip_prefixes(sd, notes);
  for (const auto& rule : kKeyRules) {
    const std::regex re(rule.pattern);
    size_t changed = 0;
    for (auto& e : sd.entries) {
      if (e.name.find(rule.contains) == std::string::npos) continue;
      std::string renamed = std::regex_replace(e.name, re, rule.replacement);
      if (renamed != e.name) {
        e.name = std::move(renamed);
        ++changed;
      }
    }
    if (changed) notes.push_back(std::string(rule.note) + " (" + std::to_string(changed) + " keys)");
  }
}

void collect(const Value& dict, Checkpoint& ck) {
  // Values are shared through the memo; materialising mutates in place.
  std::unordered_set<std::string> seen;
  std::map<std::string, size_t> converted;  // "float8_e4m3fn to float32" -> tensors
  size_t swapped = 0;
  for (const auto& [k, v] : dict.dict) {
    if (!k->is(Value::Kind::Str)) continue;
    if (pickle::is_placeholder(*v))
      throw ModelError("'" + ck.path + "': " + pickle::refusal(*v, "the value of '" + k->s + "' in the state dict"));
    if (!v->is(Value::Kind::Tensor)) {
      ck.notes.push_back("ignored non-tensor entry '" + k->s + "' (" + v->kind_name() + ")");
      continue;
    }
    if (!seen.insert(k->s).second)
      throw ModelError("'" + ck.path + "': key '" + k->s + "' appears twice");
    ck.state.entries.push_back({k->s, pickle::materialize(*v, "'" + ck.path + "': tensor '" + k->s + "'")});
    const pickle::DType& t = *v->dtype;
    if (t.decode != pickle::Decode::Native)
      ++converted[std::string(t.name) + " to " + pickle::dtype_name(t.type)];
    if (v->storage->big_endian && t.swap > 1) ++swapped;
  }
  for (const auto& [what, n] : converted)
    ck.notes.push_back("converted " + std::to_string(n) + " tensor(s) from " + what + " (exactly)");
  if (swapped) ck.notes.push_back("byte-swapped " + std::to_string(swapped) + " tensor(s) from the file's big-endian order");
  normalize_keys(ck.state, ck.notes);
}

void check_dtype(const std::string& path, const std::string& key, at::ScalarType t) {
  switch (t) {
    case at::kFloat: case at::kDouble: case at::kHalf: case at::kBFloat16:
    case at::kLong: case at::kInt: case at::kShort: case at::kChar: case at::kByte: case at::kBool:
      return;
    default:
      throw ModelError("'" + path + "': tensor '" + key + "' has dtype " + pickle::dtype_name(t) +
                       ", which a classifier cannot use");
  }
}

// ------------------------------------------------------------ zip format

at::Tensor bytes_tensor(const Bytes& file, const uint8_t* p, uint64_t n) {
  Bytes keep = file;
  return at::from_blob(const_cast<uint8_t*>(p), {int64_t(n)},
                       [keep](void*) mutable { keep.data.reset(); },
                       at::TensorOptions().dtype(at::kByte));
}

struct StorageId {
  const pickle::DType* dtype;
  std::string key;
  int64_t count;    // elements of dtype (bytes for untyped storages)
  uint64_t nbytes;  // count * element size, overflow-checked
};

StorageId parse_pid(const Value& pid, bool legacy, const std::string& what) {
  if (!pid.is(Value::Kind::Tuple) || pid.items.size() < 5)
    throw ModelError(what + ": malformed persistent id");
  if (pickle::as_str(*pid.items[0], "persistent id tag") != "storage")
    throw ModelError(what + ": unknown persistent id '" + pid.items[0]->s + "'");
  const Value& type = *pid.items[1];
  if (pickle::is_placeholder(type)) throw ModelError(what + ": " + pickle::refusal(type, "a storage type"));
  if (!type.is(Value::Kind::Global) || !type.names_storage)
    throw ModelError(what + ": persistent id does not name a storage type");
  StorageId id;
  id.dtype = type.dtype;
  const Value& key = *pid.items[2];
  id.key = key.is(Value::Kind::Int) ? std::to_string(key.i) : pickle::as_str(key, "storage key");
  id.count = pickle::as_int(*pid.items[4], "storage size");
  if (id.count < 0) throw ModelError(what + ": negative storage size");
  if (mul_overflows(uint64_t(id.count), id.dtype->size, &id.nbytes) || id.nbytes > uint64_t(INT64_MAX))
    throw ModelError(what + ": storage '" + id.key + "' size overflows");
  if (legacy && pid.items.size() > 5 && !pid.items[5]->is(Value::Kind::None))
    throw ModelError(what + ": storage views (torch < 0.4 files) are not supported");
  return id;
}

Ref storage_value(const StorageId& id, bool big_endian) {
  auto st = std::make_shared<pickle::Storage>();
  st->dtype = id.dtype;
  st->nbytes = int64_t(id.nbytes);
  st->big_endian = big_endian;
  Ref r = std::make_shared<Value>();
  r->kind = Value::Kind::Storage;
  r->storage = st;
  return r;
}

void read_zip(Checkpoint& ck, const ZipArchive& zip, const ReadOptions& opt) {
  const Bytes& file = zip.file();
  if (opt.verify_checksums) {
    // torch >= 2.6 with set_crc32_options(False) writes 0 for every CRC:
    // not computed, not corrupt. Sizes, offsets, data descriptors and the
    // pickle are still checked.
    if (zip.crc_absent())
      ck.notes.push_back("CRC checks not possible: the file was saved with CRC computation off");
    else
      zip.verify_all();
  }
  const ZipEntry* pkl = nullptr;
  for (const auto& e : zip.entries()) {
    auto slash = e.name.find('/');
    if (slash != std::string::npos && e.name.compare(slash + 1, std::string::npos, "data.pkl") == 0) {
      pkl = &e;
      break;
    }
  }
  if (!pkl) throw ModelError("'" + ck.path + "' is a zip archive without data.pkl: not a PyTorch file");
  const std::string prefix = pkl->name.substr(0, pkl->name.find('/') + 1);
  const std::string what = "'" + ck.path + "'";
  // torch >= 2.1 writes the byte order of the machine that saved the file;
  // files without the record are little-endian (as torch reads them).
  bool big_endian = false;
  if (const ZipEntry* bo = zip.find(prefix + "byteorder")) {
    std::string order(reinterpret_cast<const char*>(zip.data(*bo, true)), bo->size);
    if (order == "big") big_endian = true;
    else if (order != "little")
      throw ModelError(what + ": unknown byte order '" + order.substr(0, 16) + "' (expected 'little' or 'big')");
  }
  if (const ZipEntry* l = zip.find(prefix + kLabelsRecord))
    ck.labels = parse_labels(std::string_view(reinterpret_cast<const char*>(zip.data(*l, true)), l->size),
                             what + "'s labels record");
  std::unordered_map<std::string, Ref> storages;
  auto persistent = [&](const Value& pid) -> Ref {
    StorageId id = parse_pid(pid, false, what);
    auto it = storages.find(id.key);
    if (it != storages.end()) {
      if (it->second->storage->dtype != id.dtype)
        throw ModelError(what + ": storage '" + id.key + "' is used with two dtypes");
      return it->second;
    }
    const ZipEntry* rec = zip.find(prefix + "data/" + id.key);
    if (!rec) throw ModelError(what + ": tensor data record '" + id.key + "' is missing");
    // torch.save writes each storage whole: any other length is damage.
    if (rec->size != id.nbytes)
      throw ModelError(what + ": tensor data record '" + id.key + "' holds " + std::to_string(rec->size) +
                       " bytes, but its storage is " + std::to_string(id.count) + " torch." + id.dtype->name +
                       " elements (" + std::to_string(id.nbytes) + " bytes)");
    Ref r = storage_value(id, big_endian);
    r->storage->bytes = bytes_tensor(file, zip.data(*rec, false), id.nbytes);
    storages.emplace(id.key, r);
    return r;
  };
  Ref root = pickle::load(zip.data(*pkl, true), pkl->size, persistent, what);
  std::vector<Ref> keep;
  collect(unwrap(*root, opt, ck, keep), ck);
}

// --------------------------------------------------------- legacy format

void read_legacy(Checkpoint& ck, Bytes file, const ReadOptions& opt) {
  const std::string what = "'" + ck.path + "'";
  const uint8_t* p = file.begin();
  size_t pos = 0;
  auto next = [&](const pickle::PersistentLoad& pl) {
    size_t used = 0;
    Ref r = pickle::load(p + pos, file.size - pos, pl, what, &used);
    pos += used;
    return r;
  };
  next(nullptr);  // magic number, checked by sniff_format
  Ref proto = next(nullptr);
  if (!proto->is(Value::Kind::Int) || proto->i != 1001)
    throw ModelError(what + ": unsupported legacy protocol version");
  Ref sys = next(nullptr);
  bool big_endian = false;
  if (sys->is(Value::Kind::Dict)) {
    // The legacy writer stores tensor data little-endian whatever the
    // machine, so a big-endian machine's file reads the same way (older
    // writers stored the element counts in the machine's order).
    const Value* le = dict_get(*sys, "little_endian");
    big_endian = le && le->is(Value::Kind::Bool) && !le->b;
    if (big_endian) ck.notes.push_back("written on a big-endian machine (the legacy format's data is little-endian)");
  }
  // Storage data follows the pickles: tensors are validated against the
  // declared sizes now and materialised once the bytes are read.
  std::unordered_map<std::string, Ref> storages;
  auto persistent = [&](const Value& pid) -> Ref {
    StorageId id = parse_pid(pid, true, what);
    auto it = storages.find(id.key);
    if (it != storages.end()) {
      if (it->second->storage->dtype != id.dtype)
        throw ModelError(what + ": storage '" + id.key + "' is used with two dtypes");
      return it->second;
    }
    Ref r = storage_value(id, false);
    storages.emplace(id.key, r);
    return r;
  };
  Ref root = next(persistent);
  Ref keys = next(nullptr);
  if (!keys->is(Value::Kind::List)) throw ModelError(what + ": storage key list missing");
  Cursor c(p, file.size, what);
  c.seek(pos);
  for (const Ref& k : keys->items) {
    const std::string& key = pickle::as_str(*k, "storage key");
    auto it = storages.find(key);
    if (it == storages.end()) throw ModelError(what + ": data for unknown storage '" + key + "'");
    pickle::Storage& st = *it->second->storage;
    if (st.bytes.defined()) throw ModelError(what + ": storage '" + key + "' stored twice");
    int64_t numel = c.i64();
    if (big_endian && uint64_t(numel) * st.dtype->size != uint64_t(st.nbytes))
      numel = int64_t(__builtin_bswap64(uint64_t(numel)));
    uint64_t n;
    if (numel < 0 || mul_overflows(uint64_t(numel), st.dtype->size, &n) || n != uint64_t(st.nbytes))
      throw ModelError(what + ": storage '" + key + "' holds " + std::to_string(numel) + " elements, its record says " +
                       std::to_string(uint64_t(st.nbytes) / st.dtype->size));
    st.bytes = bytes_tensor(file, c.take(n), n);
  }
  for (const auto& [key, v] : storages)
    if (!v->storage->bytes.defined()) throw ModelError(what + ": data of storage '" + key + "' is missing");
  std::vector<Ref> keep;
  collect(unwrap(*root, opt, ck, keep), ck);
}

// ---------------------------------------------------------- safetensors

at::ScalarType safetensors_dtype(const std::string& s, const std::string& what) {
  static const std::map<std::string, at::ScalarType> m = {
      {"F64", at::kDouble}, {"F32", at::kFloat}, {"F16", at::kHalf}, {"BF16", at::kBFloat16},
      {"I64", at::kLong},   {"I32", at::kInt},   {"I16", at::kShort}, {"I8", at::kChar},
      {"U8", at::kByte},    {"BOOL", at::kBool}};
  auto it = m.find(s);
  if (it == m.end()) throw ModelError(what + ": unsupported safetensors dtype '" + s + "'");
  return it->second;
}

void read_safetensors(Checkpoint& ck, Bytes file) {
  const std::string what = "'" + ck.path + "' (safetensors)";
  Cursor c(file.begin(), file.size, what);
  const uint64_t n = c.u64();
  constexpr uint64_t kMaxHeader = 100u * 1000 * 1000;
  if (n > kMaxHeader) c.fail("header length " + std::to_string(n) + " exceeds the 100 MB limit");
  if (n > c.remaining()) c.fail("header length " + std::to_string(n) + " exceeds the file size");
  const char* h = reinterpret_cast<const char*>(c.take(n));
  if (n == 0 || h[0] != '{') c.fail("header is not a JSON object");
  nlohmann::json j = nlohmann::json::parse(h, h + n, nullptr, false);
  if (j.is_discarded() || !j.is_object()) c.fail("header is not valid JSON");
  const uint64_t data_start = c.pos();
  const uint64_t data_len = file.size - data_start;
  struct Rec {
    std::string name;
    at::ScalarType dtype;
    std::vector<int64_t> shape;
    uint64_t begin, end;
  };
  std::vector<Rec> recs;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it.value().is_object()) c.fail("__metadata__ is not an object");
      continue;
    }
    const auto& v = it.value();
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets"))
      c.fail("entry '" + it.key() + "' lacks dtype, shape or data_offsets");
    if (!v["dtype"].is_string() || !v["shape"].is_array() || !v["data_offsets"].is_array() ||
        v["data_offsets"].size() != 2)
      c.fail("entry '" + it.key() + "' is malformed");
    Rec r;
    r.name = it.key();
    r.dtype = safetensors_dtype(v["dtype"].get<std::string>(), what);
    uint64_t bytes = c10::elementSize(r.dtype);
    if (v["shape"].size() > 16) c.fail("entry '" + r.name + "' has more than 16 dimensions");
    for (const auto& d : v["shape"]) {
      if (!d.is_number_unsigned()) c.fail("entry '" + r.name + "' has a bad shape");
      uint64_t dim = d.get<uint64_t>();
      if (dim > uint64_t(INT64_MAX) || mul_overflows(bytes, dim, &bytes))
        c.fail("entry '" + r.name + "': shape x dtype size overflows");
      r.shape.push_back(int64_t(dim));
    }
    for (const auto& o : v["data_offsets"])
      if (!o.is_number_unsigned()) c.fail("entry '" + r.name + "' has bad data_offsets");
    r.begin = v["data_offsets"][0].get<uint64_t>();
    r.end = v["data_offsets"][1].get<uint64_t>();
    if (r.end < r.begin || r.end - r.begin != bytes)
      c.fail("entry '" + r.name + "': data_offsets span " + std::to_string(r.end - r.begin) +
             " bytes but shape and dtype need " + std::to_string(bytes));
    recs.push_back(std::move(r));
  }
  // Offsets must tile the data buffer exactly: contiguous from 0, no holes,
  // no overlap, ending at the end of the file.
  std::vector<const Rec*> sorted;
  for (const auto& r : recs) sorted.push_back(&r);
  std::sort(sorted.begin(), sorted.end(), [](const Rec* a, const Rec* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t expect = 0;
  for (const Rec* r : sorted) {
    if (r->begin != expect)
      c.fail("entry '" + r->name + "' starts at " + std::to_string(r->begin) + ", expected " +
             std::to_string(expect) + " (offsets must be contiguous)");
    expect = r->end;
  }
  if (expect != data_len)
    c.fail("tensors cover " + std::to_string(expect) + " bytes but the data section holds " +
           std::to_string(data_len));
  // Header order is JSON-object order; keep the file's order of offsets.
  for (const Rec* r : sorted) {
    at::Tensor bytes = bytes_tensor(file, file.begin() + data_start + r->begin, r->end - r->begin);
    at::Tensor t = at::from_blob(
        bytes.data_ptr(), r->shape, [bytes](void*) mutable { bytes.reset(); },
        at::TensorOptions().dtype(r->dtype));
    ck.state.entries.push_back({r->name, t});
  }
  normalize_keys(ck.state, ck.notes);
}

}  // namespace

namespace {

bool is_torchscript(const ZipArchive& zip) {
  for (const auto& e : zip.entries()) {
    auto slash = e.name.find('/');
    if (slash == std::string::npos) continue;
    if (e.name.compare(slash + 1, 5, "code/") == 0 || e.name.compare(slash + 1, std::string::npos, "constants.pkl") == 0)
      return true;
  }
  return false;
}

// An AOTInductor package: compiled model files under data/aotinductor/, at
// the archive's top (torch 2.6 and later) or below one top folder.
const std::string kAotiDir = "data/aotinductor/";

std::string below_top(const std::string& name) {
  if (name.rfind(kAotiDir, 0) == 0) return name;
  const auto slash = name.find('/');
  return slash == std::string::npos ? name : name.substr(slash + 1);
}

bool is_aoti_package(const ZipArchive& zip) {
  for (const auto& e : zip.entries()) {
    const std::string n = below_top(e.name);
    if (n.rfind(kAotiDir, 0) == 0) return true;
  }
  return false;
}

FileFormat zip_format(const ZipArchive& zip) {
  if (is_aoti_package(zip)) return FileFormat::AOTInductor;
  return is_torchscript(zip) ? FileFormat::TorchScript : FileFormat::TorchZip;
}

// Formats other than zip, from the first bytes.
FileFormat sniff_head(const Bytes& file, const std::string& path) {
  if (file.size == 0) throw ModelError("'" + path + "' is empty");
  const std::string head(file.view(0, std::min<size_t>(file.size, 16)));
  if (head.rfind(kLegacyMagic, 0) == 0) return FileFormat::TorchLegacy;
  // safetensors: a little-endian u64 header length, then the JSON header.
  if (head.size() >= 9 && head[8] == '{') return FileFormat::SafeTensors;
  if (uint8_t(head[0]) == 0x80)
    throw ModelError("'" + path + "' is a pickle stream but not a PyTorch checkpoint");
  if (head.rfind("PK", 0) == 0)
    throw ModelError("'" + path + "' is a damaged zip archive");
  throw ModelError("'" + path + "' is not a PyTorch (.pth/.pt), TorchScript or safetensors file");
}

bool zip_head(const Bytes& file) {
  return file.size >= 4 && looks_like_zip(std::string(file.view(0, 4)));
}

}  // namespace

FileFormat sniff_format(const std::string& path) {
  // Mapped, not read: only the head and a zip's directory are touched.
  const Bytes file = map_file(path);
  if (zip_head(file)) return zip_format(ZipArchive(file, path));
  return sniff_head(file, path);
}

const std::string* PackageInfo::find(const std::string& key) const {
  for (const auto& kv : metadata)
    if (kv.first == key) return &kv.second;
  return nullptr;
}

PackageInfo read_package_info(const std::string& path) {
  const Bytes file = map_file(path);
  if (!zip_head(file)) throw ModelError("'" + path + "' is not an AOTInductor package (not a zip archive)");
  const ZipArchive zip(file, path);
  if (!is_aoti_package(zip)) throw ModelError("'" + path + "' is not an AOTInductor package (no " + kAotiDir + ")");
  PackageInfo info;
  info.file_bytes = file.size;
  // data/aotinductor/<model>/<name>_metadata.json (one per model).
  const ZipEntry* meta = nullptr;
  for (const auto& e : zip.entries()) {
    const std::string n = below_top(e.name);
    if (n.rfind(kAotiDir, 0) != 0) continue;
    const std::string rest = n.substr(kAotiDir.size());
    const auto slash = rest.find('/');
    if (slash != std::string::npos) {
      const std::string model = rest.substr(0, slash);
      if (std::find(info.models.begin(), info.models.end(), model) == info.models.end()) info.models.push_back(model);
    }
    if (rest.size() > 3 && rest.compare(rest.size() - 3, 3, ".so") == 0) info.compiled_bytes += e.size;
    const std::string suffix = "_metadata.json";
    if (!meta && rest.size() > suffix.size() && rest.compare(rest.size() - suffix.size(), suffix.size(), suffix) == 0 &&
        (info.models.empty() || rest.rfind(info.models.front() + "/", 0) == 0))
      meta = &e;
  }
  if (meta) {
    if (meta->size > (64u << 20)) throw ModelError("'" + path + "': package metadata of " + std::to_string(meta->size) + " bytes");
    const char* d = reinterpret_cast<const char*>(zip.data(*meta, true));
    nlohmann::json j = nlohmann::json::parse(d, d + meta->size, nullptr, false);
    if (!j.is_object()) throw ModelError("'" + path + "': " + meta->name + " is not a JSON object");
    for (auto it = j.begin(); it != j.end(); ++it)
      info.metadata.emplace_back(it.key(), it.value().is_string() ? it.value().get<std::string>() : it.value().dump());
    std::sort(info.metadata.begin(), info.metadata.end());
  }
  return info;
}

Checkpoint read_checkpoint(const std::string& path, const ReadOptions& options) {
  Checkpoint ck;
  ck.path = path;
  Bytes file = read_file(path);
  ck.file_bytes = file.size;
  if (zip_head(file)) {
    const ZipArchive zip(std::move(file), path);
    if (is_aoti_package(zip))
      throw ModelError("'" + path + "' is an AOTInductor package (.pt2): a compiled program, not a weights file; "
                       "ptminfer and ptm-classify run it where LibTorch has the package loader (2.6 and later)");
    if (is_torchscript(zip)) {
      ck.format = FileFormat::TorchScript;
      ck.state = read_torchscript_state(path);
    } else {
      ck.format = FileFormat::TorchZip;
      read_zip(ck, zip, options);
    }
  } else {
    ck.format = sniff_head(file, path);
    if (ck.format == FileFormat::TorchLegacy) read_legacy(ck, file, options);
    else read_safetensors(ck, file);
  }
  if (ck.state.entries.empty()) throw ModelError("'" + path + "' holds no tensors");
  for (const auto& e : ck.state.entries) check_dtype(path, e.name, e.tensor.scalar_type());
  return ck;
}

}  // namespace ptm
