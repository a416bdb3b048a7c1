// Parity with torchvision: every built-in architecture loads the state dict
// torchvision saved and reproduces torchvision's logits on the same input,
// both eagerly and through the optimised inference graph.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <set>

#include <torch/nn/module.h>

#include "../common/fixtures.h"
#include "models/architectures.h"
#include "models/checkpoint.h"
#include "models/classifier.h"
#include "models/error.h"
#include "models/loader.h"
#include "models/registry.h"
#include "models/runtime.h"

namespace ptm::test {
namespace {

constexpr double kTolerance = 1e-4;

void expect_parity(const at::Tensor& got, const at::Tensor& want, const std::string& what) {
  ASSERT_EQ(got.sizes(), want.sizes()) << what;
  const double err = relative_error(got, want);
  EXPECT_LE(err, kTolerance) << what << ": max abs diff relative to max(1, max|logit|)";
  for (int64_t r = 0; r < want.size(0); ++r)
    EXPECT_EQ(top5(got[r]), top5(want[r])) << what << ": top-5 of row " << r;
  std::printf("[ parity ] %-28s rel. max diff %.2e\n", what.c_str(), err);
}

// Where each model's time goes (printed, never asserted): the suite's
// length on a 2-core machine is a budget.
class Phases {
 public:
  explicit Phases(std::string name) : name_(std::move(name)) {}
  void lap(const char* phase) {
    const auto now = std::chrono::steady_clock::now();
    text_ += std::string(text_.empty() ? "" : ", ") + phase + " " +
             std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(now - last_).count()) + " ms";
    last_ = now;
  }
  ~Phases() { std::printf("[ phases ] %-28s %s\n", name_.c_str(), text_.c_str()); }

 private:
  std::string name_, text_;
  std::chrono::steady_clock::time_point last_ = std::chrono::steady_clock::now();
};

class Parity : public ::testing::Test {
 public:
  explicit Parity(nlohmann::json entry) : e_(std::move(entry)) {}
  void TestBody() override {
    // The eager model runs with ptm's threads (every core), as in ptminfer:
    // LibTorch's default here is one thread, with which 1.13 sends 1x1
    // convolutions to the system's (reference) BLAS, and regnet_y_128gf's
    // eager pass took 70 s instead of 6 when it came first in a run.
    runtime::use_threads(0);
    const std::string arch = e_["architecture"], file = e_["file"];
    const int64_t nc = e_["num_classes"];
    const std::string name = e_.value("test", arch);  // several fixtures may share an architecture
    // A model made for another input size brings its own input.
    at::Tensor x = e_.contains("input")
                       ? read_f32(e_["input"], e_["input_shape"].get<std::vector<int64_t>>())
                       : input_batch();
    at::Tensor want = read_f32(e_["logits"], {x.size(0), nc});
    if (e_.contains("reduced"))
      std::printf("[ parity ] %-28s reduced fixture: %s\n", name.c_str(), e_["reduced"].get<std::string>().c_str());

    // The default preprocessing is torchvision's eval transform of the
    // architecture's first weights.
    if (e_.contains("transform")) {
      const auto& t = e_["transform"];
      const ArchInfo* a = find_architecture(arch);
      ASSERT_NE(a, nullptr) << arch;
      EXPECT_EQ(a->crop_size, t["crop"].get<int>()) << arch;
      EXPECT_EQ(a->resize_size, t["resize"].get<int>()) << arch;
      EXPECT_EQ(a->interpolation == Interpolation::Bicubic ? "bicubic" : "bilinear", t["interpolation"].get<std::string>())
          << arch;
      for (int c = 0; c < 3; ++c) {
        EXPECT_FLOAT_EQ(a->mean[size_t(c)], t["mean"][size_t(c)].get<float>()) << arch << " mean";
        EXPECT_FLOAT_EQ(a->std[size_t(c)], t["std"][size_t(c)].get<float>()) << arch << " std";
      }
    }

    // As ptminfer loads it: read, detected, built, loaded, optimised. The
    // eager model is the Classifier's own (forward_eager), so each model is
    // read and built once: the parity suite's length is a budget.
    Phases t(name);
    ClassifierOptions o;
    o.model = fixture(file);
    // The optimised graph is made for the fixtures' size (square), not the
    // architecture's default (regnet_y_128gf's 384, efficientnet_b7's 600):
    // checked against the reference itself, at a fraction of the cost.
    // ViTs' position tables were made for that size too.
    if (x.size(2) == x.size(3)) o.input_size = int(x.size(2));
    auto clf_built = std::make_unique<Classifier>(o);
    // Detection from the weights alone. DeiT has the layout of timm's ViT:
    // detected as that, DeiT named as fitting too, and picked by name.
    if (clf_built->info().architecture != arch) {
      const auto& notes = clf_built->info().notes;
      const std::string also = "the weights fit " + arch + " as well";
      EXPECT_TRUE(std::any_of(notes.begin(), notes.end(),
                              [&](const std::string& n) { return n.find(also) != std::string::npos; }))
          << arch << " detected as " << clf_built->info().architecture;
      clf_built.reset();
      o.architecture = arch;
      clf_built = std::make_unique<Classifier>(o);
    }
    Classifier& clf = *clf_built;
    t.lap("classifier");
    const ModelInfo& info = clf.info();
    EXPECT_EQ(info.architecture, arch);
    EXPECT_EQ(info.num_classes, nc);
    EXPECT_TRUE(info.report.clean()) << info.report.details();
    for (const auto& n : info.notes) EXPECT_EQ(n.find("unavailable"), std::string::npos) << n;
    at::NoGradGuard ng;
    expect_parity(clf.forward_eager(x), want, name + " eager");
    t.lap("eager");
    expect_parity(clf.forward(x), want, name + " optimised");
    t.lap("optimised");
    // Position tables (ViT) fix the input size: the one the fixture was made for.
    const int64_t fixed = create_architecture(arch, nc, x.size(2), ArchInit::Empty)->fixed_input_size();
    if (fixed > 0) {
      EXPECT_EQ(info.crop_size, x.size(2)) << arch << ": input size";
    }

    // Another image size and another batch size (the graph is traced at
    // one image): two images of 128x96 from 224x224 fixtures, the crop and
    // its mirror.
    const int64_t oh = x.size(2) * 4 / 7, ow = x.size(3) * 3 / 7;
    const std::string other_size = std::to_string(oh) + "x" + std::to_string(ow);
    at::Tensor crop = x.narrow(0, 0, 1).narrow(2, 0, oh).narrow(3, 0, ow);
    at::Tensor other = at::cat({crop, crop.flip({3})}).contiguous();
    if (fixed > 0) {
      // The one size it takes is the model's input size; others are refused
      // with both sizes named.
      EXPECT_EQ(info.crop_size, fixed);
      const std::string size = std::to_string(fixed) + "x" + std::to_string(fixed);
      try {
        clf.forward(other);
        ADD_FAILURE() << arch << " accepted " << other_size << " input";
      } catch (const ModelError& e) {
        const std::string m = e.what();
        for (const std::string& part : {arch, size, other_size})
          EXPECT_NE(m.find(part), std::string::npos) << "'" << part << "' not in: " << m;
      }
      return;
    }
    if (arch == "maxvit_t") {
      // Its attention windows must tile every stage's map: 192x160 is
      // refused naming the size; 448x448 (windows fit) runs.
      try {
        clf.forward(other);
        ADD_FAILURE() << arch << " accepted " << other_size << " input";
      } catch (const ModelError& e) {
        EXPECT_NE(std::string(e.what()).find(other_size), std::string::npos) << e.what();
      }
      other = at::upsample_bilinear2d(x.narrow(0, 0, 1), {448, 448}, false);
    }
    // Other image sizes are served too.
    const double err = relative_error(clf.forward(other), clf.forward_eager(other));
    EXPECT_LE(err, kTolerance) << arch << " optimised vs eager on " << shape_str(other.sizes().vec());
    t.lap("other size");

  }

