// A named parameter tensor: what attention mechanisms and the model expose for training,
// checkpoints and the Python module.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace polysketch {

template <typename T>
struct Param {
  std::string name;
  std::vector<int64_t> shape;  // row-major
  std::vector<T> value;
};

}  // namespace polysketch
