#include "kernels/vec.h"

#include "kernels/lanes.h"
#include "util/parallel.h"

#include <algorithm>
#include <bit>
#include <cmath>
#if defined(__AVX512F__)
// GCC 12 warns inside its own AVX-512 headers (_mm512_undefined_*: GCC bug 105593, fixed in 13).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#endif
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

namespace polysketch::kernels {

namespace {

// exp for float, branch-free so that loops over it vectorize.
inline float exp_approx(float x) {
  const bool underflow = x < -87.3f;
  x = x > 88.3f ? 88.3f : x;
  x = x < -87.3f ? -87.3f : x;
  // x = k ln2 + r, |r| <= ln2/2; the magic constant rounds to nearest without a libm call.
  const float kf = (x * 1.44269504088896341f + 12582912.f) - 12582912.f;
  const float r = (x - kf * 0.693145751953125f) - kf * 1.428606765330187e-6f;
  float p = 1.f / 720.f;
  p = p * r + 1.f / 120.f;
  p = p * r + 1.f / 24.f;
  p = p * r + 1.f / 6.f;
  p = p * r + 0.5f;
  p = p * r + 1.f;
  p = p * r + 1.f;
  const float scale = std::bit_cast<float>((static_cast<int32_t>(kf) + 127) << 23);
  return underflow ? 0.f : p * scale;
}

inline float tanh_approx(float x) {
  // tanh(x) = sign(x) (1 - 2 / (exp(2|x|) + 1)); absolute error ~1e-7.
  const float ax = x < 0.f ? -x : x;
  const float e = exp_approx(2.f * (ax > 9.f ? 9.f : ax));
  const float t = 1.f - 2.f / (e + 1.f);
  return x < 0.f ? -t : t;
}

constexpr double kGeluC = 0.7978845608028654;  // sqrt(2/pi)
constexpr double kGeluA = 0.044715;

template <typename T>
inline T tanh_t(T x) {
  if constexpr (sizeof(T) == 4) {
    return tanh_approx(x);
  } else {
    return std::tanh(x);
  }
}

}  // namespace

template <>
void exp_inplace<float>(int64_t n, float* x) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) x[i] = exp_approx(x[i]);
}

template <>
void exp_inplace<double>(int64_t n, double* x) {
  for (int64_t i = 0; i < n; ++i) x[i] = std::exp(x[i]);
}

template <typename T>
void tanh_inplace(int64_t n, T* x) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) x[i] = tanh_t(x[i]);
}

namespace {
template <typename T>
inline T gelu_tanh(T v) {
  return tanh_t(static_cast<T>(kGeluC) * (v + static_cast<T>(kGeluA) * v * v * v));
}

// gelu'(v) given t = gelu_tanh(v)
template <typename T>
inline T gelu_grad(T v, T t) {
  const T c = static_cast<T>(kGeluC), a = static_cast<T>(kGeluA);
  return T(0.5) * (T(1) + t) + T(0.5) * v * (T(1) - t * t) * c * (T(1) + T(3) * a * v * v);
}
}  // namespace

#if defined(__AVX512F__)
namespace {
// exp_approx and tanh_approx on 16 lanes, with 2 / (e + 1) from the reciprocal estimate and one
// Newton step (relative error ~1e-7, as the division's rounding) instead of vdivps, whose
// latency bound the GELU of the learned sketch (a sixth of its attention time in bf16).
inline __m512 exp16(__m512 x) {
  const __mmask16 underflow = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.3f), _CMP_LT_OQ);
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.3f)), _mm512_set1_ps(88.3f));
  const __m512 kf = _mm512_sub_ps(_mm512_fmadd_ps(x, _mm512_set1_ps(1.44269504088896341f), _mm512_set1_ps(12582912.f)),
                                  _mm512_set1_ps(12582912.f));
  const __m512 r = _mm512_fnmadd_ps(kf, _mm512_set1_ps(1.428606765330187e-6f),
                                    _mm512_fnmadd_ps(kf, _mm512_set1_ps(0.693145751953125f), x));
  __m512 p = _mm512_set1_ps(1.f / 720.f);
  for (float c : {1.f / 120.f, 1.f / 24.f, 1.f / 6.f, 0.5f, 1.f, 1.f}) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
  return _mm512_maskz_scalef_ps(static_cast<__mmask16>(~underflow), p, kf);  // p 2^kf
}

inline __m512 tanh16(__m512 x) {
  const __m512 sign = _mm512_and_ps(x, _mm512_set1_ps(-0.f));
  const __m512 ax = _mm512_min_ps(_mm512_andnot_ps(_mm512_set1_ps(-0.f), x), _mm512_set1_ps(9.f));
  const __m512 d = _mm512_add_ps(exp16(_mm512_add_ps(ax, ax)), _mm512_set1_ps(1.f));
  __m512 inv = _mm512_rcp14_ps(d);
  inv = _mm512_mul_ps(inv, _mm512_fnmadd_ps(d, inv, _mm512_set1_ps(2.f)));  // Newton: inv (2 - d inv)
  const __m512 t = _mm512_fnmadd_ps(_mm512_set1_ps(2.f), inv, _mm512_set1_ps(1.f));
  return _mm512_or_ps(t, sign);
}
}  // namespace