 private:
  nlohmann::json e_;
};

}  // namespace

// Architectures the fixtures' torchvision predates: reported, not dropped.
class Unavailable : public ::testing::Test {
 public:
  explicit Unavailable(std::string why) : why_(std::move(why)) {}
  void TestBody() override { GTEST_SKIP() << why_; }

 private:
  std::string why_;
};

// Every architecture ptm knows has a parity fixture (or is reported
// unavailable): a new registry row without one fails here.
TEST(Parity, EveryArchitectureIsCovered) {
  const auto& m = manifest();
  if (!m.value("only", std::string()).empty()) GTEST_SKIP() << "fixtures made for some architectures only";
  // Each fixture set covers the architectures of its source (torchvision's
  // by make_fixtures.py, timm's by make_timm_fixtures.py).
  const std::string source = m.value("source", std::string("torchvision"));
  // tests/parity/run_parity.py tests the fixtures in batches and lists in
  // its last manifest what all of them covered.
  std::set<std::string> covered;
  if (m.contains("covered")) {
    for (const auto& name : m["covered"]) covered.insert(name.get<std::string>());
  } else {
    for (const auto& e : m["models"]) covered.insert(e["architecture"].get<std::string>());
    for (const auto& e : m.value("unavailable", nlohmann::json::array()))
      covered.insert(e["architecture"].get<std::string>());
  }
  size_t n = 0;
  for (const auto& a : architectures()) {
    if (a.source != source) continue;
    EXPECT_TRUE(covered.count(a.name)) << a.name << " has no parity fixture";
    ++n;
  }
  EXPECT_GT(n, 0u) << "no architecture from " << source;
  for (const auto& name : covered) {
    const ArchInfo* a = find_architecture(name);
    EXPECT_TRUE(a && a->source == source) << name << ": in the " << source << " fixtures, not a " << source
                                          << " architecture of the registry";
  }
}

void register_dynamic_tests() {
  for (const auto& e : manifest().value("unavailable", nlohmann::json::array())) {
    const std::string name = e.value("test", std::string(e["architecture"])), why = e["reason"];
    ::testing::RegisterTest("Parity", name.c_str(), nullptr, nullptr, __FILE__, __LINE__,
                            [why]() -> ::testing::Test* { return new Unavailable(why); });
  }
  for (const auto& e : manifest()["models"]) {
    const std::string name = e.value("test", std::string(e["architecture"]));  // one architecture, several files
    ::testing::RegisterTest("Parity", name.c_str(), nullptr, nullptr, __FILE__, __LINE__,
                            [e]() -> ::testing::Test* { return new Parity(e); });
  }
}

}  // namespace ptm::test
