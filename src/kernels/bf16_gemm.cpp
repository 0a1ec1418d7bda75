#include "kernels/bf16_gemm.h"

#include <algorithm>
#include <cassert>
#include <cstring>
#include <vector>

#include "polysketch/error.h"
#include "util/buffer.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define POLYSKETCH_BF16_KERNEL 1
#endif

namespace polysketch::kernels {

namespace {
uint16_t to_bf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);  // NaN stays NaN
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

[[maybe_unused]] void round_rows_scalar(int64_t rows, int64_t cols, const float* x, int64_t ld,
                                        uint16_t* out) {
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) out[i * ld + j] = to_bf16(x[i * ld + j]);
}
}  // namespace

#ifdef POLYSKETCH_BF16_KERNEL
namespace {

#define AVX512_TARGET __attribute__((target("avx512f,avx512bw,avx512vl")))
#define BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

// Operands are packed as 32-bit words, each holding the bf16 pair (x[2p], x[2p+1]) of one row of
// op(A) or one column of op(B) (the low half is the even index): vdpbf16ps multiplies a
// broadcast pair of A with 16 pairs of B and adds both products into 16 float32 lanes.
// A: word (i, p) at a[i * step_i + p * step_p]. B: panels of 32 columns, each its pairs' rows of
// 32 words one after another (a panel is read as one contiguous stream: rows of a long packed
// row would sit a power of two apart and collide in the cache), columns past n zero.
constexpr int64_t kPanel = 32;

using u32x16 = uint32_t __attribute__((vector_size(64)));

// Round to nearest even, NaN kept quiet: the same rounding as the large-product path's. Returns
// the bf16 in the low half of each lane. (Vector extensions rather than shift intrinsics: GCC 12
// warns inside those.)
AVX512_TARGET inline u32x16 round_bf16(__m512 x) {
  const auto u = reinterpret_cast<u32x16>(_mm512_castps_si512(x));
  const u32x16 rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  return (u & 0x7fffffffu) > 0x7f800000u ? (u >> 16) | 0x40u : rounded;
}

AVX512_TARGET inline __m512 load(const float* x, int64_t count) {
  return count >= 16 ? _mm512_loadu_ps(x)
                     : _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << count) - 1), x);
}

// out[j] = (lo[j], hi[j]) for j < len; hi may be null (zeros: the padding of an odd k).
AVX512_TARGET void interleave_rows(const float* lo, const float* hi, int64_t len, uint32_t* out) {
  for (int64_t j = 0; j < len; j += 16) {
    const int64_t count = std::min<int64_t>(16, len - j);
    u32x16 pair = round_bf16(load(lo + j, count));
    if (hi) pair |= round_bf16(load(hi + j, count)) << 16;
    _mm512_mask_storeu_epi32(out + j, static_cast<__mmask16>((1u << count) - 1),
                             reinterpret_cast<__m512i>(pair));
  }
}

// out[j] = x[j] in bf16 for j < len.
AVX512_TARGET void round_row(const float* x, int64_t len, uint16_t* out) {
  for (int64_t j = 0; j < len; j += 16) {
    const int64_t count = std::min<int64_t>(16, len - j);
    _mm512_mask_cvtepi32_storeu_epi16(out + j, static_cast<__mmask16>((1u << count) - 1),
                                      reinterpret_cast<__m512i>(round_bf16(load(x + j, count))));
  }
}

// out[p] = (x[2p], x[2p+1]) for p < (len + 1) / 2: a row of consecutive pairs.
AVX512_TARGET void pair_row(const float* x, int64_t len, uint32_t* out) {
  auto* half = reinterpret_cast<uint16_t*>(out);
  round_row(x, len, half);
  if (len % 2) half[len] = 0;
}

