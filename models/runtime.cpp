#include "runtime.h"

#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <torch/csrc/jit/runtime/graph_executor.h>
#include <torch/version.h>

#include <algorithm>
#include <mutex>
#include <set>
#include <string>
#include <thread>

namespace ptm::runtime {

namespace {

// Graphs and eager kernels may repeat one warning on every call (LibTorch
// 1.13's oneDNN graphs resize padded outputs each time); PyTorch's Python
// layer shows each warning once. Do the same.
// LibTorch keeps the handler per thread: one of these per thread, sharing
// the process-wide set of messages already shown.
class OnceWarningHandler : public c10::WarningHandler {
 public:
  explicit OnceWarningHandler(c10::WarningHandler* previous) : previous_(previous) {}
#if TORCH_VERSION_MAJOR >= 2
  void process(const c10::Warning& w) override {
    if (first(w.msg()))
      previous_->process(c10::Warning(w.type(), w.source_location(), w.msg() + " (reported once)", w.verbatim()));
  }
#else
  void process(const c10::SourceLocation& loc, const std::string& msg, const bool verbatim) override {
    if (first(msg)) previous_->process(loc, msg + " (reported once)", verbatim);
  }
#endif

 private:
  static bool first(const std::string& msg) {
    static std::mutex mutex;
    static std::set<std::string> seen;
    std::lock_guard<std::mutex> lock(mutex);
    return seen.insert(msg).second;
  }
  c10::WarningHandler* previous_;
};

void install_once_warnings() {
  thread_local bool installed = false;
  if (installed) return;
  installed = true;
#if TORCH_VERSION_MAJOR >= 2
  thread_local OnceWarningHandler handler(c10::WarningUtils::get_warning_handler());
  c10::WarningUtils::set_warning_handler(&handler);
#else
  thread_local OnceWarningHandler handler(c10::Warning::get_warning_handler());
  c10::Warning::set_warning_handler(&handler);
#endif
}

}  // namespace

void init() {
  static std::once_flag once;
  std::call_once(once, [] { torch::jit::getProfilingMode() = false; });
}

void init_cuda() {
  static std::once_flag once;
  std::call_once(once, [] {
    at::globalContext().setAllowTF32CuDNN(false);
    at::globalContext().setAllowTF32CuBLAS(false);
    at::globalContext().setBenchmarkCuDNN(true);
  });
}

int resolve_threads(int threads) {
  return threads > 0 ? threads : int(std::max(1u, std::thread::hardware_concurrency()));
}

bool cpu_has_bf16() {
#if defined(__x86_64__) && defined(__GNUC__)
  return __builtin_cpu_supports("avx512bf16") || __builtin_cpu_supports("amx-bf16");
#else
  return false;
#endif
}

void use_threads(int threads) {
  install_once_warnings();
  const int n = resolve_threads(threads);
  if (at::get_num_threads() != n) at::set_num_threads(n);
}

}  // namespace ptm::runtime
