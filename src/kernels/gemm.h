// Row-major GEMM on CBLAS (OpenBLAS): C = alpha * op(A) * op(B) + beta * C,
// op(A) is M x K, op(B) is K x N. float -> sgemm, double -> dgemm (used by gradient checks).
#pragma once

#include <cstdint>

namespace polysketch::kernels {

template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
          int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc);

// Threads OpenBLAS may use for a call made outside our own parallel regions.
void set_blas_threads(int threads);

}  // namespace polysketch::kernels
