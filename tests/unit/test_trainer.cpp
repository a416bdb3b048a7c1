// The head trainer on synthetic features: it learns, is reproducible, keeps
// the best epoch, and refuses what it cannot do.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "models/error.h"
#include "models/trainer.h"

namespace ptm::test {
namespace {

struct Data {
  at::Tensor x, y;
};

Data clusters(int64_t n, int64_t d, int64_t classes, double spread, uint64_t seed) {
  at::manual_seed(seed);
  at::Tensor y = at::randint(0, classes, {n}, at::kLong);
  at::Tensor means = at::randn({classes, d}) * 3;
  return {at::randn({n, d}) * spread + means.index_select(0, y), y};
}

TEST(Trainer, LearnsSeparableClasses) {
  Data d = clusters(400, 64, 5, 1.0, 1);
  TrainSettings s;
  s.epochs = 30;
  TrainedHead h = train_linear_head(d.x, d.y, 5, s);
  EXPECT_GE(h.validation_accuracy, 0.95);
  EXPECT_GE(h.best_epoch, 1);
  EXPECT_EQ(h.weight.sizes(), (at::IntArrayRef{5, 64}));
  EXPECT_EQ(h.train_samples + h.validation_samples, 400);
  EXPECT_GT(h.validation_samples, 60);
}

TEST(Trainer, SameSeedSameWeights) {
  Data d = clusters(200, 32, 3, 2.0, 2);
  TrainSettings s;
  s.seed = 11;
  TrainedHead a = train_linear_head(d.x, d.y, 3, s), b = train_linear_head(d.x, d.y, 3, s);
  EXPECT_TRUE(a.weight.equal(b.weight));
  EXPECT_TRUE(a.bias.equal(b.bias));
  s.seed = 12;
  TrainedHead c = train_linear_head(d.x, d.y, 3, s);
  EXPECT_FALSE(a.weight.equal(c.weight));
}

TEST(Trainer, KeepsTheBestEpochEvenWhenLossIsHigh) {
  // Hard data: validation loss stays above 1, the best epoch must still be kept.
  Data d = clusters(300, 16, 10, 20.0, 3);
  TrainSettings s;
  s.epochs = 5;
  s.patience = 0;
  TrainedHead h = train_linear_head(d.x, d.y, 10, s);
  ASSERT_GE(h.best_epoch, 1);
  EXPECT_LE(h.best_epoch, 5);
  EXPECT_EQ(h.validation_accuracy, h.epochs[size_t(h.best_epoch - 1)].validation_accuracy);
}

TEST(Trainer, EarlyStoppingStops) {
  Data d = clusters(300, 16, 3, 0.5, 4);
  TrainSettings s;
  s.epochs = 500;
  s.patience = 3;
  s.learning_rate = 0.05;
  TrainedHead h = train_linear_head(d.x, d.y, 3, s);
  EXPECT_LT(h.epochs.size(), 500u);
}

TEST(Trainer, RefusesWhatItCannotDo) {
  Data d = clusters(50, 8, 2, 1.0, 5);
  TrainSettings s;
  at::Tensor nan = d.x.clone();
  nan[0][0] = std::nanf("");
  try {
    train_linear_head(nan, d.y, 2, s);
    FAIL() << "NaN features trained";
  } catch (const ModelError& e) {
    EXPECT_NE(std::string(e.what()).find("diverged"), std::string::npos) << e.what();
  }
  EXPECT_THROW(train_linear_head(d.x, d.y, 1, s), ModelError);              // one class
  EXPECT_THROW(train_linear_head(d.x, d.y + 5, 2, s), ModelError);          // labels out of range
  EXPECT_THROW(train_linear_head(d.x.slice(0, 0, 0), d.y.slice(0, 0, 0), 2, s), ModelError);  // nothing
  EXPECT_THROW(train_linear_head(d.x, d.y.slice(0, 0, 10), 2, s), ModelError);  // sizes differ
}

}  // namespace

void register_dynamic_tests() {}

}  // namespace ptm::test
