// Process-level LibTorch settings. LibTorch keeps these globally, so ptm
// decides them once for the whole process instead of letting the last model
// constructed win; the one per-model setting, the thread count, is applied
// on the calling thread before each model call.
#pragma once

#include <cstddef>
#include <system_error>
#include <thread>

namespace ptm::runtime {

// Once per process, idempotent: the JIT profiling executor off (a graph's
// first calls run at steady-state speed).
void init();

// Once per process, on the first CUDA model: TF32 off (float32 means float32:
// TF32 moves logits by ~1e-3 and can reorder close classes against the CPU;
// reduced precision is asked for with `precision`), and cuDNN autotuning on
// (video has one input shape per batch size). No-op without CUDA LibTorch.
void init_cuda();

// LibTorch's CPU allocator, installed by init() (unless the environment
// sets PTM_CPU_ALLOCATOR=system): blocks of 64 KB and more, once freed, are
// kept (256 MB at most, the longest unused given back first) for the next
// request of the same size, so a forward pass takes its activations' memory
// from the last one's instead of the kernel's page faults. The bytes it
// keeps now, and whether it is the one in use (for tests and diagnostics).
size_t cpu_cache_bytes();
bool cpu_cache_installed();
// After a model load: the blocks kept then (what tracing, freezing and the
// load's timing passes freed: 50-80 MB for a ResNet-18) are given back,
// and glibc's free memory with them (malloc_trim). The forward passes
// that follow keep what they use again.
void release_cached_memory();

// Before a model call, on the calling thread: `threads` intra-op threads
// (0: every core) for LibTorch work issued from this thread, and LibTorch
// warnings reported once per process, as Python does (LibTorch keeps both
// per thread). Two models used from two streaming threads keep their own
// counts. Cheap when nothing changes.
void use_threads(int threads);
int resolve_threads(int threads);  // 0 -> every core

// True when this CPU computes in bfloat16 natively (x86: AVX-512 BF16 or
// AMX-BF16), where oneDNN runs bfloat16 models faster than float32.
bool cpu_has_bf16();
// 8-bit dot-product instructions (AVX-512 VNNI or AVX-VNNI): int8 models
// use the whole 8-bit range of activations where the CPU has them.
bool cpu_has_vnni();

// Runs `fn` on a thread of its own and waits for it: for LibTorch work off
// a thread that should not keep an OpenMP team (loading a model in start(),
// training from an action signal, a shared model's load). LibTorch leaves
// an OpenMP team on every thread it computed on, for as long as the thread
// lives, and idle teams beyond the cores make libgomp's threads sleep
// between parallel regions instead of spinning: the streaming thread's
// forward passes ran ~25 % slower while the application's thread held one.
// Where no thread can be started (address space or thread limits reached),
// `fn` runs on the calling thread.
template <typename F>
void on_own_thread(F&& fn) {
  std::thread t;
  try {
    t = std::thread([&fn] { fn(); });
  } catch (const std::system_error&) {
    fn();
    return;
  }
  t.join();
}

}  // namespace ptm::runtime
