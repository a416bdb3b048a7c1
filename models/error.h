// Error type shared by everything in models/: one message a user can act on.
#pragma once

#include <stdexcept>
#include <string>

namespace ptm {

class ModelError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace ptm
