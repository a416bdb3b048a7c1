// Forward-pass benchmark, batch 1, per LibTorch version: ptm's eager module,
// its optimised graph and (LibTorch >= 2.6) the AOTInductor package next to
// PyTorch's own CPU paths of the Python torch at hand (tests/bench/
// torch_forward.py: eager, freeze [+ optimize_for_inference], torch.compile
// with freezing, AOTInductor), same weights, same thread count. The ratio is
// PyTorch's best path over ptm's best: above 1, ptm is faster.
//   bench-forward SCRIPT PYTHON FIXTURES_DIR OUT_DIR [--runs N] [--threads N] [ARCH...]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdlib>
#include <chrono>
#include <cstdio>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <torch/version.h>

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

std::string fmt(double v) {
  char b[32];
  if (v <= 0) return "n/a";
  std::snprintf(b, sizeof b, "%.2f", v);
  return b;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 5) {
    std::fprintf(stderr, "usage: bench-forward SCRIPT PYTHON FIXTURES_DIR OUT_DIR [--runs N] [--threads N] [ARCH...]\n");
    return 2;
  }
  const std::string script = argv[1], python = argv[2], dir = argv[3], out = argv[4];
  int runs = 20, threads = int(std::max(1u, std::thread::hardware_concurrency()));
  std::vector<std::string> archs;
  for (int i = 5; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--runs" && i + 1 < argc) runs = std::stoi(argv[++i]);
    else if (a == "--threads" && i + 1 < argc) threads = std::stoi(argv[++i]);
    else archs.push_back(a);
  }
  if (archs.empty()) archs = {"resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0"};

  // NAME key=value ... from the Python side.
  std::map<std::string, std::map<std::string, std::string>> py;
  std::ostringstream cmd;
  cmd << python << " " << script << " " << threads << " " << runs << " " << out;
  for (const auto& a : archs) {
    ptm::Checkpoint ck = ptm::read_checkpoint(dir + "/" + a + ".pth");
    cmd << " " << a << ":" << dir << "/" << a << ".pth:" << ptm::find_architecture(a)->crop_size << ":"
        << ptm::detect_architecture(ck.state).num_classes;
  }
  std::string torch_version = "?";
  if (FILE* p = popen((python + " -c 'import torch; print(torch.__version__)'").c_str(), "r")) {
    char v[64] = {0};
    if (std::fscanf(p, "%63s", v) == 1) torch_version = v;
    pclose(p);
  }
  if (FILE* p = popen(cmd.str().c_str(), "r")) {
    char line[4096];
    while (std::fgets(line, sizeof line, p)) {
      std::istringstream in(line);
      std::string name, kv;
      in >> name;
      while (in >> kv)
        if (auto eq = kv.find('='); eq != std::string::npos) py[name][kv.substr(0, eq)] = kv.substr(eq + 1);
    }
    pclose(p);
  }
  auto num = [](const std::map<std::string, std::string>& m, const char* k) {
    auto it = m.find(k);
    if (it == m.end() || it->second == "n/a") return 0.0;
    return std::stod(it->second);
  };

  std::printf("batch 1, %d threads, median of %d runs, ms. ptm on LibTorch %s; PyTorch %s in Python.\n", threads, runs,
              TORCH_VERSION, torch_version.c_str());
  std::printf("ratio = PyTorch's fastest path / ptm's fastest path (above 1: ptm is faster)\n");
  std::printf("ptm optim: what a loaded model runs (the oneDNN executor where faster); ptm graph: LibTorch's graph "
              "alone (PTM_DNNL_GRAPH=0); ptm direct: as ptm optim, no Winograd convolution (PTM_DNNL_WINOGRAD=0)\n");
  std::printf("%-19s | %9s %9s %10s %9s %9s | %9s %9s %9s %9s %-10s | %7s\n", "model", "ptm eager", "ptm graph",
              "ptm direct", "ptm optim", "ptm .pt2", "py eager", "py frozen", "py compil", "py aoti", "(frozen)", "ratio");
  for (const auto& a : archs) {
    ptm::ClassifierOptions o;
    o.model = dir + "/" + a + ".pth";
    o.threads = threads;
    o.optimize = false;
    ptm::Classifier eager(o);
    o.optimize = true;
    setenv("PTM_DNNL_GRAPH", "0", 1);
    ptm::Classifier graph(o);
    unsetenv("PTM_DNNL_GRAPH");
    setenv("PTM_DNNL_WINOGRAD", "0", 1);
    ptm::Classifier direct(o);
    unsetenv("PTM_DNNL_WINOGRAD");
    ptm::Classifier opt(o);
    const int64_t s = eager.info().crop_size;
    at::Tensor x = at::randn({1, 3, s, s});
    const double te = median_ms(runs, [&] { eager.forward(x); });
    const double tg = median_ms(runs, [&] { graph.forward(x); });
    const double td = median_ms(runs, [&] { direct.forward(x); });
    const double to = median_ms(runs, [&] { opt.forward(x); });
    const auto& m = py[a];
    double tp = 0;
#if PTM_HAVE_AOTI
    if (auto it = m.find("pt2"); it != m.end() && it->second != "n/a") {
      try {
        o.model = it->second;
        ptm::Classifier pkg(o);
        tp = median_ms(runs, [&] { pkg.forward(x); });
      } catch (const std::exception& e) {
        std::fprintf(stderr, "bench-forward: %s: the .pt2 did not run: %s\n", a.c_str(), e.what());
      }
    }
#endif
    double best_py = 0, best_ptm = to;
    for (const char* k : {"eager", "frozen", "compiled", "aoti"})
      if (double v = num(m, k); v > 0 && (best_py == 0 || v < best_py)) best_py = v;
    if (tp > 0) best_ptm = std::min(best_ptm, tp);
    const std::string note = m.count("frozen_note") ? m.at("frozen_note") : "n/a";
    std::printf("%-19s | %9s %9s %10s %9s %9s | %9s %9s %9s %9s %-10s | %6sx\n", a.c_str(), fmt(te).c_str(),
                fmt(tg).c_str(), fmt(td).c_str(), fmt(to).c_str(),
                fmt(tp).c_str(), fmt(num(m, "eager")).c_str(), fmt(num(m, "frozen")).c_str(),
                fmt(num(m, "compiled")).c_str(), fmt(num(m, "aoti")).c_str(), note.c_str(),
                best_py > 0 ? fmt(best_py / best_ptm).c_str() : "n/a");
  }
  return 0;
}
