#include "attention/softmax.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "util/parallel.h"
#include "kernels/gemm.h"
#include "kernels/vec.h"

namespace polysketch::attention {

using util::parallel_for;
using util::PerThread;

namespace {
constexpr int64_t kTileQ = 128;
constexpr int64_t kTileK = 128;

template <typename T>
constexpr T neg_inf() {
  return -std::numeric_limits<T>::infinity();
}

// Causal mask inside a tile: key j visible to query i iff j0 + j <= i0 + i.
template <typename T>
void mask_tile(int64_t mq, int64_t mk, int64_t offset, T* s) {
  for (int64_t i = 0; i < mq; ++i) {
    const int64_t first_hidden = std::clamp<int64_t>(i + offset + 1, 0, mk);
    std::fill(s + i * mk + first_hidden, s + (i + 1) * mk, neg_inf<T>());
  }
}
}  // namespace

template <typename T>
void softmax_forward(int64_t n, int64_t h, int64_t d, const T* q, const T* k, const T* v,
                     bool causal, int threads, T* out, T* lse) {
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(h)));
  const int64_t qtiles = (n + kTileQ - 1) / kTileQ;
  parallel_for(qtiles, threads, [&](int64_t qt, int) {
    const int64_t i0 = qt * kTileQ, mq = std::min(kTileQ, n - i0);
    std::vector<T> s(static_cast<size_t>(kTileQ * kTileK)), m(mq, neg_inf<T>()), l(mq, T(0));
    T* acc = out + i0 * d;
    std::fill(acc, acc + mq * d, T(0));
    const int64_t kend = causal ? i0 + mq : n;
    for (int64_t j0 = 0; j0 < kend; j0 += kTileK) {
      const int64_t mk = std::min(kTileK, kend - j0);
      kernels::gemm<T>(false, true, mq, mk, h, scale, q + i0 * h, h, k + j0 * h, h, T(0), s.data(),
                       mk);
      if (causal && j0 + mk > i0 + 1) mask_tile(mq, mk, i0 - j0, s.data());
      for (int64_t i = 0; i < mq; ++i) {
        T* si = s.data() + i * mk;
        T mx = m[i];
        for (int64_t j = 0; j < mk; ++j) mx = std::max(mx, si[j]);
        if (mx == neg_inf<T>()) continue;  // row fully masked in this tile
#pragma omp simd
        for (int64_t j = 0; j < mk; ++j) si[j] -= mx;
        kernels::exp_inplace(mk, si);
        T sum = 0;
#pragma omp simd reduction(+ : sum)
        for (int64_t j = 0; j < mk; ++j) sum += si[j];
        const T corr = m[i] == neg_inf<T>() ? T(0) : std::exp(m[i] - mx);
        l[i] = l[i] * corr + sum;
        m[i] = mx;
        if (corr != T(1)) {
          T* ai = acc + i * d;
#pragma omp simd
          for (int64_t c = 0; c < d; ++c) ai[c] *= corr;
        }
      }
      kernels::gemm<T>(false, false, mq, d, mk, T(1), s.data(), mk, v + j0 * d, d, T(1), acc, d);
    }
    for (int64_t i = 0; i < mq; ++i) {
      const T inv = T(1) / l[i];
      for (int64_t c = 0; c < d; ++c) acc[i * d + c] *= inv;
      lse[i0 + i] = m[i] + std::log(l[i]);
    }
  });
}

template <typename T>
void softmax_backward(int64_t n, int64_t h, int64_t d, const T* q, const T* k, const T* v,
                      const T* out, const T* dout, const T* lse, bool causal, int threads, T* dq,
                      T* dk, T* dv) {
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(h)));
  std::vector<T> delta(static_cast<size_t>(n));  // D_i = <dO_i, O_i>
  for (int64_t i = 0; i < n; ++i) {
    T acc = 0;
    for (int64_t c = 0; c < d; ++c) acc += dout[i * d + c] * out[i * d + c];
    delta[i] = acc;
  }
  const int64_t ktiles = (n + kTileK - 1) / kTileK;
  PerThread<T> dq_parts(threads, n * h, dq);
  parallel_for(ktiles, threads, [&](int64_t kt, int thread) {
    T* dqt = dq_parts.get(thread);
    const int64_t j0 = kt * kTileK, mk = std::min(kTileK, n - j0);
    std::vector<T> p(static_cast<size_t>(kTileQ * kTileK)), dp(p.size());
    T* dkj = dk + j0 * h;
    T* dvj = dv + j0 * d;
    std::fill(dkj, dkj + mk * h, T(0));
    std::fill(dvj, dvj + mk * d, T(0));
    const int64_t qstart = causal ? (j0 / kTileQ) * kTileQ : 0;
    for (int64_t i0 = qstart; i0 < n; i0 += kTileQ) {
      const int64_t mq = std::min(kTileQ, n - i0);
      if (causal && i0 + mq <= j0) continue;
      kernels::gemm<T>(false, true, mq, mk, h, scale, q + i0 * h, h, k + j0 * h, h, T(0), p.data(),
                       mk);
      if (causal && j0 + mk > i0 + 1) mask_tile(mq, mk, i0 - j0, p.data());
      for (int64_t i = 0; i < mq; ++i) {
        T* pi = p.data() + i * mk;
        const T li = lse[i0 + i];
#pragma omp simd
        for (int64_t j = 0; j < mk; ++j) pi[j] -= li;
        kernels::exp_inplace(mk, pi);
      }
      // dV_j += P^T dO_i ; dP = dO_i V_j^T ; dS = P (dP - D) ; dQ_i += s dS K_j ; dK_j += s dS^T Q_i
      kernels::gemm<T>(true, false, mk, d, mq, T(1), p.data(), mk, dout + i0 * d, d, T(1), dvj, d);
      kernels::gemm<T>(false, true, mq, mk, d, T(1), dout + i0 * d, d, v + j0 * d, d, T(0),
                       dp.data(), mk);
      for (int64_t i = 0; i < mq; ++i) {
        T* pi = p.data() + i * mk;
        const T* dpi = dp.data() + i * mk;
        const T di = delta[i0 + i];
#pragma omp simd
        for (int64_t j = 0; j < mk; ++j) pi[j] *= dpi[j] - di;
      }
      kernels::gemm<T>(false, false, mq, h, mk, scale, p.data(), mk, k + j0 * h, h, T(1),
                       dqt + i0 * h, h);
      kernels::gemm<T>(true, false, mk, h, mq, scale, p.data(), mk, q + i0 * h, h, T(1), dkj, h);
    }
  });
  dq_parts.reduce_into(dq);
}

#define POLYSKETCH_INSTANTIATE(T)                                                               \
  template void softmax_forward<T>(int64_t, int64_t, int64_t, const T*, const T*, const T*,     \
                                   bool, int, T*, T*);                                          \
  template void softmax_backward<T>(int64_t, int64_t, int64_t, const T*, const T*, const T*,    \
                                    const T*, const T*, const T*, bool, int, T*, T*, T*);
POLYSKETCH_INSTANTIATE(float)
POLYSKETCH_INSTANTIATE(double)
#undef POLYSKETCH_INSTANTIATE

}  // namespace polysketch::attention
