// Forward-pass benchmark, batch 1: ptm's eager module and its optimised
// graph next to PyTorch's own eager and freeze + optimize_for_inference
// paths (tests/bench/torch_forward.py, same weights, same thread count).
//   bench-forward SCRIPT PYTHON FIXTURES_DIR [--runs N] [--threads N] [ARCH...]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "models/checkpoint.h"
#include "models/classifier.h"
#include "models/registry.h"

namespace {

double median_ms(int runs, const std::function<void()>& fn) {
  fn();
  fn();
  std::vector<double> t;
  for (int i = 0; i < runs; ++i) {
    auto a = std::chrono::steady_clock::now();
    fn();
    t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - a).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: bench-forward SCRIPT PYTHON FIXTURES_DIR [--runs N] [--threads N] [ARCH...]\n");
    return 2;
  }
  const std::string script = argv[1], python = argv[2], dir = argv[3];
  int runs = 20, threads = int(std::max(1u, std::thread::hardware_concurrency()));
  std::vector<std::string> archs;
  for (int i = 4; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--runs" && i + 1 < argc) runs = std::stoi(argv[++i]);
    else if (a == "--threads" && i + 1 < argc) threads = std::stoi(argv[++i]);
    else archs.push_back(a);
  }
  if (archs.empty()) archs = {"resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0"};

  std::map<std::string, std::pair<double, double>> py;
  std::ostringstream cmd;
  cmd << python << " " << script << " " << threads << " " << runs;
  for (const auto& a : archs) {
    ptm::Checkpoint ck = ptm::read_checkpoint(dir + "/" + a + ".pth");
    cmd << " " << a << ":" << dir << "/" << a << ".pth:" << ptm::find_architecture(a)->crop_size << ":"
        << ptm::detect_architecture(ck.state).num_classes;
  }
  if (FILE* p = popen(cmd.str().c_str(), "r")) {
    char name[64];
    double e, o;
    while (std::fscanf(p, "%63s %lf %lf", name, &e, &o) == 3) py[name] = {e, o};
    pclose(p);
  }

  std::printf("batch 1, %d threads, median of %d runs (ms; ratio = PyTorch frozen / ptm optimised)\n", threads, runs);
  std::printf("%-20s %10s %12s %14s %14s %8s\n", "model", "ptm eager", "ptm optimised", "PyTorch eager",
              "PyTorch frozen", "ratio");
  for (const auto& a : archs) {
    ptm::ClassifierOptions o;
    o.model = dir + "/" + a + ".pth";
    o.threads = threads;
    o.optimize = false;
    ptm::Classifier eager(o);
    o.optimize = true;
    ptm::Classifier opt(o);
    const int64_t s = eager.info().crop_size;
    at::Tensor x = at::randn({1, 3, s, s});
    const double te = median_ms(runs, [&] { eager.forward(x); });
    const double to = median_ms(runs, [&] { opt.forward(x); });
    auto it = py.find(a);
    if (it == py.end()) {
      std::printf("%-20s %10.2f %12.2f %14s %14s\n", a.c_str(), te, to, "n/a", "n/a");
      continue;
    }
    std::printf("%-20s %10.2f %12.2f %14.2f %14.2f %7.2fx\n", a.c_str(), te, to, it->second.first, it->second.second,
                it->second.second / to);
  }
  return 0;
}