// One R x 16V block of C from packed A rows i0.. and packed B columns j0..
template <int R, int V>
BF16_TARGET void block(int64_t pairs, const uint32_t* a, int64_t step_i, int64_t step_p,
                       const uint32_t* b, float alpha, float beta, float* c,
                       int64_t ldc, int64_t cols) {
  __m512 acc[R][V];
  for (int i = 0; i < R; ++i)
    for (int v = 0; v < V; ++v) acc[i][v] = _mm512_setzero_ps();
  for (int64_t p = 0; p < pairs; ++p) {
    __m512bh bv[V];
    for (int v = 0; v < V; ++v) bv[v] = (__m512bh)_mm512_loadu_si512(b + p * kPanel + 16 * v);
    for (int i = 0; i < R; ++i) {
      const __m512bh av = (__m512bh)_mm512_set1_epi32(static_cast<int>(a[i * step_i + p * step_p]));
      for (int v = 0; v < V; ++v) acc[i][v] = _mm512_dpbf16_ps(acc[i][v], av, bv[v]);
    }
  }
  const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
  for (int i = 0; i < R; ++i)
    for (int v = 0; v < V; ++v) {
      const int64_t count = std::min<int64_t>(16, cols - 16 * v);
      if (count <= 0) break;
      const auto mask = static_cast<__mmask16>((1u << count) - 1);
      float* ci = c + i * ldc + 16 * v;
      __m512 r = _mm512_mul_ps(va, acc[i][v]);
      if (beta != 0.f) r = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(mask, ci), r);
      _mm512_mask_storeu_ps(ci, mask, r);
    }
}

template <int V>
void rows_block(int rows, int64_t pairs, const uint32_t* a, int64_t step_i, int64_t step_p,
                const uint32_t* b, float alpha, float beta, float* c, int64_t ldc,
                int64_t cols) {
  switch (rows) {
#define POLYSKETCH_ROWS(R) \
  case R:                  \
    return block<R, V>(pairs, a, step_i, step_p, b, alpha, beta, c, ldc, cols);
    POLYSKETCH_ROWS(1) POLYSKETCH_ROWS(2) POLYSKETCH_ROWS(3) POLYSKETCH_ROWS(4)
    POLYSKETCH_ROWS(5) POLYSKETCH_ROWS(6) POLYSKETCH_ROWS(7) POLYSKETCH_ROWS(8)
#undef POLYSKETCH_ROWS
  }
}

constexpr int kRows = 8;  // 8 rows x a panel: 16 accumulators, enough to hide vdpbf16ps latency


}  // namespace

bool bf16_small_gemm_available() {
  static const bool available = __builtin_cpu_supports("avx512bf16") &&
                                __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
  return available;
}

void round_rows_bf16(int64_t rows, int64_t cols, const float* x, int64_t ld, uint16_t* out) {
  static const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                            __builtin_cpu_supports("avx512vl");
  if (!avx512) return round_rows_scalar(rows, cols, x, ld, out);
  for (int64_t i = 0; i < rows; ++i) round_row(x + i * ld, cols, out + i * ld);
}

void pack_a_bf16(bool trans, int64_t rows, int64_t k, const float* a, int64_t lda, PackedA& out) {
  const int64_t pairs = (k + 1) / 2;
  uint32_t* w = util::grown(out.words, rows * pairs);
  out.rows = rows;
  out.k = k;
  if (!trans) {  // row i of A is row i of op(A)
    for (int64_t i = 0; i < rows; ++i) pair_row(a + i * lda, k, w + i * pairs);
    out.step_i = pairs;
    out.step_p = 1;
    return;
  }
  for (int64_t p = 0; p < pairs; ++p)  // rows 2p, 2p+1 of A are columns of op(A)
    interleave_rows(a + 2 * p * lda, 2 * p + 1 < k ? a + (2 * p + 1) * lda : nullptr, rows, w + p * rows);
  out.step_i = 1;
  out.step_p = rows;
}

