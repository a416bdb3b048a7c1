// Error type shared by everything in models/: one message a user can act on.
#pragma once

#include <stdexcept>
#include <string>

namespace ptm {

class ModelError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// What an exception says, for a user: LibTorch's errors without their C++
// backtrace and TorchScript interpreter traceback (the failing op's own
// message), a failed allocation as "out of memory". In models/classifier.cpp.
std::string error_text(const std::exception& e);

}  // namespace ptm
