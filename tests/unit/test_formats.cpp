// File formats: checkpoint variants load to the same logits, hostile and
// damaged files fail with a clear ModelError (never a crash, never garbage).
#include <gtest/gtest.h>

#include <torch/nn/module.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>

#include "../common/fixtures.h"
#include "models/architectures.h"
#include "models/checkpoint.h"
#include "models/classifier.h"
#include "models/loader.h"
#include "models/zip.h"

namespace fs = std::filesystem;

namespace ptm::test {

std::vector<std::string>& extra_fixture_dirs();  // main.cpp: fixture sets after the first

namespace {

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::string temp_path(const std::string& name) {
  fs::path dir = fs::temp_directory_path() / ("ptm-test-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  return (dir / name).string();
}

void write(const std::string& path, const std::string& data) {
  std::ofstream(path, std::ios::binary).write(data.data(), std::streamsize(data.size()));
}

// The message of the ModelError `fn` throws ("" when it does not throw).
template <typename F>
std::string error_of(F fn) {
  try {
    fn();
  } catch (const ModelError& e) {
    return e.what();
  }
  return "";
}

class Variant : public ::testing::Test {
 public:
  explicit Variant(nlohmann::json e) : e_(std::move(e)) {}
  void TestBody() override {
    const std::string file = e_["file"], arch = e_["architecture"];
    const int64_t nc = e_["num_classes"];
    at::Tensor x = input_batch();
    at::Tensor want = read_f32(e_["logits"], {x.size(0), nc});
    ClassifierOptions o;
    o.model = fixture(file);
    o.wrapper_key = e_.value("key", "");  // checkpoint-key: one of several sets of weights
    Classifier clf(o);
    EXPECT_EQ(clf.info().architecture, arch);
    EXPECT_EQ(clf.info().num_classes, nc);
    at::Tensor got = clf.forward(x);
    const double err = relative_error(got, want);
    EXPECT_LE(err, 1e-4) << e_["kind"];
    for (int64_t r = 0; r < x.size(0); ++r) EXPECT_EQ(top5(got[r]), top5(want[r]));
    // What the load report must say (objects kept inert, a whole model).
    for (const auto& want_note : e_.value("notes", nlohmann::json::array())) {
      const std::string n = want_note;
      const auto& notes = clf.info().notes;
      EXPECT_TRUE(std::any_of(notes.begin(), notes.end(), [&](const std::string& s) { return s.find(n) != std::string::npos; }))
          << "no note with \"" << n << "\"; notes: " << nlohmann::json(notes).dump();
    }
    EXPECT_FALSE(fs::exists(fixture("CANARY"))) << "a pickled command ran";
    std::printf("[ variant ] %-50s %s rel. max diff %.2e\n", std::string(e_["kind"]).c_str(),
                clf.info().format.c_str(), err);
  }

 private:
  nlohmann::json e_;
};

class Negative : public ::testing::Test {
 public:
  explicit Negative(nlohmann::json e) : e_(std::move(e)) {}
  void TestBody() override {
    const std::string path = fixture(e_["file"]);
    const std::string expect = e_["expect"];
    std::string msg;
    if (e_.value("stage", "") == "detect") {
      Checkpoint ck = read_checkpoint(path);
      msg = error_of([&] { detect_architecture(ck.state); });
    } else if (e_.value("stage", "") == "classifier") {  // what ptminfer says
      ClassifierOptions o;
      o.model = path;
      msg = error_of([&] { Classifier c(o); });
    } else {
      msg = error_of([&] { read_checkpoint(path); });
    }
    EXPECT_NE(msg, "") << path << " was accepted";
    EXPECT_NE(msg.find(expect), std::string::npos) << "message: " << msg;
    EXPECT_FALSE(fs::exists(fixture("CANARY"))) << "a pickled command ran";
    std::printf("[ negative ] %s\n             -> %s\n", std::string(e_["file"]).c_str(), msg.substr(0, 200).c_str());
  }

 private:
  nlohmann::json e_;
};

// The reference state dict every corruption is compared with.
const StateDict& reference_state() {
  static Checkpoint ck = read_checkpoint(fixture("wrapped_model.pth"));
  return ck.state;
}

bool same_state(const StateDict& a, const StateDict& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (a.entries[i].name != b.entries[i].name || !a.entries[i].tensor.equal(b.entries[i].tensor)) return false;
  return true;
}

TEST(Formats, TruncatedFilesFailCleanly) {
  for (const char* name : {"wrapped_model.pth", "legacy.pth", "model.safetensors"}) {
    const std::string data = slurp(fixture(name));
    ASSERT_GT(data.size(), 1000u);
    const std::string path = temp_path(std::string("trunc-") + name);
    for (size_t cut : {size_t(1), size_t(9), size_t(100), data.size() / 3, data.size() / 2, data.size() - 100,
                       data.size() - 1}) {
      write(path, data.substr(0, cut));
      std::string msg = error_of([&] { read_checkpoint(path); });
      EXPECT_NE(msg, "") << name << " cut at " << cut << " was accepted";
      EXPECT_NE(msg.find(path), std::string::npos) << "message does not name the file: " << msg;
    }
  }
}

TEST(Formats, BitFlipsAreDetectedOrHarmless) {
  const std::string data = slurp(fixture("wrapped_model.pth"));
  const std::string path = temp_path("flip.pth");
  std::mt19937_64 rng(42);
  int detected = 0, harmless = 0;
  for (int i = 0; i < 200; ++i) {
    std::string bad = data;
    // Half the flips land in the archive's metadata (last 8 KiB + first 4 KiB), half anywhere.
    size_t pos = i % 2 ? rng() % bad.size()
                       : (i % 4 == 0 ? rng() % 4096 : bad.size() - 1 - rng() % std::min<size_t>(8192, bad.size()));
    bad[pos] = char(bad[pos] ^ (1 << (rng() % 8)));
    write(path, bad);
    try {
      Checkpoint ck = read_checkpoint(path);
      EXPECT_TRUE(same_state(ck.state, reference_state())) << "flip at " << pos << " gave different weights";
      ++harmless;
    } catch (const ModelError&) {
      ++detected;
    }
  }
  std::printf("[ bitflip ] 200 single-bit flips: %d rejected, %d harmless (unused bytes)\n", detected, harmless);
  EXPECT_GT(detected, 160);
}

TEST(Formats, MissingEmptyAndDirectory) {
  EXPECT_NE(error_of([] { read_checkpoint("/nonexistent/model.pth"); }).find("cannot open"), std::string::npos);
  EXPECT_NE(error_of([] { read_checkpoint(fixtures_dir()); }).find("is a directory"), std::string::npos);
  EXPECT_NE(error_of([] { read_checkpoint(fixture("empty.pth")); }).find("empty"), std::string::npos);
  ClassifierOptions o;
  o.model = "/nonexistent/model.pth";
  EXPECT_NE(error_of([&] { Classifier c(o); }).find("/nonexistent/model.pth"), std::string::npos);
}

TEST(Formats, WrappedCheckpointReportsWhereWeightsWere) {
  Checkpoint ck = read_checkpoint(fixture("wrapped_state_dict.pth"));
  EXPECT_EQ(ck.wrapper_key, "state_dict");
  Checkpoint dp = read_checkpoint(fixture("compiled.pth"));
  ASSERT_FALSE(dp.notes.empty());
  EXPECT_NE(dp.notes[0].find("_orig_mod."), std::string::npos);
  EXPECT_TRUE(same_state(dp.state, reference_state()));
  ReadOptions ro;
  ro.wrapper_key = "optimizer";
  EXPECT_NE(error_of([&] { read_checkpoint(fixture("wrapped_state_dict.pth"), ro); }), "");
}

TEST(Formats, AllFormatsGiveIdenticalTensors) {
  for (const char* f : {"dataparallel.pth", "legacy.pth", "legacy_wrapped.pth", "model.safetensors", "wrapped_ema.pth"})
    EXPECT_TRUE(same_state(read_checkpoint(fixture(f)).state, reference_state())) << f;
  EXPECT_EQ(sniff_format(fixture("legacy.pth")), FileFormat::TorchLegacy);
  EXPECT_EQ(sniff_format(fixture("model.safetensors")), FileFormat::SafeTensors);
  EXPECT_EQ(sniff_format(fixture("model.torchscript.pt")), FileFormat::TorchScript);
  EXPECT_EQ(sniff_format(fixture("wrapped_model.pth")), FileFormat::TorchZip);
}

// An AOTInductor package's layout (tests/fixtures/make_fixtures.py writes
// one whose shared object is not machine code): recognised from its
// content, its metadata read without loading anything, and refused by the
// weights reader and, with the reason, by the classifier.
TEST(Package, RecognisedAndReadWithoutRunningIt) {
  const std::string p = fixture("aoti_layout.pt2");
  EXPECT_EQ(sniff_format(p), FileFormat::AOTInductor);
  const PackageInfo info = read_package_info(p);
  ASSERT_EQ(info.models, std::vector<std::string>{"model"});
  ASSERT_NE(info.find("ptm.architecture"), nullptr);
  EXPECT_EQ(*info.find("ptm.architecture"), "resnet18");
  ASSERT_NE(info.find("AOTI_DEVICE_KEY"), nullptr);
  EXPECT_EQ(*info.find("AOTI_DEVICE_KEY"), "cpu");
  EXPECT_GT(info.compiled_bytes, 0u);
  EXPECT_NE(error_of([&] { read_checkpoint(p); }).find("is an AOTInductor package (.pt2)"), std::string::npos);
  EXPECT_NE(error_of([] { read_package_info(fixture("resnet18.pth")); }).find("not an AOTInductor package"),
            std::string::npos);
  ClassifierOptions o;
  o.model = p;
  const std::string why = error_of([&] { Classifier c(o); });
#if PTM_HAVE_AOTI
  EXPECT_NE(why.find("could not be loaded as an AOTInductor package"), std::string::npos) << why;
#else
  EXPECT_NE(why.find("has no package loader (LibTorch 2.6 or later has)"), std::string::npos) << why;
#endif
  std::printf("[ package  ] %s\n", why.c_str());
  // A package for another device is refused before anything is loaded.
  o.model = fixture("aoti_layout_cuda.pt2");
  const std::string dev = error_of([&] { Classifier c(o); });
#if PTM_HAVE_AOTI
  EXPECT_NE(dev.find("was exported for cuda, not cpu"), std::string::npos) << dev;
#else
  EXPECT_NE(dev.find("has no package loader"), std::string::npos) << dev;
#endif
}

TEST(Loading, StrictRefusesAndReportsKeys) {
  const StateDict& sd = reference_state();
  auto m = create_architecture("resnet34", 1000);
  std::string msg = error_of([&] { load_into(*m, "resnet34", sd, {}); });
  EXPECT_NE(msg.find("missing"), std::string::npos) << msg;
  LoadOptions lax;
  lax.strict = false;
  LoadReport r = load_into(*m, "resnet34", sd, lax);
  EXPECT_FALSE(r.clean());
  EXPECT_FALSE(r.missing.empty());  // layer blocks resnet18 does not have
  EXPECT_TRUE(r.unexpected.empty());
  auto m50 = create_architecture("resnet50", 1000);
  LoadReport r50 = load_into(*m50, "resnet50", sd, lax);
  EXPECT_FALSE(r50.mismatched.empty());
  EXPECT_FALSE(r50.missing.empty());  // conv3/bn3 of the bottlenecks
  bool fc_shape = false;
  for (const auto& mm : r50.mismatched)
    if (mm.key == "fc.weight") fc_shape = mm.expected == std::vector<int64_t>{1000, 2048} && mm.found == std::vector<int64_t>{1000, 512};
  EXPECT_TRUE(fc_shape) << r50.details();
}

TEST(Loading, OtherClassCountGetsANewHead) {
  const StateDict& sd = reference_state();
  auto m = create_architecture("resnet18", 5);
  LoadOptions o;
  o.num_classes = 5;
  LoadReport r = load_into(*m, "resnet18", sd, o);
  EXPECT_TRUE(r.head_replaced);
  EXPECT_TRUE(r.clean()) << r.details();
  ASSERT_FALSE(r.notes.empty());
  EXPECT_NE(r.notes[0].find("'fc' is newly initialised"), std::string::npos) << r.notes[0];
  // The backbone is the checkpoint's: conv1 equals the file.
  EXPECT_TRUE(m->named_parameters()["conv1.weight"].equal(*sd.find("conv1.weight")));
  ClassifierOptions co;
  co.model = fixture("wrapped_model.pth");
  co.num_classes = 5;
  Classifier clf(co);
  EXPECT_EQ(clf.info().num_classes, 5);
  EXPECT_EQ(clf.forward(input_batch()).size(1), 5);
}

TEST(Loading, MissingNumBatchesTrackedIsAccepted) {
  ClassifierOptions o;
  o.model = fixture("no_num_batches_tracked.pth");
  Classifier clf(o);
  EXPECT_EQ(clf.info().architecture, "resnet18");
  bool noted = false;
  for (const auto& n : clf.info().report.notes) noted |= n.find("num_batches_tracked") != std::string::npos;
  EXPECT_TRUE(noted);
}

// ------------------------------------------- the files of each torch version
//
// make_format_fixtures.py writes, with whatever torch runs it, every layout
// and dtype that torch writes, and lists them in the manifest's "formats"
// section with the torch version. The main set comes from the `python`
// interpreter (Debian's torch), a second one from `pypi_python` when
// configured. Tensors must equal torch's own reading exactly (float8 to
// float32 and unsigned to int64 are exact conversions); logits, computed
// by another torch, within the parity tolerance.

struct FormatSet {
  std::string dir, label;
  nlohmann::json section;
  int major = 0, minor = 0;  // the torch that wrote it

  std::string path(const std::string& name) const { return dir + "/" + name; }
  bool at_least(int ma, int mi) const { return major > ma || (major == ma && minor >= mi); }
  const nlohmann::json* find(const char* list, const std::string& name) const {
    for (const auto& e : section[list])
      if (e["name"] == name) return &e;
    return nullptr;
  }
};

FormatSet load_set(const std::string& dir) {
  std::ifstream in(dir + "/manifest.json");
  if (!in) throw std::runtime_error("no manifest.json in " + dir);
  const auto m = nlohmann::json::parse(in);
  if (!m.contains("formats")) throw std::runtime_error(dir + "/manifest.json has no \"formats\" section");
  FormatSet s;
  s.dir = dir;
  s.section = m["formats"];
  const std::string v = s.section["torch"];
  if (std::sscanf(v.c_str(), "%d.%d", &s.major, &s.minor) != 2) throw std::runtime_error("bad torch version " + v);
  s.label = "Torch" + v;
  for (char& c : s.label)
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  return s;
}

// What each torch version writes (from torch/serialization.py and real
// files): a set that lacks one of these was made by a broken script.
struct Since {
  const char* name;
  int major, minor;
};
constexpr Since kVariantsSince[] = {
    {"zip", 1, 0}, {"crc_off", 1, 0}, {"crc_off_small", 1, 0}, {"dtypes", 1, 0}, {"legacy_big_endian", 1, 0},
    {"big_endian", 2, 1}, {"dtypes_big_endian", 2, 1}, {"float8_resnet18", 2, 1}, {"whole_compiled", 2, 0},
};
constexpr Since kRefusedSince[] = {
    {"crc_off_cd_size", 1, 0}, {"crc_off_record_size", 1, 0}, {"crc_off_local_offset", 1, 0},
    {"crc_off_pickle_stop", 1, 0}, {"crc_off_pickle_global", 1, 0}, {"crc_off_pickle_key", 1, 0},
    {"crc_off_pickle_count", 1, 0}, {"crc_off_pickle_shape", 1, 0}, {"crc_mixed", 1, 0}, {"crc_one_zero", 1, 0},
    {"complex64", 1, 0}, {"unknown_byteorder", 2, 1}, {"uint64_overflow", 2, 3},
};
constexpr Since kDTypesSince[] = {
    {"float32", 1, 0},       {"float64", 1, 0},      {"float16", 1, 0},         {"bfloat16", 1, 0},
    {"int64", 1, 0},         {"int32", 1, 0},        {"int16", 1, 0},           {"int8", 1, 0},
    {"uint8", 1, 0},         {"bool", 1, 0},         {"float8_e4m3fn", 2, 1},   {"float8_e5m2", 2, 1},
    {"float8_e4m3fnuz", 2, 3}, {"float8_e5m2fnuz", 2, 3}, {"uint16", 2, 3},    {"uint32", 2, 3},
    {"uint64", 2, 3},        {"float8_e8m0fnu", 2, 7},
};

// Record names without the archive's folder, in central-directory order.
std::vector<std::string> record_names(const std::string& path) {
  ZipArchive zip(map_file(path), path);
  std::vector<std::string> names;
  for (const auto& e : zip.entries()) names.push_back(e.name.substr(e.name.find('/') + 1));
  return names;
}

bool has(const std::vector<std::string>& v, const std::string& x) { return std::find(v.begin(), v.end(), x) != v.end(); }

// Equal dtype, shape and values; NaN equals NaN (float8 bit patterns).
::testing::AssertionResult same_values(const at::Tensor& a, const at::Tensor& b) {
  if (a.scalar_type() != b.scalar_type())
    return ::testing::AssertionFailure() << "dtype " << a.scalar_type() << ", reference " << b.scalar_type();
  if (a.sizes() != b.sizes()) return ::testing::AssertionFailure() << "shape " << a.sizes() << ", reference " << b.sizes();
  const bool eq = a.is_floating_point() ? ((a == b) | (a.isnan() & b.isnan())).all().item<bool>() : a.equal(b);
  if (!eq) return ::testing::AssertionFailure() << "values differ: " << a.flatten().slice(0, 0, 8) << " vs " << b.flatten().slice(0, 0, 8);
  return ::testing::AssertionSuccess();
}

at::Tensor read_f32_at(const std::string& path, std::vector<int64_t> shape) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("missing fixture " + path);
  at::Tensor t = at::empty(shape, at::kFloat);
  in.read(reinterpret_cast<char*>(t.data_ptr<float>()), std::streamsize(t.numel() * 4));
  if (in.gcount() != std::streamsize(t.numel() * 4)) throw std::runtime_error("short fixture " + path);
  return t;
}

class FormatManifest : public ::testing::Test {
 public:
  explicit FormatManifest(FormatSet s) : s_(std::move(s)) {}
  void TestBody() override {
    for (const auto& v : kVariantsSince) {
      EXPECT_TRUE(!s_.at_least(v.major, v.minor) || s_.find("variants", v.name))
          << "torch " << s_.section["torch"] << " writes " << v.name << ", the set lacks it";
    }
    for (const auto& v : kRefusedSince)
      EXPECT_TRUE(!s_.at_least(v.major, v.minor) || s_.find("negative", v.name)) << "refused file " << v.name << " missing";
    const nlohmann::json* dtypes = s_.find("variants", "dtypes");
    ASSERT_TRUE(dtypes);
    const auto listed = (*dtypes)["dtypes"].get<std::vector<std::string>>();
    for (const auto& d : kDTypesSince)
      EXPECT_TRUE(!s_.at_least(d.major, d.minor) || has(listed, d.name)) << "no torch." << d.name << " tensor";
    // CRC-off files come from torch itself from 2.6 on.
    const nlohmann::json* crc = s_.find("variants", "crc_off");
    ASSERT_TRUE(crc);
    EXPECT_EQ((*crc)["synthetic"].get<bool>(), !s_.at_least(2, 6));
    EXPECT_TRUE(ZipArchive(map_file(s_.path((*crc)["file"])), "crc_off").crc_absent());
    // The records of a plain file, as this torch writes them.
    const std::string plain = s_.path((*s_.find("variants", "zip"))["file"]);
    EXPECT_FALSE(ZipArchive(map_file(plain), plain).crc_absent());
    const auto names = record_names(plain);
    EXPECT_EQ(names.front(), "data.pkl");
    EXPECT_TRUE(has(names, "version"));
    EXPECT_EQ(has(names, "byteorder"), s_.at_least(2, 1));
    EXPECT_EQ(has(names, ".data/serialization_id"), s_.at_least(2, 1));
    EXPECT_EQ(has(names, ".format_version"), s_.at_least(2, 7));
    EXPECT_EQ(has(names, ".storage_alignment"), s_.at_least(2, 7));
    std::vector<std::string> data;
    for (const auto& n : names)
      if (n.rfind("data/", 0) == 0) data.push_back(n.substr(5));
    ASSERT_GT(data.size(), 100u);  // resnet18: order is visible past data/9
    auto numeric = data, text = data;
    std::sort(numeric.begin(), numeric.end(), [](const std::string& a, const std::string& b) { return std::stoll(a) < std::stoll(b); });
    std::sort(text.begin(), text.end());
    EXPECT_EQ(data, s_.at_least(2, 7) ? numeric : text) << "data records in neither torch's order";
    for (const char* be : {"big_endian", "dtypes_big_endian"}) {
      if (const nlohmann::json* v = s_.find("variants", be)) {
        ZipArchive zip(read_file(s_.path((*v)["file"])), be);
        const ZipEntry* bo = nullptr;
        for (const auto& e : zip.entries())
          if (e.name.size() > 10 && e.name.compare(e.name.size() - 10, 10, "/byteorder") == 0) bo = &e;
        ASSERT_TRUE(bo);
        EXPECT_EQ(std::string(reinterpret_cast<const char*>(zip.data(*bo, true)), bo->size), "big");
      }
    }
    std::printf("[ %s ] %zu variants, %zu refused files, dtypes %s\n", s_.label.c_str(), s_.section["variants"].size(),
                s_.section["negative"].size(), (*dtypes)["dtypes"].dump().c_str());
  }

