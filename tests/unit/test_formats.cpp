// File formats: checkpoint variants load to the same logits, hostile and
// damaged files fail with a clear ModelError (never a crash, never garbage).
#include <gtest/gtest.h>

#include <torch/nn/module.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>

#include "../common/fixtures.h"
#include "models/architectures.h"
#include "models/checkpoint.h"
#include "models/classifier.h"
#include "models/loader.h"

namespace fs = std::filesystem;

namespace ptm::test {
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
    Classifier clf(o);
    EXPECT_EQ(clf.info().architecture, arch);
    EXPECT_EQ(clf.info().num_classes, nc);
    at::Tensor got = clf.forward(x);
    const double err = relative_error(got, want);
    EXPECT_LE(err, 1e-4) << e_["kind"];
    for (int64_t r = 0; r < x.size(0); ++r) EXPECT_EQ(top5(got[r]), top5(want[r]));
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

}  // namespace

void register_dynamic_tests() {
  for (const auto& e : manifest()["variants"])
    ::testing::RegisterTest("Variant", std::string(e["file"]).c_str(), nullptr, nullptr, __FILE__, __LINE__,
                            [e]() -> ::testing::Test* { return new Variant(e); });
  for (const auto& e : manifest()["negative"])
    ::testing::RegisterTest("Negative", std::string(e["file"]).c_str(), nullptr, nullptr, __FILE__, __LINE__,
                            [e]() -> ::testing::Test* { return new Negative(e); });
}

}  // namespace ptm::test
