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

// Adds N(0, 0.1^2) noise to every parameter (seeded), so no parameter sits at its trivial init.
template <typename T>
void perturb_params(AttentionT<T>& att, uint64_t seed) {
  for (auto& p : att.params()) {
    const auto noise = random_vector(p.value.size(), seed++, 0.1);
    for (size_t i = 0; i < p.value.size(); ++i) p.value[i] += static_cast<T>(noise[i]);
  }
}

template <typename T>
std::vector<T> cast(const std::vector<double>& x) {
  return std::vector<T>(x.begin(), x.end());
}

// One forward (keeping what backward needs) and one backward with upstream gradient dout.
template <typename T>
struct AttentionGrads {
  std::vector<T> out, dq, dk, dv;
  std::vector<std::vector<T>> dparams;
};
template <typename T>
AttentionGrads<T> forward_backward(const AttentionT<T>& att, const AttentionShape& shape,
                                   const std::vector<T>& q, const std::vector<T>& k,
                                   const std::vector<T>& v, const std::vector<T>& dout) {
  AttentionGrads<T> g{std::vector<T>(v.size()), std::vector<T>(q.size()), std::vector<T>(k.size()),
                      std::vector<T>(v.size()), att.zero_grads()};
  AttentionSaved<T> saved;
  att.forward(shape, q.data(), k.data(), v.data(), g.out.data(), &saved);
  att.backward(shape, q.data(), k.data(), v.data(), g.out.data(), dout.data(), saved, g.dq.data(),
               g.dk.data(), g.dv.data(), &g.dparams);
  return g;
}

// max |a - b| / max(max |b|, floor)
double max_rel_error(const std::vector<double>& a, const std::vector<double>& b,
                     double floor = 1e-30);

}  // namespace polysketch::test
