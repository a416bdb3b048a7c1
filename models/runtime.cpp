#include "runtime.h"

#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>
#include <c10/util/Exception.h>
#include <torch/csrc/jit/runtime/graph_executor.h>
#include <torch/version.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <list>
#include <mutex>
#include <unordered_map>
#include <vector>
#include <set>
#include <string>
#include <thread>

#ifdef __GLIBC__
#include <malloc.h>
#endif

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

// LibTorch's CPU tensors (activations above all) through a cache of freed
// blocks. glibc hands large freed blocks back to the kernel (munmap, heap
// trimming) and the next forward pass faults the same memory in again, page
// by page: efficientnet_b0's pass ran 14 to 43 ms depending on where glibc's
// thresholds happened to stand (2,000 to 5,000 page faults a frame). A
// forward pass asks for the same sizes every time, so blocks of one size
// freed by the last pass serve the next.
class ReuseAllocator final : public c10::Allocator {
 public:
  explicit ReuseAllocator(c10::Allocator* base) : base_(base) {}

#if TORCH_VERSION_MAJOR >= 2
  c10::DataPtr allocate(size_t n) override { return take(n); }
  void copy_data(void* dest, const void* src, std::size_t count) const override { default_copy_data(dest, src, count); }
#else
  c10::DataPtr allocate(size_t n) const override { return take(n); }
#endif
  c10::DeleterFnPtr raw_deleter() const override { return &release; }

  static ReuseAllocator* instance;

  // Gives every kept block back (memory short; after a model load).
  void drop_cached() const {
    std::vector<void*> gone;
    {
      std::lock_guard<std::mutex> g(lock_);
      for (const Free& f : lru_) gone.push_back(f.data);
      lru_.clear();
      by_size_.clear();
      cached_ = 0;
    }
    for (void* p : gone) c10::free_cpu(p);
  }

  size_t cached() const {
    std::lock_guard<std::mutex> g(lock_);
    return cached_;
  }

 private:
  // Smaller blocks: glibc's bins serve them without the kernel.
  static constexpr size_t kMinBlock = 64 << 10;
  // Freed bytes kept at most; the longest unused go first beyond it.
  static constexpr size_t kMaxCached = size_t(256) << 20;

  struct Free {
    size_t size;
    void* data;
  };

  c10::DataPtr take(size_t n) const {
    if (n < kMinBlock) return base_->allocate(n);  // with the base's deleter
    const size_t size = (n + 4095) & ~size_t(4095);
    void* p = reuse(size);
    if (!p) {
      try {
        p = c10::alloc_cpu(size);
      } catch (const c10::Error&) {
        drop_cached();  // memory short: give back what is kept, then try again
        p = c10::alloc_cpu(size);
      }
      std::lock_guard<std::mutex> g(lock_);
      live_[p] = size;
    }
    return {p, p, &release, c10::Device(c10::DeviceType::CPU)};
  }

  void* reuse(size_t size) const {
    std::lock_guard<std::mutex> g(lock_);
    auto it = by_size_.find(size);
    if (it == by_size_.end() || it->second.empty()) return nullptr;
    const auto block = it->second.back();
    it->second.pop_back();
    void* p = block->data;
    cached_ -= size;
    lru_.erase(block);
    live_[p] = size;
    return p;
  }

  // The deleter of every block handed out here (and, through the raw form,
  // of small ones the base allocator made).
  static void release(void* p) {
    if (!p) return;
    ReuseAllocator& a = *instance;
    std::vector<void*> gone;
    {
      std::lock_guard<std::mutex> g(a.lock_);
      auto it = a.live_.find(p);
      if (it == a.live_.end()) {
        c10::DeleterFnPtr base = a.base_->raw_deleter();
        if (base) base(p);
        else c10::free_cpu(p);
        return;
      }
      const size_t size = it->second;
      a.live_.erase(it);
      if (size > kMaxCached) {
        gone.push_back(p);
      } else {
        a.lru_.push_back({size, p});
        a.by_size_[size].push_back(std::prev(a.lru_.end()));
        a.cached_ += size;
        while (a.cached_ > kMaxCached) {
          // The oldest kept block is also the first kept of its size.
          const Free oldest = a.lru_.front();
          auto& same = a.by_size_[oldest.size];
          same.erase(same.begin());
          a.lru_.pop_front();
          a.cached_ -= oldest.size;
          gone.push_back(oldest.data);
        }
      }
    }
    for (void* q : gone) c10::free_cpu(q);
  }

  c10::Allocator* base_;
  mutable std::mutex lock_;
  mutable std::unordered_map<void*, size_t> live_;  // handed out, by address
  mutable std::list<Free> lru_;                     // kept, oldest first
  mutable std::unordered_map<size_t, std::vector<std::list<Free>::iterator>> by_size_;
  mutable size_t cached_ = 0;
};

ReuseAllocator* ReuseAllocator::instance = nullptr;

}  // namespace

void init() {
  static std::once_flag once;
  std::call_once(once, [] {
    torch::jit::getProfilingMode() = false;
    const char* choice = std::getenv("PTM_CPU_ALLOCATOR");
    if (!(choice && std::strcmp(choice, "system") == 0)) {
      ReuseAllocator::instance = new ReuseAllocator(c10::GetCPUAllocator());  // lives as long as the process
      c10::SetCPUAllocator(ReuseAllocator::instance, 1);
    }
  });
}

void init_cuda() {
  static std::once_flag once;
  std::call_once(once, [] {
    at::globalContext().setAllowTF32CuDNN(false);
    at::globalContext().setAllowTF32CuBLAS(false);
    at::globalContext().setBenchmarkCuDNN(true);
  });
}

size_t cpu_cache_bytes() { return ReuseAllocator::instance ? ReuseAllocator::instance->cached() : 0; }

void release_cached_memory() {
  if (ReuseAllocator::instance) ReuseAllocator::instance->drop_cached();
#ifdef __GLIBC__
  malloc_trim(0);
#endif
}

bool cpu_cache_installed() {
  return ReuseAllocator::instance && c10::GetCPUAllocator() == ReuseAllocator::instance;
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

bool cpu_has_vnni() {
#if defined(__x86_64__) && defined(__GNUC__)
  return __builtin_cpu_supports("avx512vnni") || __builtin_cpu_supports("avxvnni");
#else
  return true;  // ARM's QNNPACK kernels widen to 32 bits
#endif
}

void use_threads(int threads) {
  install_once_warnings();
  const int n = resolve_threads(threads);
  if (at::get_num_threads() != n) at::set_num_threads(n);
}

}  // namespace ptm::runtime