template <>
void gelu_forward<float>(int64_t n, const float* x, float* y, float* t) {
  const __m512 c = _mm512_set1_ps(static_cast<float>(kGeluC)), a = _mm512_set1_ps(static_cast<float>(kGeluA));
  for (int64_t i = 0; i < n; i += 16) {
    const auto mask = static_cast<__mmask16>(n - i >= 16 ? 0xffff : (1u << (n - i)) - 1);
    const __m512 v = _mm512_maskz_loadu_ps(mask, x + i);
    const __m512 v3 = _mm512_mul_ps(_mm512_mul_ps(v, v), v);
    const __m512 th = tanh16(_mm512_mul_ps(c, _mm512_fmadd_ps(a, v3, v)));
    if (t) _mm512_mask_storeu_ps(t + i, mask, th);
    const __m512 half_v = _mm512_mul_ps(_mm512_set1_ps(0.5f), v);
    _mm512_mask_storeu_ps(y + i, mask, _mm512_fmadd_ps(half_v, th, half_v));
  }
}

#endif

template <typename T>
void gelu_forward(int64_t n, const T* x, T* y, T* t) {
  if (t) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      t[i] = gelu_tanh(x[i]);
      y[i] = T(0.5) * x[i] * (T(1) + t[i]);
    }
    return;
  }
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] = T(0.5) * x[i] * (T(1) + gelu_tanh(x[i]));
}

template <typename T>
void gelu_backward(int64_t n, const T* x, const T* dy, T* dx) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) dx[i] = dy[i] * gelu_grad(x[i], gelu_tanh(x[i]));
}

template <typename T>
void gelu_backward_saved(int64_t n, const T* x, const T* t, const T* dy, T* dx) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) dx[i] = dy[i] * gelu_grad(x[i], t[i]);
}

namespace {
// Mean and 1/sqrt(variance + eps) of one row (two passes: stable for large means).
template <typename T>
std::pair<T, T> row_stats(const T* xr, int64_t dim) {
  T mean = 0;
#pragma omp simd reduction(+ : mean)
  for (int64_t i = 0; i < dim; ++i) mean += xr[i];
  mean /= static_cast<T>(dim);
  T var = 0;
#pragma omp simd reduction(+ : var)
  for (int64_t i = 0; i < dim; ++i) var += (xr[i] - mean) * (xr[i] - mean);
  return {mean, T(1) / std::sqrt(var / static_cast<T>(dim) + static_cast<T>(kLayerNormEps))};
}
}  // namespace

template <typename T>
void layernorm_forward(int64_t rows, int64_t dim, const T* x, const T* scale, const T* bias, T* y) {
  util::parallel_ranges(rows, util::elementwise_threads(rows * dim), [&](int64_t r0, int64_t r1, int) {
  for (int64_t r = r0; r < r1; ++r) {
    const T* xr = x + r * dim;
    T* yr = y + r * dim;
    const auto [mean, rstd] = row_stats(xr, dim);
#pragma omp simd
    for (int64_t i = 0; i < dim; ++i) yr[i] = (xr[i] - mean) * rstd * scale[i] + bias[i];
  }
  });
}

template <typename T>
void layernorm_backward(int64_t rows, int64_t dim, const T* x, const T* scale, const T* dy, T* dx,
                        T* dscale, T* dbias) {
  // Rows split over threads; each thread sums its own dscale/dbias, added in thread order.
  const int threads = util::elementwise_threads(rows * dim);
  std::vector<T> partial(static_cast<size_t>(std::max(threads - 1, 0) * 2 * dim), T(0));
  util::parallel_ranges(rows, threads, [&](int64_t r0, int64_t r1, int t) {
  T* ds = t == 0 ? dscale : partial.data() + (t - 1) * 2 * dim;
  T* db = t == 0 ? dbias : ds + dim;
  for (int64_t r = r0; r < r1; ++r) {
    const T* xr = x + r * dim;
    const T* dyr = dy + r * dim;
    T* dxr = dx + r * dim;
    const auto [mean, rstd] = row_stats(xr, dim);
    T mean_g = 0, mean_gx = 0;
#pragma omp simd reduction(+ : mean_g, mean_gx)
    for (int64_t i = 0; i < dim; ++i) {
      const T xhat = (xr[i] - mean) * rstd;
      const T g = dyr[i] * scale[i];
      mean_g += g;
      mean_gx += g * xhat;
    }
    mean_g /= static_cast<T>(dim);
    mean_gx /= static_cast<T>(dim);
#pragma omp simd
    for (int64_t i = 0; i < dim; ++i) {
      const T xhat = (xr[i] - mean) * rstd;
      const T g = dyr[i];
      ds[i] += g * xhat;
      db[i] += g;
      dxr[i] = rstd * (g * scale[i] - mean_g - xhat * mean_gx);
    }
  }
  });
  for (int t = 1; t < threads; ++t)
    for (int64_t i = 0; i < dim; ++i) {
      dscale[i] += partial[(t - 1) * 2 * dim + i];
      dbias[i] += partial[(t - 1) * 2 * dim + dim + i];
    }
}

