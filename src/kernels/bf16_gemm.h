// Small products with bfloat16 inputs and float32 accumulation, on CPUs with AVX512-BF16
// (vdpbf16ps): the path of `--precision bf16` for products too small for a oneDNN matmul
// primitive (softmax tiles, per-block products, the learned sketch's layers), where the
// primitive's per-call cost and oneDNN's per-call packing exceed the arithmetic. Inputs are
// rounded to nearest even, exactly as the large-product path rounds them.
#pragma once

#include <cstdint>
#include <vector>

namespace polysketch::kernels {

// Whether this CPU (and this build) can run the functions below (round_rows_bf16 aside).
bool bf16_small_gemm_available();

// out[i * ld + j] = x[i * ld + j] rounded to bf16 (nearest even; NaN stays NaN, quiet), for
// i < rows, j < cols: the inputs of every bf16 product. AVX-512 where available, on any CPU.
void round_rows_bf16(int64_t rows, int64_t cols, const float* x, int64_t ld, uint16_t* out);

// Operands packed once for many products, as 32-bit words each holding a bf16 pair along k.
struct PackedA {  // op(A), rows x k: word (i, p) at words[i * step_i + p * step_p]
  std::vector<uint32_t> words;
  int64_t rows = 0, k = 0, step_i = 0, step_p = 0;
};
struct PackedB {  // op(B), k x cols, in panels of 32 columns of panel_words words each
  std::vector<uint32_t> words;
  int64_t k = 0, cols = 0, panel_words = 0;
};
void pack_a_bf16(bool trans, int64_t rows, int64_t k, const float* a, int64_t lda, PackedA& out);
void pack_b_bf16(bool trans, int64_t k, int64_t cols, const float* b, int64_t ldb, PackedB& out);

// C [m x n] = alpha A[i0 .. i0+m, 0 .. k] B[k0 .. k0+k, j0 .. j0+n] + beta C (beta == 0 never
// reads C). k0 even and j0 a multiple of 32 (a pair or a panel never straddles the block); k
// even or A's whole k: an odd k then ends in A's zero padding, which cancels B's next row.
void gemm_packed_bf16(int64_t m, int64_t n, int64_t k, float alpha, const PackedA& a, int64_t i0,
                      const PackedB& b, int64_t k0, int64_t j0, float beta, float* c, int64_t ldc);

// C = alpha op(A) op(B) + beta C, row-major as gemm<float>; op(A) is m x k, op(B) k x n. One
// thread (the caller's); its packed copies of A and B live in per-thread scratch. beta == 0
// never reads C. Precondition: bf16_small_gemm_available(), m, n >= 1, k >= 1.
void small_gemm_bf16(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                     const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
                     int64_t ldc);

}  // namespace polysketch::kernels
