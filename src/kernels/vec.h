// Elementwise kernels on contiguous arrays. The float versions are written so that GCC
// vectorizes them for the build's target (-march=native: AVX-512 here), except the GELU forward,
// which has AVX-512 intrinsics where the target has them (no vdivps); model and attention code
// never touch intrinsics. The double versions use libm and serve the gradient checks.
#pragma once

#include <cstdint>

namespace polysketch::kernels {

inline constexpr double kLayerNormEps = 1e-5;

// y = exp(x). Float: range reduction + degree-6 polynomial, max rel. error ~2e-7; x below
// -87.3 gives exactly 0 (so -inf masks work), x above 88.3 saturates at exp(88.3).
template <typename T>
void exp_inplace(int64_t n, T* x);

// y = x * (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) / 2, the tanh form of GELU (Flax's default).
// With `t`, also stores the tanh term, from which gelu_backward_saved gets the derivative
// without evaluating tanh again.
template <typename T>
void gelu_forward(int64_t n, const T* x, T* y, T* t = nullptr);
// dx = dy * gelu'(x)  (overwrites dx; dx may alias dy)
template <typename T>
void gelu_backward(int64_t n, const T* x, const T* dy, T* dx);
// The same from the tanh term t that gelu_forward stored.
template <typename T>
void gelu_backward_saved(int64_t n, const T* x, const T* t, const T* dy, T* dx);

template <typename T>
void tanh_inplace(int64_t n, T* x);

// LayerNorm over the last dimension of x [rows x dim]; y may alias x.
template <typename T>
void layernorm_forward(int64_t rows, int64_t dim, const T* x, const T* scale, const T* bias, T* y);
// Recomputes the row statistics from x. dx is overwritten (may alias dy); dscale and dbias are
// accumulated (+=).
template <typename T>
void layernorm_backward(int64_t rows, int64_t dim, const T* x, const T* scale, const T* dy, T* dx,
                        T* dscale, T* dbias);

// log sum_i exp(x[i]) over n values, in double and shifted by the largest (no overflow): a row of
// logits' log-probabilities are x[i] minus it.
template <typename T>
double log_sum_exp(int64_t n, const T* x);

// Small matrix-vector products for decoding, called per head inside parallel loops, where a BLAS
// call's fixed cost exceeds the arithmetic. Single-threaded, vectorized.
// y [n] = beta y + x^T M, M [rows x n] with row stride ld (rows of M streamed once).
template <typename T>
void vec_mat(int64_t rows, int64_t n, const T* x, const T* m, int64_t ld, T beta, T* y);
// y [rows] = M x, M [rows x n] with row stride ld.
template <typename T>
void mat_vec(int64_t rows, int64_t n, const T* m, int64_t ld, const T* x, T* y);

}  // namespace polysketch::kernels