 private:
  FormatSet s_;
};

class FormatVariant : public ::testing::Test {
 public:
  FormatVariant(FormatSet s, nlohmann::json e) : s_(std::move(s)), e_(std::move(e)) {}
  void TestBody() override {
    const std::string file = s_.path(e_["file"]);
    const Checkpoint ck = read_checkpoint(file);
    const Checkpoint ref = read_checkpoint(s_.path(e_["reference"]));
    EXPECT_EQ(ck.state.size(), ref.state.size());
    for (const auto& r : ref.state.entries) {
      const at::Tensor* t = ck.state.find(r.name);
      if (!t) {
        ADD_FAILURE() << "tensor '" << r.name << "' missing";
        continue;
      }
      EXPECT_TRUE(same_values(*t, r.tensor)) << "tensor '" << r.name << "'";
    }
    for (const auto& want : e_.value("notes", nlohmann::json::array())) {
      bool found = false;
      for (const auto& n : ck.notes) found |= n.find(want.get<std::string>()) != std::string::npos;
      EXPECT_TRUE(found) << "no note '" << want << "' among " << nlohmann::json(ck.notes).dump();
    }
    std::string detail;
    if (e_.contains("logits")) {
      at::Tensor x = read_f32_at(s_.path(s_.section["input"]), s_.section["input_shape"].get<std::vector<int64_t>>());
      const int64_t nc = e_["num_classes"];
      at::Tensor want = read_f32_at(s_.path(e_["logits"]), {x.size(0), nc});
      ClassifierOptions o;
      o.model = file;
      Classifier clf(o);
      EXPECT_EQ(clf.info().architecture, e_["architecture"].get<std::string>());
      EXPECT_EQ(clf.info().num_classes, nc);
      at::Tensor got = clf.forward(x);
      const double err = relative_error(got, want);
      EXPECT_LE(err, 1e-4);
      for (int64_t r = 0; r < x.size(0); ++r) EXPECT_EQ(top5(got[r]), top5(want[r]));
      char buf[64];
      std::snprintf(buf, sizeof buf, ", logits rel. max diff %.2e", err);
      detail = buf;
    }
    std::printf("[ %s ] %-18s %zu tensors equal%s; notes: %s\n", s_.label.c_str(), std::string(e_["name"]).c_str(),
                ref.state.size(), detail.c_str(), nlohmann::json(ck.notes).dump().c_str());
  }

