// Naive double-precision reference for every attention mechanism: forms the n x n weight matrix
// explicitly from the definitions in POLYSKETCH.md, with its own loops (no library kernels), so
// that it checks the fast code independently. Parameters and sketch matrices are read from the
// AttentionT under test.
#pragma once

#include <vector>

#include "polysketch/attention.h"

namespace polysketch::test {

template <typename T>
std::vector<double> reference_attention(const AttentionT<T>& att, const AttentionShape& shape,
                                        const std::vector<T>& q, const std::vector<T>& k,
                                        const std::vector<T>& v);

// phi of one vector, naive (random: the recursive sketch; learned: the two chains).
template <typename T>
std::vector<double> reference_phi(const AttentionT<T>& att, const std::vector<double>& x);

std::vector<double> random_vector(size_t n, uint64_t seed, double scale = 1.0);

template <typename T>
std::vector<T> cast(const std::vector<double>& x) {
  return std::vector<T>(x.begin(), x.end());
}

// max |a - b| / max(max |b|, floor)
double max_rel_error(const std::vector<double>& a, const std::vector<double>& b,
                     double floor = 1e-30);

}  // namespace polysketch::test
