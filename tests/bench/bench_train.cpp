// Fine-tuning benchmark: training a linear head on 1000 cached feature
// vectors for 20 epochs, next to extracting those 1000 features with the
// frozen backbone (measured on 40 frames, scaled), for one model.
//   bench-train MODEL.pth
#include <ATen/ATen.h>

#include <chrono>
#include <cstdio>

#include "models/classifier.h"
#include "models/trainer.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: bench-train MODEL.pth\n");
    return 2;
  }
  ptm::ClassifierOptions o;
  o.model = argv[1];
  o.optimize = false;
  ptm::Classifier clf(o);
  const int s = clf.info().crop_size;
  at::Tensor x = at::randn({1, 3, s, s});
  clf.features(x);  // warm-up
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 40; ++i) clf.features(x);
  const double per_frame = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / 40;

  const int64_t d = clf.feature_size();
  at::manual_seed(0);
  at::Tensor labels = at::randint(0, 4, {1000}, at::kLong);
  at::Tensor means = at::randn({4, d});
  at::Tensor feats = at::randn({1000, d}) + means.index_select(0, labels);  // four separable clusters
  ptm::TrainSettings ts;
  ts.epochs = 20;
  ts.patience = 0;
  t0 = std::chrono::steady_clock::now();
  ptm::TrainedHead h = ptm::train_linear_head(feats, labels, 4, ts);
  const double train = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("%s, %lld-d features, 1000 samples, 20 epochs, batch %d, Adam\n", clf.info().architecture.c_str(),
              static_cast<long long>(d), ts.batch_size);
  std::printf("  training the head:                 %7.2f s   (goal <= 2 s)\n", train);
  std::printf("  extracting 1000 features (eager):  %7.2f s   (%.1f ms a frame)\n", per_frame * 1000, per_frame * 1e3);
  std::printf("  training / extraction:             %7.2fx\n", train / (per_frame * 1000));
  std::printf("  final validation accuracy %.3f after %zu epochs\n", h.validation_accuracy, h.epochs.size());
  return 0;
}