 private:
  FormatSet s_;
  nlohmann::json e_;
};

class FormatRefused : public ::testing::Test {
 public:
  FormatRefused(FormatSet s, nlohmann::json e) : s_(std::move(s)), e_(std::move(e)) {}
  void TestBody() override {
    const std::string path = s_.path(e_["file"]);
    const std::string msg = error_of([&] { read_checkpoint(path); });
    ASSERT_NE(msg, "") << path << " was accepted";
    EXPECT_NE(msg.find(path), std::string::npos) << "message does not name the file: " << msg;
    for (const auto& part : e_["expect"]) EXPECT_NE(msg.find(part.get<std::string>()), std::string::npos) << "message: " << msg;
    std::printf("[ %s ] %s -> %s\n", s_.label.c_str(), std::string(e_["name"]).c_str(), msg.substr(0, 220).c_str());
  }

 private:
  FormatSet s_;
  nlohmann::json e_;
};

// A file saved without CRCs has only sizes, offsets, descriptors and the
// pickle to show damage: every truncation fails, and random changes to its
// pickle fail with a message or load (never a crash).
class FormatCrcOffDamage : public ::testing::Test {
 public:
  explicit FormatCrcOffDamage(FormatSet s) : s_(std::move(s)) {}
  void TestBody() override {
    const nlohmann::json* v = s_.find("variants", "crc_off_small");
    ASSERT_TRUE(v);
    const std::string data = slurp(s_.path((*v)["file"]));
    const std::string path = temp_path(s_.label + "-crc-off-damage.pth");
    size_t cuts = 0;
    for (size_t cut = 0; cut < data.size(); cut += 5, ++cuts) {
      write(path, data.substr(0, cut));
      const std::string msg = error_of([&] { read_checkpoint(path); });
      EXPECT_NE(msg, "") << "cut at " << cut << " of " << data.size() << " was accepted";
      EXPECT_NE(msg.find(path), std::string::npos) << msg;
    }
    write(path, data);
    const Checkpoint good = read_checkpoint(path);
    ZipArchive zip(read_file(path), path);
    const ZipEntry* pkl = nullptr;
    for (const auto& e : zip.entries())
      if (e.name.size() > 8 && e.name.compare(e.name.size() - 8, 8, "data.pkl") == 0) pkl = &e;
    ASSERT_TRUE(pkl);
    std::mt19937_64 rng(7);
    int rejected = 0, loaded = 0, same = 0;
    for (int i = 0; i < 300; ++i) {
      std::string bad = data;
      const size_t pos = pkl->data_offset + rng() % pkl->size;
      bad[pos] = char(bad[pos] ^ (1 + rng() % 255));
      write(path, bad);
      try {
        const Checkpoint ck = read_checkpoint(path);
        ++loaded;
        same += same_state(ck.state, good.state);
      } catch (const ModelError&) {
        ++rejected;
      }
    }
    std::printf("[ %s ] CRC-off file: %zu truncations rejected; 300 changed pickle bytes: %d rejected, %d loaded (%d unchanged)\n",
                s_.label.c_str(), cuts, rejected, loaded, same);
    EXPECT_GT(rejected, 150);
  }

