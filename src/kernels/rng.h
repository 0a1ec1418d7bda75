// Deterministic random numbers, identical on every platform (the standard library's
// distributions are not): xoshiro256** seeded through splitmix64, Box-Muller normals.
#pragma once

#include <cstdint>

namespace polysketch::kernels {

class Rng {
 public:
  explicit Rng(uint64_t seed);
  // A stream derived from a seed and a list of integers (layer index, purpose tag, ...).
  static Rng derive(uint64_t seed, uint64_t a, uint64_t b = 0);

  uint64_t next_u64();
  double uniform();  // [0, 1)
  double normal();   // N(0, 1)
  uint64_t below(uint64_t bound);  // uniform integer in [0, bound)

 private:
  uint64_t s_[4];
  bool has_spare_ = false;
  double spare_ = 0;
};

}  // namespace polysketch::kernels
