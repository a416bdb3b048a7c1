// Load-time benchmark: for each model file given, prints side by side the
// time to read the file's bytes, to parse it into tensors (with and without
// CRC checks), and to load it into its architecture, as ratios to the read.
// With --whole, also the whole load of a classifier (ptm::Classifier: file,
// architecture, optimised graph, oneDNN executor) with the executor tried
// first against the frozen graph, next to every LibTorch candidate graph
// built first (PTM_DNNL_FIRST=0, the rule before), in turns.
//   bench-load FILE... [--runs N] [--whole]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/nn/module.h>
#include <torch/version.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "models/architectures.h"
#include "models/bytes.h"
#include "models/checkpoint.h"
#include "models/classifier.h"
#include "models/loader.h"

namespace {

double ms_since(std::chrono::steady_clock::time_point a) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - a).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Runs the steps round-robin so machine noise hits them alike; returns the
// median time of each.
std::vector<double> interleaved(int runs, const std::vector<std::function<void()>>& steps) {
  std::vector<std::vector<double>> t(steps.size());
  for (auto& s : steps) s();  // warm the page cache and the thread pool
  for (int r = 0; r < runs; ++r)
    for (size_t i = 0; i < steps.size(); ++i) {
      auto a = std::chrono::steady_clock::now();
      steps[i]();
      t[i].push_back(ms_since(a));
    }
  std::vector<double> out;
  for (auto& v : t) out.push_back(median(v));
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  int runs = 9;
  bool whole = false;
  std::vector<std::string> files;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--runs" && i + 1 < argc) runs = std::stoi(argv[++i]);
    else if (a == "--whole") whole = true;
    else files.push_back(a);
  }
  if (files.empty()) {
    std::fprintf(stderr, "usage: bench-load FILE... [--runs N] [--whole]\n");
    return 2;
  }
  at::set_num_threads(int(std::max(1u, std::thread::hardware_concurrency())));
  std::printf("%-28s %9s %10s %12s %12s %12s %8s %8s\n", "file", "MB", "read ms", "parse ms",
              "parse+crc", "into model", "ratio", "goal");
  for (const auto& f : files) {
    ptm::Bytes probe = ptm::read_file(f);
    const double mb = double(probe.size) / 1e6;
    probe = {};
    ptm::ReadOptions nocrc;
    nocrc.verify_checksums = false;
    ptm::Checkpoint ck = ptm::read_checkpoint(f);
    const ptm::Candidate c = ptm::detect_architecture(ck.state);
    auto model = ptm::create_architecture(c.name, c.num_classes);
    auto t = interleaved(runs, {
        [&] { ptm::read_file(f); },
        [&] { ptm::read_checkpoint(f, nocrc); },
        [&] { ptm::read_checkpoint(f); },
        [&] {
          ptm::Checkpoint k = ptm::read_checkpoint(f);
          ptm::LoadOptions lo;
          lo.share_memory = k.state.nbytes() * 4 >= int64_t(k.file_bytes) * 3;  // as the runtime decides
          ptm::load_into(*model, c.name, k.state, lo);
        },
    });
    const double read = t[0], parse = t[1], parse_crc = t[2], into = t[3];
    const double build = median(interleaved(3, {[&] { ptm::create_architecture(c.name, c.num_classes); }}));
    const std::string name = f.substr(f.find_last_of('/') + 1);
    std::printf("%-28s %9.1f %10.1f %12.1f %12.1f %12.1f %7.2fx %8s\n", name.c_str(), mb, read, parse, parse_crc,
                into, into / read, "<=1.5x");
    std::printf("%-28s building %s itself (random init, not part of the load): %.1f ms\n", "", c.name.c_str(), build);
  }
  if (!whole) return 0;
  std::printf("\nwhole load (ptm::Classifier, optimised, %d threads), median of %d:\n", at::get_num_threads(), runs);
  if (TORCH_VERSION_MAJOR < 2)
    std::printf("(LibTorch %d.%d keeps one order, the executor raced against its converted graph: both columns "
                "are the same rule)\n",
                TORCH_VERSION_MAJOR, TORCH_VERSION_MINOR);
  std::printf("%-28s %16s %16s %8s  %s\n", "file", "executor first", "all candidates", "ratio", "runs on");
  for (const auto& f : files) {
    ptm::ClassifierOptions o;
    o.model = f;
    o.threads = at::get_num_threads();
    o.optimize = true;
    std::string first_runs, all_runs;
    auto load = [&](const char* rule, std::string* runs_on) {
      setenv("PTM_DNNL_FIRST", rule, 1);
      ptm::Classifier c(o);
      *runs_on = "LibTorch's graph";
      for (const auto& n : c.info().notes)
        if (n.rfind("runs on ptm's oneDNN graph executor", 0) == 0) *runs_on = "executor";
    };
    auto t = interleaved(runs, {[&] { load("1", &first_runs); }, [&] { load("0", &all_runs); }});
    unsetenv("PTM_DNNL_FIRST");
    const std::string name = f.substr(f.find_last_of('/') + 1);
    std::printf("%-28s %13.0f ms %13.0f ms %7.2fx  %s / %s\n", name.c_str(), t[0], t[1], t[1] / t[0],
                first_runs.c_str(), all_runs.c_str());
  }
  return 0;
}