 private:
  FormatSet s_;
};

}  // namespace

void register_dynamic_tests() {
  for (const auto& e : manifest()["variants"])
    ::testing::RegisterTest("Variant", e.value("test", std::string(e["file"])).c_str(), nullptr, nullptr, __FILE__,
                            __LINE__, [e]() -> ::testing::Test* { return new Variant(e); });
  for (const auto& e : manifest()["negative"])
    ::testing::RegisterTest("Negative", std::string(e["file"]).c_str(), nullptr, nullptr, __FILE__, __LINE__,
                            [e]() -> ::testing::Test* { return new Negative(e); });
  std::vector<std::string> dirs{fixtures_dir()};
  for (const auto& d : extra_fixture_dirs()) dirs.push_back(d);
  for (const auto& dir : dirs) {
    FormatSet s;
    try {
      s = load_set(dir);
    } catch (const std::exception& ex) {
      const std::string why = ex.what();
      ::testing::RegisterTest("TorchFiles", "manifest", nullptr, nullptr, __FILE__, __LINE__, [why]() -> ::testing::Test* {
        struct Fail : ::testing::Test {
          std::string why;
          void TestBody() override { FAIL() << why; }
        };
        auto* t = new Fail;
        t->why = why;
        return t;
      });
      continue;
    }
    const std::string suite = "TorchFiles_" + s.label;
    ::testing::RegisterTest(suite.c_str(), "manifest", nullptr, nullptr, __FILE__, __LINE__,
                            [s]() -> ::testing::Test* { return new FormatManifest(s); });
    ::testing::RegisterTest(suite.c_str(), "crc_off_damage", nullptr, nullptr, __FILE__, __LINE__,
                            [s]() -> ::testing::Test* { return new FormatCrcOffDamage(s); });
    for (const auto& e : s.section["variants"])
      ::testing::RegisterTest(suite.c_str(), ("loads_" + std::string(e["name"])).c_str(), nullptr, nullptr, __FILE__,
                              __LINE__, [s, e]() -> ::testing::Test* { return new FormatVariant(s, e); });
    for (const auto& e : s.section["negative"])
      ::testing::RegisterTest(suite.c_str(), ("refuses_" + std::string(e["name"])).c_str(), nullptr, nullptr, __FILE__,
                              __LINE__, [s, e]() -> ::testing::Test* { return new FormatRefused(s, e); });
  }
}

}  // namespace ptm::test
