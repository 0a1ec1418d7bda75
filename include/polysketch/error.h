// The one exception type of the library (Python: ValueError with the same message).
#pragma once

#include <stdexcept>

namespace polysketch {

// Thrown for every invalid configuration or input; the message names the offending value.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace polysketch
