// TorchScript archives: the only reader that runs code from the file
// (TorchScript is a program). Load only TorchScript files you trust.
#include <torch/script.h>

#include "checkpoint.h"

namespace ptm {

StateDict read_torchscript_state(const std::string& path) {
  torch::jit::Module m;
  try {
    m = torch::jit::load(path, torch::kCPU);
  } catch (const c10::Error& e) {
    throw ModelError("'" + path + "' is not a loadable TorchScript archive: " + e.what_without_backtrace());
  }
  StateDict sd;
  for (const auto& p : m.named_parameters(true)) sd.entries.push_back({p.name, p.value});
  for (const auto& b : m.named_buffers(true)) sd.entries.push_back({b.name, b.value});
  return sd;
}

}  // namespace ptm
