// The "+1" normalisation shared by every non-softmax mechanism: with C = [v | 1], the product
// N = W C holds the numerator and (denominator - 1) in one matrix, and
//   out_i = N_i[:d] / den_i,   den_i = 1 + N_i[d].
// Its backward turns dL/dout into G = dL/dN = [dO_i, -<dO_i, out_i>] / den_i.
#pragma once

#include <algorithm>
#include <cstdint>

namespace polysketch::attention {

// c [rows x (d+1)] = [v | 1]
template <typename T>
void append_ones(int64_t rows, int64_t d, const T* v, T* c) {
  for (int64_t i = 0; i < rows; ++i) {
    std::copy(v + i * d, v + (i + 1) * d, c + i * (d + 1));
    c[i * (d + 1) + d] = T(1);
  }
}

// num [rows x (d+1)] -> out [rows x d], den [rows]. sum_j w_ij >= 0 in exact arithmetic, but a
// sketch computes it through products of features whose terms cancel (<phi(q), phi(k)>^2 summed
// over a block's state): with saturated learned features the rounding can reach -1, and
// den = 0 gave inf outputs and NaN gradients (found in training: docs/RESULTS.md). A negative
// sum is rounding, so it is clamped at 0 (den >= 1).
template <typename T>
void normalize_rows(int64_t rows, int64_t d, const T* num, T* out, T* den) {
  for (int64_t i = 0; i < rows; ++i) {
    den[i] = T(1) + std::max(num[i * (d + 1) + d], T(0));
    const T inv = T(1) / den[i];
    for (int64_t k = 0; k < d; ++k) out[i * d + k] = num[i * (d + 1) + k] * inv;
  }
}

// g [rows x (d+1)] = dL/dN from out, dout [rows x d] and den [rows]
template <typename T>
void normalizer_grad(int64_t rows, int64_t d, const T* out, const T* dout, const T* den, T* g) {
  for (int64_t i = 0; i < rows; ++i) {
    const T inv = T(1) / den[i];
    T dot = 0;
    for (int64_t k = 0; k < d; ++k) {
      g[i * (d + 1) + k] = dout[i * d + k] * inv;
      dot += dout[i * d + k] * out[i * d + k];
    }
    g[i * (d + 1) + d] = -dot * inv;
  }
}

}  // namespace polysketch::attention
