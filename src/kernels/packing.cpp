#include "kernels/packing.h"

#include <cmath>

namespace polysketch::kernels {

// Packed layout: for a = 0..r-1, the run (a,a), (a,a+1), ..., (a,r-1): contiguous inner loops.
template <typename T>
void pack_self_tensor(int64_t rows, int64_t r, const T* x, int64_t ldx, T* out) {
  const T s2 = static_cast<T>(std::sqrt(2.0));
  const int64_t rp = packed_size(r);
  for (int64_t t = 0; t < rows; ++t) {
    const T* xt = x + t * ldx;
    T* o = out + t * rp;
    for (int64_t a = 0; a < r; ++a) {
      const T xa = xt[a];
      o[0] = xa * xa;
      const T xs = xa * s2;
#pragma omp simd
      for (int64_t b = a + 1; b < r; ++b) o[b - a] = xs * xt[b];
      o += r - a;
    }
  }
}

template <typename T>
void pack_self_tensor_backward(int64_t rows, int64_t r, const T* x, int64_t ldx, const T* dpacked,
                               T* dx, int64_t lddx) {
  const T s2 = static_cast<T>(std::sqrt(2.0));
  const int64_t rp = packed_size(r);
  for (int64_t t = 0; t < rows; ++t) {
    const T* xt = x + t * ldx;
    const T* g = dpacked + t * rp;
    T* dxt = dx + t * lddx;
    for (int64_t a = 0; a < r; ++a) {
      const T xa = xt[a];
      T acc = 2 * g[0] * xa;
      const T xs = xa * s2;
#pragma omp simd reduction(+ : acc)
      for (int64_t b = a + 1; b < r; ++b) {
        acc += s2 * g[b - a] * xt[b];
        dxt[b] += xs * g[b - a];
      }
      dxt[a] += acc;
      g += r - a;
    }
  }
}

template void pack_self_tensor<float>(int64_t, int64_t, const float*, int64_t, float*);
template void pack_self_tensor<double>(int64_t, int64_t, const double*, int64_t, double*);
template void pack_self_tensor_backward<float>(int64_t, int64_t, const float*, int64_t,
                                               const float*, float*, int64_t);
template void pack_self_tensor_backward<double>(int64_t, int64_t, const double*, int64_t,
                                                const double*, double*, int64_t);

}  // namespace polysketch::kernels
