// The tests' tiny model: 2 layers of width 16 (2 heads of 8), vocabulary 40, sketch size r 4,
// blocks of `block` tokens: every path of the model in milliseconds. Tests override the fields
// their checks need.
#pragma once

#include <cstdint>

#include "polysketch/config.h"

namespace polysketch::test {

inline ModelConfig tiny_config(Mechanism mechanism, int64_t context, int block = 4) {
  ModelConfig c;
  c.vocab = 40;
  c.layers = 2;
  c.width = 16;
  c.heads = 2;
  c.context = context;
  c.attention.mechanism = mechanism;
  c.attention.r = 4;
  c.attention.block = block;
  return c;
}

}  // namespace polysketch::test