void pack_b_bf16(bool trans, int64_t k, int64_t cols, const float* b, int64_t ldb, PackedB& out) {
  const int64_t pairs = (k + 1) / 2, panels = (cols + kPanel - 1) / kPanel;
  out.k = k;
  out.cols = cols;
  out.panel_words = pairs * kPanel;
  uint32_t* w = util::grown(out.words, panels * out.panel_words);
  if (!trans) {
    for (int64_t p = 0; p < pairs; ++p)
      for (int64_t j0 = 0; j0 < cols; j0 += kPanel)
        interleave_rows(b + 2 * p * ldb + j0, 2 * p + 1 < k ? b + (2 * p + 1) * ldb + j0 : nullptr,
                        std::min(kPanel, cols - j0), w + j0 / kPanel * out.panel_words + p * kPanel);
  } else {
    thread_local std::vector<uint32_t> row;
    uint32_t* r = util::grown(row, pairs + 1);
    for (int64_t j = 0; j < cols; ++j) {  // row j of B is column j of op(B): pair it, then scatter
      pair_row(b + j * ldb, k, r);
      uint32_t* o = w + j / kPanel * out.panel_words + j % kPanel;
      for (int64_t p = 0; p < pairs; ++p) o[p * kPanel] = r[p];
    }
  }
  if (const int64_t tail = cols % kPanel)  // zero columns past cols in the last panel
    for (int64_t p = 0; p < pairs; ++p)
      std::fill_n(w + (panels - 1) * out.panel_words + p * kPanel + tail, kPanel - tail, 0u);
}

void gemm_packed_bf16(int64_t m, int64_t n, int64_t k, float alpha, const PackedA& a, int64_t i0,
                      const PackedB& b, int64_t k0, int64_t j0, float beta, float* c, int64_t ldc) {
  assert(k0 % 2 == 0 && j0 % kPanel == 0 && i0 + m <= a.rows && (k == a.k || (k % 2 == 0 && k < a.k)) &&
         k0 + k <= b.k + 1 && j0 + n <= b.cols);
  const int64_t pairs = (k + 1) / 2;
  for (int64_t jb = 0; jb < n; jb += kPanel) {
    const int64_t cols = std::min<int64_t>(kPanel, n - jb);
    const uint32_t* panel = b.words.data() + (j0 + jb) / kPanel * b.panel_words + k0 / 2 * kPanel;
    for (int64_t ib = 0; ib < m; ib += kRows) {
      const int rows = static_cast<int>(std::min<int64_t>(kRows, m - ib));
      const uint32_t* ai = a.words.data() + (i0 + ib) * a.step_i;
      float* ci = c + ib * ldc + jb;
      if (cols > 16)
        rows_block<2>(rows, pairs, ai, a.step_i, a.step_p, panel, alpha, beta, ci, ldc, cols);
      else
        rows_block<1>(rows, pairs, ai, a.step_i, a.step_p, panel, alpha, beta, ci, ldc, cols);
    }
  }
}

void small_gemm_bf16(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                     const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
                     int64_t ldc) {
  thread_local PackedA pa;
  thread_local PackedB pb;
  pack_a_bf16(trans_a, m, k, a, lda, pa);
  pack_b_bf16(trans_b, k, n, b, ldb, pb);
  gemm_packed_bf16(m, n, k, alpha, pa, 0, pb, 0, 0, beta, c, ldc);
}

#else  // no x86-64 AVX512-BF16 kernel in this build

namespace {
[[noreturn]] void unavailable() { throw Error("this build has no AVX512-BF16 kernel"); }
}  // namespace
bool bf16_small_gemm_available() { return false; }
void round_rows_bf16(int64_t rows, int64_t cols, const float* x, int64_t ld, uint16_t* out) {
  round_rows_scalar(rows, cols, x, ld, out);
}
void pack_a_bf16(bool, int64_t, int64_t, const float*, int64_t, PackedA&) { unavailable(); }
void pack_b_bf16(bool, int64_t, int64_t, const float*, int64_t, PackedB&) { unavailable(); }
void gemm_packed_bf16(int64_t, int64_t, int64_t, float, const PackedA&, int64_t, const PackedB&,
                      int64_t, int64_t, float, float*, int64_t) {
  unavailable();
}
void small_gemm_bf16(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t,
                     const float*, int64_t, float, float*, int64_t) {
  unavailable();
}

#endif

}  // namespace polysketch::kernels
