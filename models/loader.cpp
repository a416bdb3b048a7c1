#include "loader.h"

#include <torch/nn/module.h>
#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <mutex>
#include <sstream>
#include <unordered_map>

#include "error.h"
#include "registry.h"

namespace ptm {

// Generated at build time from the architectures themselves (see
// tools/gen-signatures.cpp): "name|key:d,d;key:d;...\n" per architecture,
// built with 1000 classes.
extern const char* const kArchitectureSignatures;

namespace {

struct KeySpec {
  std::string key;
  std::vector<int64_t> shape;
};
struct Signature {
  const ArchInfo* info;
  std::vector<KeySpec> keys;
};

const std::vector<Signature>& signatures() {
  static const std::vector<Signature> sigs = [] {
    std::vector<Signature> out;
    std::istringstream in(kArchitectureSignatures);
    std::string line;
    while (std::getline(in, line)) {
      auto bar = line.find('|');
      Signature s;
      s.info = find_architecture(line.substr(0, bar));
      if (!s.info) continue;
      std::istringstream ks(line.substr(bar + 1));
      std::string item;
      while (std::getline(ks, item, ';')) {
        auto colon = item.find(':');
        KeySpec k{item.substr(0, colon), {}};
        std::istringstream ds(item.substr(colon + 1));
        std::string d;
        while (std::getline(ds, d, ',')) k.shape.push_back(std::stoll(d));
        s.keys.push_back(std::move(k));
      }
      out.push_back(std::move(s));
    }
    return out;
  }();
  return sigs;
}

bool under_prefix(const std::string& key, const std::string& prefix) {
  return key.size() > prefix.size() && key.compare(0, prefix.size(), prefix) == 0 && key[prefix.size()] == '.';
}

// A key under one of the architecture's ignored prefixes (ArchInfo::ignored).
bool ignored_key(const ArchInfo& info, const std::string& key) {
  for (const auto& p : info.ignored)
    if (under_prefix(key, p)) return true;
  return false;
}

bool optional_key(const std::string& key) {
  static const std::string nbt = "num_batches_tracked";
  return key.size() >= nbt.size() && key.compare(key.size() - nbt.size(), nbt.size(), nbt) == 0;
}

std::vector<int64_t> shape_of(const at::Tensor& t) { return t.sizes().vec(); }

int64_t square_root(int64_t n) {
  if (n < 1) return 0;
  const auto r = int64_t(std::llround(std::sqrt(double(n))));
  return r * r == n ? r : 0;
}

// A position table is 1 x (T + (S/P)^2) x D, T the prefix tokens (class
// token; DeiT's distillation token). The signature holds it at the
// registry's input size, which gives the patch size P; a table of another
// token count that is still a square grid plus the prefix tokens fits too,
// and names the size S the weights were made for (0: it does not fit).
int64_t table_input_size(const ArchInfo& info, const std::vector<int64_t>& want, const std::vector<int64_t>& got) {
  if (want.size() != 3 || got.size() != 3 || got[0] != want[0] || got[2] != want[2]) return 0;
  const int64_t grid0 = square_root(want[1] - info.prefix_tokens), grid = square_root(got[1] - info.prefix_tokens);
  if (grid0 == 0 || grid == 0) return 0;
  return grid * (info.crop_size / grid0);
}

// How the state dict matches `sig`. With `exact_only`, only whether it is
// exact matters: the comparison stops at the first difference (the prefix
// search asks it of every signature for up to 33 groups of keys).
Candidate compare(const Signature& sig, const std::unordered_map<std::string, const at::Tensor*>& sd,
                  bool exact_only = false) {
  Candidate c;
  c.name = sig.info->name;
  // Without ignored keys an exact match has no more tensors than keys.
  if (exact_only && sig.info->ignored.empty() && sd.size() > sig.keys.size()) {
    c.unexpected = sd.size() - sig.keys.size();
    return c;
  }
  const std::string& head = sig.info->head;
  auto hw = sd.find(head + ".weight");
  c.num_classes = hw != sd.end() && hw->second->dim() > 0 ? hw->second->size(0) : 0;
  size_t present = 0, ignored = 0;
  if (!sig.info->ignored.empty())
    for (const auto& [key, tensor] : sd) ignored += ignored_key(*sig.info, key);
  for (const auto& k : sig.keys) {
    auto it = sd.find(k.key);
    if (it == sd.end()) {
      if (!optional_key(k.key)) ++c.missing;
      if (exact_only && c.missing) return c;
      continue;
    }
    ++present;
    if (k.key == sig.info->position_table) {
      c.image_size = table_input_size(*sig.info, k.shape, shape_of(*it->second));
      if (c.image_size > 0) ++c.matched;
      else ++c.mismatched;
      if (exact_only && c.mismatched) return c;
      continue;
    }
    // Compared in place (no copies: every signature's every key is looked
    // at for each state dict ranked).
    const at::IntArrayRef got = it->second->sizes();
    bool same = got.size() == k.shape.size();
    for (size_t d = 0; same && d < got.size(); ++d)
      same = got[d] == (d == 0 && in_head(*sig.info, k.key) ? c.num_classes : k.shape[d]);
    if (same) ++c.matched;
    else ++c.mismatched;
    if (exact_only && c.mismatched) return c;
  }
  c.unexpected = sd.size() - present - ignored;
  const double total = double(sig.keys.size() + c.unexpected);
  c.score = total > 0 ? double(c.matched) / total : 0;
  return c;
}

}  // namespace

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

std::vector<Candidate> rank_architectures(const StateDict& state) {
  std::unordered_map<std::string, const at::Tensor*> sd;
  for (const auto& e : state.entries) sd.emplace(e.name, &e.tensor);
  std::vector<Candidate> out;
  for (const auto& sig : signatures()) out.push_back(compare(sig, sd));
  std::stable_sort(out.begin(), out.end(), [](const Candidate& a, const Candidate& b) {
    if (a.exact() != b.exact()) return a.exact();
    return a.score > b.score;
  });
  return out;
}

std::string differences(const Candidate& c, const StateDict& state) {
  const Signature* sig = nullptr;
  for (const auto& s : signatures())
    if (s.info->name == c.name) sig = &s;
  std::ostringstream out;
  out << c.name << ": " << c.matched << " of " << (sig ? sig->keys.size() : 0) << " keys and shapes match ("
      << c.missing << " missing, " << c.unexpected << " unexpected, " << c.mismatched << " mis-shaped)";
  if (!sig) return out.str();
  std::unordered_map<std::string, const KeySpec*> want;
  for (const auto& k : sig->keys) want.emplace(k.key, &k);
  const at::Tensor* hw = state.find(sig->info->head + ".weight");
  const int64_t classes = hw && hw->dim() > 0 ? hw->size(0) : 0;
  std::string missing, unexpected, misshaped;
  for (const auto& k : sig->keys)
    if (missing.empty() && !optional_key(k.key) && !state.find(k.key)) missing = k.key;
  for (const auto& e : state.entries) {
    auto it = want.find(e.name);
    if (it == want.end()) {
      if (unexpected.empty() && !ignored_key(*sig->info, e.name)) unexpected = e.name;
      continue;
    }
    std::vector<int64_t> shape = it->second->shape;
    if (in_head(*sig->info, e.name) && !shape.empty()) shape[0] = classes;
    if (misshaped.empty() && e.name != sig->info->position_table && shape_of(e.tensor) != shape)
      misshaped = e.name + " is " + shape_str(shape_of(e.tensor)) + ", " + c.name + " has " + shape_str(shape);
  }
  if (!missing.empty()) out << "; first missing: " << missing;
  if (!unexpected.empty()) out << "; first unexpected: " << unexpected;
  if (!misshaped.empty()) out << "; first mis-shaped: " << misshaped;
  return out.str();
}

Candidate detect_architecture(const StateDict& sd) {
  auto ranked = rank_architectures(sd);
  if (!ranked.empty() && ranked[0].exact() && ranked[0].num_classes > 0) {
    Candidate c = ranked[0];
    for (size_t i = 1; i < ranked.size() && ranked[i].exact(); ++i) c.also.push_back(ranked[i].name);
    return c;
  }
  std::ostringstream msg;
  msg << "the weights match no built-in architecture; closest:";
  for (size_t i = 0; i < std::min<size_t>(3, ranked.size()); ++i)
    msg << (i ? ";" : "") << " " << differences(ranked[i], sd);
  msg << ". Pass the architecture explicitly to see the key report";
  throw ModelError(msg.str());
}

namespace {

bool fits(const StateDict& sd, const std::string& architecture) {
  std::unordered_map<std::string, const at::Tensor*> map;
  for (const auto& e : sd.entries) map.emplace(e.name, &e.tensor);
  for (const auto& sig : signatures())
    if (architecture.empty() || sig.info->name == architecture) {
      const Candidate c = compare(sig, map, /*exact_only=*/true);
      if (c.exact() && c.num_classes > 0) return true;
    }
  return false;
}

StateDict under(const StateDict& sd, const std::string& prefix) {
  StateDict out;
  for (const auto& e : sd.entries)
    if (e.name.size() > prefix.size() && e.name.compare(0, prefix.size(), prefix) == 0)
      out.entries.push_back({e.name.substr(prefix.size()), e.tensor});
  return out;
}

}  // namespace

bool select_weights_prefix(StateDict& sd, std::vector<std::string>& notes, const std::string& architecture) {
  if (sd.entries.empty() || fits(sd, architecture)) return false;
  // Every prefix of one to three names, by the number of keys under it.
  std::unordered_map<std::string, size_t> count;
  for (const auto& e : sd.entries) {
    size_t dot = 0;
    for (int depth = 0; depth < 3; ++depth) {
      dot = e.name.find('.', dot);
      if (dot == std::string::npos) break;
      ++dot;
      ++count[e.name.substr(0, dot)];
    }
  }
  std::vector<std::pair<std::string, size_t>> prefixes(count.begin(), count.end());
  std::sort(prefixes.begin(), prefixes.end(), [](const auto& a, const auto& b) {
    return a.second != b.second ? a.second > b.second : a.first < b.first;
  });
  // The largest group that fits: the weights of the model, not of the loss,
  // a teacher or a metric beside it. Bounded: 32 groups tried at most.
  for (size_t i = 0; i < prefixes.size() && i < 32; ++i) {
    const auto& [prefix, n] = prefixes[i];
    if (n < 2) break;
    StateDict sub = under(sd, prefix);
    if (!fits(sub, architecture)) continue;
    std::string others;
    size_t left = 0;
    for (const auto& e : sd.entries)
      if (e.name.compare(0, prefix.size(), prefix) != 0 && left++ < 3)
        others += (others.empty() ? "'" : ", '") + e.name + "'";
    notes.push_back("took the " + std::to_string(n) + " tensors under '" + prefix + "' (prefix stripped; they fit " +
                    (architecture.empty() ? rank_architectures(sub)[0].name : architecture) + ")" +
                    (left ? ", left out " + std::to_string(left) + " other tensor(s): " + others +
                                (left > 3 ? ", ..." : "")
                          : std::string()));
    sd = std::move(sub);
    return true;
  }
  return false;
}

int64_t input_size_of(const std::string& architecture, const StateDict& state) {
  for (const auto& sig : signatures()) {
    if (sig.info->name != architecture || sig.info->position_table.empty()) continue;
    const at::Tensor* t = state.find(sig.info->position_table);
    if (!t) return 0;
    for (const auto& k : sig.keys)
      if (k.key == sig.info->position_table) return table_input_size(*sig.info, k.shape, shape_of(*t));
  }
  return 0;
}

std::string LoadReport::summary() const {
  std::ostringstream s;
  s << architecture << " (" << num_classes << " classes): " << loaded << " tensors loaded, "
    << missing.size() << " missing, " << unexpected.size() << " unexpected, " << mismatched.size()
    << " mis-shaped";
  if (head_replaced) s << "; new classification head";
  return s.str();
}

std::string LoadReport::details() const {
  std::ostringstream s;
  for (const auto& k : missing) s << "  missing:    " << k << "\n";
  for (const auto& k : unexpected) s << "  unexpected: " << k << "\n";
  for (const auto& m : mismatched)
    s << "  mis-shaped: " << m.key << " expects " << shape_str(m.expected) << ", file has "
      << shape_str(m.found) << "\n";
  for (const auto& n : notes) s << "  note:       " << n << "\n";
  return s.str();
}

LoadReport load_into(torch::nn::Module& module, const std::string& architecture, const StateDict& state,
                     const LoadOptions& options) {
  const ArchInfo* info = find_architecture(architecture);
  const std::string head = info ? info->head : "";
  LoadReport r;
  r.architecture = architecture;
  std::unordered_map<std::string, const at::Tensor*> sd;
  for (const auto& e : state.entries) sd.emplace(e.name, &e.tensor);

  std::vector<std::pair<std::string, at::Tensor>> targets;
  for (const auto& p : module.named_parameters(true)) targets.emplace_back(p.key(), p.value());
  for (const auto& b : module.named_buffers(true)) targets.emplace_back(b.key(), b.value());

  // A head of another size is the transfer-learning case: keep it new.
  int64_t file_classes = 0;
  if (auto it = sd.find(head + ".weight"); it != sd.end() && it->second->dim() > 0)
    file_classes = it->second->size(0);
  for (const auto& [k, t] : targets)
    if (k == head + ".weight") r.num_classes = t.size(0);
  if (options.num_classes > 0 && file_classes > 0 && file_classes != options.num_classes) {
    r.head_replaced = true;
    r.notes.push_back("checkpoint has " + std::to_string(file_classes) + " classes, " +
                      std::to_string(options.num_classes) + " requested: '" + head +
                      "' is newly initialised and needs training");
  }

  size_t skipped_nbt = 0;
  at::NoGradGuard no_grad;
  for (auto& [key, target] : targets) {
    auto it = sd.find(key);
    const bool head_key = info ? in_head(*info, key) : false;
    if (it == sd.end()) {
      if (optional_key(key)) {
        ++skipped_nbt;
        continue;
      }
      if (!(r.head_replaced && head_key)) r.missing.push_back(key);
      continue;
    }
    if (r.head_replaced && head_key) continue;
    const at::Tensor& src = *it->second;
    if (src.sizes() != target.sizes()) {
      r.mismatched.push_back({key, shape_of(target), shape_of(src)});
      continue;
    }
    const bool aligned = reinterpret_cast<uintptr_t>(src.data_ptr()) % 64 == 0;
    if (options.share_memory && aligned && src.scalar_type() == target.scalar_type() && src.is_contiguous())
      target.set_data(src);
    else
      target.copy_(src);
    ++r.loaded;
  }
  std::unordered_map<std::string, bool> known;
  for (const auto& t : targets) known.emplace(t.first, true);
  size_t ignored = 0;
  for (const auto& e : state.entries) {
    if (known.count(e.name)) continue;
    if (info && ignored_key(*info, e.name)) ++ignored;
    else r.unexpected.push_back(e.name);
  }
  if (ignored) {
    std::string prefixes;
    for (const auto& p : info->ignored) prefixes += (prefixes.empty() ? "" : ", ") + p;
    r.notes.push_back(std::to_string(ignored) + " tensors of training-only parts (" + prefixes +
                      ") ignored: unused in inference");
  }
  if (skipped_nbt) r.notes.push_back(std::to_string(skipped_nbt) + " BatchNorm num_batches_tracked counters absent (older checkpoint); left at 0");
  if (options.strict && !r.clean())
    throw ModelError("the weights do not fit " + r.summary() + ":\n" + r.details());
  return r;
}

}  // namespace ptm
