// Process-level LibTorch settings. LibTorch keeps these globally, so ptm
// decides them once for the whole process instead of letting the last model
// constructed win; the one per-model setting, the thread count, is applied
// on the calling thread before each model call.
#pragma once

namespace ptm::runtime {

// Once per process, idempotent: the JIT profiling executor off (a graph's
// first calls run at steady-state speed).
void init();

// Once per process, on the first CUDA model: TF32 off (float32 means float32:
// TF32 moves logits by ~1e-3 and can reorder close classes against the CPU;
// reduced precision is asked for with `precision`), and cuDNN autotuning on
// (video has one input shape per batch size). No-op without CUDA LibTorch.
void init_cuda();

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

}  // namespace ptm::runtime