namespace {

// vec_mat for n in [16, 144) columns: the y accumulators stay in registers over all rows (NV
// vectors, then up to 15 single columns) instead of being loaded and stored for every row; each
// entry is the same chain of multiply-adds in row order as the general loop.
template <int NV>
void vec_mat_registers(int64_t rows, int64_t n, const float* x, const float* m, int64_t ld, float beta, float* y) {
  const int64_t full = NV * kLanes, rest = n - full;
  Lanes acc[NV];
  float tail[kLanes];
  for (int v = 0; v < NV; ++v)
    for (int j = 0; j < kLanes; ++j) acc[v][j] = beta == 0.f ? 0.f : beta * y[v * kLanes + j];
  for (int64_t j = 0; j < rest; ++j) tail[j] = beta == 0.f ? 0.f : beta * y[full + j];
  for (int64_t i = 0; i < rows; ++i) {
    const float xi = x[i];
    const float* row = m + i * ld;
    for (int v = 0; v < NV; ++v) acc[v] += xi * *reinterpret_cast<const UnalignedLanes*>(row + v * kLanes);
    for (int64_t j = 0; j < rest; ++j) tail[j] += xi * row[full + j];
  }
  for (int v = 0; v < NV; ++v)
    for (int j = 0; j < kLanes; ++j) y[v * kLanes + j] = acc[v][j];
  for (int64_t j = 0; j < rest; ++j) y[full + j] = tail[j];
}

}  // namespace

template <typename T>
void vec_mat(int64_t rows, int64_t n, const T* x, const T* m, int64_t ld, T beta, T* y) {
  if constexpr (std::is_same_v<T, float>) {
    switch (n / kLanes) {
      case 1: return vec_mat_registers<1>(rows, n, x, m, ld, beta, y);
      case 2: return vec_mat_registers<2>(rows, n, x, m, ld, beta, y);
      case 3: return vec_mat_registers<3>(rows, n, x, m, ld, beta, y);
      case 4: return vec_mat_registers<4>(rows, n, x, m, ld, beta, y);
      case 5: return vec_mat_registers<5>(rows, n, x, m, ld, beta, y);
      case 6: return vec_mat_registers<6>(rows, n, x, m, ld, beta, y);
      case 7: return vec_mat_registers<7>(rows, n, x, m, ld, beta, y);
      case 8: return vec_mat_registers<8>(rows, n, x, m, ld, beta, y);
      default: break;
    }
  }
  for (int64_t j = 0; j < n; ++j) y[j] = beta == T(0) ? T(0) : beta * y[j];
  for (int64_t i = 0; i < rows; ++i) {
    const T xi = x[i];
    const T* row = m + i * ld;
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) y[j] += xi * row[j];
  }
}

template <typename T>
void mat_vec(int64_t rows, int64_t n, const T* m, int64_t ld, const T* x, T* y) {
  for (int64_t i = 0; i < rows; ++i) {
    const T* row = m + i * ld;
    T s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < n; ++j) s += row[j] * x[j];
    y[i] = s;
  }
}

template <typename T>
double log_sum_exp(int64_t n, const T* x) {
  const double top = static_cast<double>(*std::max_element(x, x + n));
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += std::exp(static_cast<double>(x[i]) - top);
  return top + std::log(sum);
}

#define POLYSKETCH_INSTANTIATE(T)                                                              \
  template double log_sum_exp<T>(int64_t, const T*);                                           \
  template void vec_mat<T>(int64_t, int64_t, const T*, const T*, int64_t, T, T*);              \
  template void mat_vec<T>(int64_t, int64_t, const T*, int64_t, const T*, T*);                 \
  template void tanh_inplace<T>(int64_t, T*);                                                  \
  template void gelu_forward<T>(int64_t, const T*, T*, T*);                                    \
  template void gelu_backward<T>(int64_t, const T*, const T*, T*);                             \
  template void gelu_backward_saved<T>(int64_t, const T*, const T*, const T*, T*);             \
  template void layernorm_forward<T>(int64_t, int64_t, const T*, const T*, const T*, T*);      \
  template void layernorm_backward<T>(int64_t, int64_t, const T*, const T*, const T*, T*, T*, \
                                      T*);
POLYSKETCH_INSTANTIATE(float)
POLYSKETCH_INSTANTIATE(double)
#undef POLYSKETCH_INSTANTIATE

}  // namespace polysketch::kernels
