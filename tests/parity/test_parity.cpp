// Parity with torchvision: every built-in architecture loads the state dict
// torchvision saved and reproduces torchvision's logits on the same input,
// both eagerly and through the optimised inference graph.
#include <gtest/gtest.h>

#include <torch/nn/module.h>

#include "../common/fixtures.h"
#include "models/architectures.h"
#include "models/checkpoint.h"
#include "models/classifier.h"
#include "models/loader.h"

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

class Parity : public ::testing::Test {
 public:
  explicit Parity(nlohmann::json entry) : e_(std::move(entry)) {}
  void TestBody() override {
    const std::string arch = e_["architecture"], file = e_["file"];
    const int64_t nc = e_["num_classes"];
    at::Tensor x = input_batch();
    at::Tensor want = read_f32(e_["logits"], {x.size(0), nc});

    Checkpoint ck = read_checkpoint(fixture(file));
    Candidate c = detect_architecture(ck.state);
    EXPECT_EQ(c.name, arch);
    EXPECT_EQ(c.num_classes, nc);

    auto model = create_architecture(arch, nc);
    LoadReport r = load_into(*model, arch, ck.state, {});
    EXPECT_TRUE(r.clean()) << r.details();
    at::NoGradGuard ng;
    expect_parity(model->forward(x), want, arch + " eager");

    ClassifierOptions o;
    o.model = fixture(file);
    Classifier clf(o);
    EXPECT_EQ(clf.info().architecture, arch);
    for (const auto& n : clf.info().notes) EXPECT_EQ(n.find("unavailable"), std::string::npos) << n;
    expect_parity(clf.forward(x), want, arch + " optimised");

    // Other image sizes (and batch sizes) are served too.
    at::Tensor other = x.narrow(2, 0, 192).narrow(3, 0, 160).contiguous();
    const double err = relative_error(clf.forward(other), model->forward(other));
    EXPECT_LE(err, kTolerance) << arch << " optimised vs eager on 2x3x192x160";

    // The optimised graph serves the architecture's own input size; where
    // that is not the fixtures' (inception_v3's 299), compare it there too.
    const int64_t crop = clf.info().crop_size;
    if (crop != x.size(2) || crop != x.size(3)) {
      at::Tensor own = at::upsample_bilinear2d(x.narrow(0, 0, 1), {crop, crop}, false);
      const double e = relative_error(clf.forward(own), model->forward(own));
      EXPECT_LE(e, kTolerance) << arch << " optimised vs eager on 1x3x" << crop << "x" << crop;
      const std::string what = arch + " optimised " + std::to_string(crop);
      std::printf("[ parity ] %-28s rel. max diff %.2e (vs eager)\n", what.c_str(), e);
    }
  }

 private:
  nlohmann::json e_;
};

}  // namespace

void register_dynamic_tests() {
  for (const auto& e : manifest()["models"]) {
    const std::string name = e.value("test", std::string(e["architecture"]));  // one architecture, several files
    ::testing::RegisterTest("Parity", name.c_str(), nullptr, nullptr, __FILE__, __LINE__,
                            [e]() -> ::testing::Test* { return new Parity(e); });
  }
}

}  // namespace ptm::test
