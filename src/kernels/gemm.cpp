#include "kernels/gemm.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>

namespace polysketch::kernels {

namespace {
CBLAS_TRANSPOSE op(bool t) { return t ? CblasTrans : CblasNoTrans; }

// C [m x n] = alpha A [m x k] B [k x n] + beta C for few rows (decoding a batch of sequences):
// B, the weights, is streamed once, each row of it feeding every row of A, with an 8 x 32
// accumulator tile the compiler keeps in vector registers. sgemm would first copy all of B into
// its packed layout, which for m <= 16 costs more than the product.
constexpr int64_t kTileRows = 8, kTileCols = 32;

void skinny_tile(int64_t rows, int64_t cols, int64_t k, float alpha, const float* a, int64_t lda,
                 const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  float acc[kTileRows][kTileCols] = {};
  if (rows == kTileRows && cols == kTileCols) {
    for (int64_t kk = 0; kk < k; ++kk) {
      const float* brow = b + kk * ldb;
      for (int64_t i = 0; i < kTileRows; ++i) {
        const float av = a[i * lda + kk];
#pragma omp simd
        for (int64_t j = 0; j < kTileCols; ++j) acc[i][j] += av * brow[j];
      }
    }
  } else {
    for (int64_t kk = 0; kk < k; ++kk)
      for (int64_t i = 0; i < rows; ++i) {
        const float av = a[i * lda + kk];
        for (int64_t j = 0; j < cols; ++j) acc[i][j] += av * b[kk * ldb + j];
      }
  }
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j)
      c[i * ldc + j] = alpha * acc[i][j] + (beta == 0.f ? 0.f : beta * c[i * ldc + j]);
}

void skinny_gemm(int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                 const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  const int64_t col_tiles = (n + kTileCols - 1) / kTileCols;
  const int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
  for (int64_t t = 0; t < col_tiles; ++t) {
    const int64_t j0 = t * kTileCols, cols = std::min(kTileCols, n - j0);
    for (int64_t i0 = 0; i0 < m; i0 += kTileRows)
      skinny_tile(std::min(kTileRows, m - i0), cols, k, alpha, a + i0 * lda, lda, b + j0, ldb, beta,
                  c + i0 * ldc + j0, ldc);
  }
}
}  // namespace

// One row of output (decoding: one token, one head) is a matrix-vector product; sgemm would pack
// the whole of B first, which costs more than the product itself.
template <>
void gemm<float>(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                 const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
                 int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (m == 1 && k > 0) {
    // c = op(B)^T a: B [k x n] -> transposed gemv; B^T stored [n x k] -> plain gemv.
    cblas_sgemv(CblasRowMajor, trans_b ? CblasNoTrans : CblasTrans, static_cast<blasint>(trans_b ? n : k),
                static_cast<blasint>(trans_b ? k : n), alpha, b, static_cast<blasint>(ldb), a,
                static_cast<blasint>(trans_a ? lda : 1), beta, c, 1);
    return;
  }
  if (m <= 2 * kTileRows && !trans_a && !trans_b && n >= kTileCols && k > 0) {
    skinny_gemm(m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  cblas_sgemm(CblasRowMajor, op(trans_a), op(trans_b), static_cast<blasint>(m),
              static_cast<blasint>(n), static_cast<blasint>(k), alpha, a, static_cast<blasint>(lda),
              b, static_cast<blasint>(ldb), beta, c, static_cast<blasint>(ldc));
}

template <>
void gemm<double>(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, double alpha,
                  const double* a, int64_t lda, const double* b, int64_t ldb, double beta,
                  double* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  cblas_dgemm(CblasRowMajor, op(trans_a), op(trans_b), static_cast<blasint>(m),
              static_cast<blasint>(n), static_cast<blasint>(k), alpha, a, static_cast<blasint>(lda),
              b, static_cast<blasint>(ldb), beta, c, static_cast<blasint>(ldc));
}

void set_blas_threads(int threads) { openblas_set_num_threads(threads); }

}  // namespace polysketch::kernels
