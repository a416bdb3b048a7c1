#include "trainer.h"

#include <torch/torch.h>

#include <cmath>
#include <limits>
#include <numeric>
#include <random>

#include "error.h"

namespace ptm {

namespace {

double accuracy(torch::nn::Linear& head, const at::Tensor& x, const at::Tensor& y) {
  if (x.size(0) == 0) return -1;
  torch::NoGradGuard ng;
  return head(x).argmax(1).eq(y).to(at::kDouble).mean().item<double>();
}

double mean_loss(torch::nn::Linear& head, const at::Tensor& x, const at::Tensor& y) {
  torch::NoGradGuard ng;
  return torch::nn::functional::cross_entropy(head(x), y).item<double>();
}

}  // namespace

TrainedHead train_linear_head(const at::Tensor& features, const at::Tensor& labels, int64_t classes,
                              const TrainSettings& s, const std::function<void(const EpochReport&)>& progress) {
  if (features.dim() != 2 || labels.dim() != 1 || features.size(0) != labels.size(0))
    throw ModelError("training needs N x D features and N labels");
  const int64_t n = features.size(0), d = features.size(1);
  if (n == 0) throw ModelError("no labelled samples to train on");
  if (classes < 2) throw ModelError("training needs at least two classes, got " + std::to_string(classes));
  if (s.epochs < 1 || s.batch_size < 1 || !(s.learning_rate > 0))
    throw ModelError("epochs, batch size and learning rate must be positive");

  // Deterministic per-class split: every class keeps samples on both sides
  // when it has at least two.
  std::mt19937_64 rng(s.seed);
  std::vector<std::vector<int64_t>> by_class(static_cast<size_t>(classes));
  const at::Tensor y = labels.to(at::kLong).contiguous();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t c = y[i].item<int64_t>();
    if (c < 0 || c >= classes) throw ModelError("label " + std::to_string(c) + " outside 0.." + std::to_string(classes - 1));
    by_class[size_t(c)].push_back(i);
  }
  std::vector<int64_t> train_idx, val_idx;
  for (auto& idx : by_class) {
    std::shuffle(idx.begin(), idx.end(), rng);
    size_t nv = size_t(std::floor(double(idx.size()) * std::clamp(s.validation_fraction, 0.0, 0.9)));
    if (idx.size() >= 2 && s.validation_fraction > 0 && nv == 0) nv = 1;
    val_idx.insert(val_idx.end(), idx.begin(), idx.begin() + long(nv));
    train_idx.insert(train_idx.end(), idx.begin() + long(nv), idx.end());
  }
  const at::Tensor x = features.to(at::kFloat).contiguous();
  const at::Tensor xt = x.index_select(0, torch::tensor(train_idx)), yt = y.index_select(0, torch::tensor(train_idx));
  const at::Tensor xv = val_idx.empty() ? torch::empty({0, d}) : x.index_select(0, torch::tensor(val_idx));
  const at::Tensor yv = val_idx.empty() ? torch::empty({0}, at::kLong) : y.index_select(0, torch::tensor(val_idx));

  torch::manual_seed(s.seed);
  torch::nn::Linear head(d, classes);
  std::unique_ptr<torch::optim::Optimizer> opt;
  if (s.optimizer == OptimizerKind::Adam)
    opt = std::make_unique<torch::optim::Adam>(
        head->parameters(), torch::optim::AdamOptions(s.learning_rate).weight_decay(s.weight_decay));
  else
    opt = std::make_unique<torch::optim::SGD>(
        head->parameters(),
        torch::optim::SGDOptions(s.learning_rate).momentum(s.momentum).weight_decay(s.weight_decay));

  TrainedHead out;
  out.train_samples = int64_t(train_idx.size());
  out.validation_samples = int64_t(val_idx.size());
  at::Tensor best_w = head->weight.detach().clone(), best_b = head->bias.detach().clone();
  double best = -std::numeric_limits<double>::infinity();
  int since_best = 0;
  std::vector<int64_t> order(train_idx.size());
  for (int epoch = 1; epoch <= s.epochs; ++epoch) {
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), rng);
    const at::Tensor perm = torch::tensor(order);
    double loss_sum = 0;
    for (int64_t b = 0; b < int64_t(order.size()); b += s.batch_size) {
      const at::Tensor idx = perm.slice(0, b, std::min<int64_t>(b + s.batch_size, int64_t(order.size())));
      opt->zero_grad();
      at::Tensor loss = torch::nn::functional::cross_entropy(head(xt.index_select(0, idx)), yt.index_select(0, idx));
      const double l = loss.item<double>();
      if (!std::isfinite(l))
        throw ModelError("training diverged (loss " + std::to_string(l) + ") in epoch " + std::to_string(epoch) +
                         "; lower the learning rate");
      loss.backward();
      opt->step();
      loss_sum += l * double(idx.size(0));
    }
    EpochReport r;
    r.epoch = epoch;
    r.loss = loss_sum / double(std::max<size_t>(1, order.size()));
    r.train_accuracy = accuracy(head, xt, yt);
    r.validation_accuracy = accuracy(head, xv, yv);
    out.epochs.push_back(r);
    if (progress) progress(r);
    // Early stopping follows the validation loss (accuracy saturates long
    // before the head has converged), else the training loss.
    const double score = r.validation_accuracy >= 0 ? -mean_loss(head, xv, yv) : -r.loss;
    if (score > best) {
      best = score;
      out.best_epoch = epoch;
      best_w = head->weight.detach().clone();
      best_b = head->bias.detach().clone();
      since_best = 0;
    } else if (s.patience > 0 && ++since_best >= s.patience) {
      break;
    }
  }
  out.weight = best_w;
  out.bias = best_b;
  out.validation_accuracy = out.epochs[size_t(out.best_epoch - 1)].validation_accuracy;
  return out;
}

}  // namespace ptm
