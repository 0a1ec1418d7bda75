// The GEMM layer: every float path (gemv for one row, the streaming kernel for few rows, oneDNN
// and OpenBLAS for the rest) against a double-precision product, both backends; bf16 products
// against their rounding bound; attention of every mechanism in bf16 against the double reference.
#include <gtest/gtest.h>
#include <omp.h>

#include <array>
#include <cmath>
#include <cstring>
#include <limits>

#include "kernels/bf16_gemm.h"
#include "kernels/gemm.h"
#include "kernels/vec.h"
#include "mechanism_cases.h"
#include "reference.h"

namespace polysketch::test {
namespace {

// bf16 products as training runs them: oneDNN's matmul for large ones, our AVX512-BF16 kernel
// for small and per-thread ones where the CPU has it.
const ComputeContext kBf16{GemmBackend::openblas, Precision::bf16, true};

struct Shape {
  int64_t m, n, k;
  bool ta, tb;
};

// C = alpha op(A) op(B) + beta C in double from the same float inputs; also sum |a||b| per entry.
void reference(const Shape& s, float alpha, const std::vector<float>& a, int64_t lda,
               const std::vector<float>& b, int64_t ldb, float beta, const std::vector<float>& c0,
               int64_t ldc, std::vector<double>& c, std::vector<double>& mag) {
  c.assign(static_cast<size_t>(s.m * ldc), 0);
  mag.assign(c.size(), 0);
  for (int64_t i = 0; i < s.m; ++i)
    for (int64_t j = 0; j < s.n; ++j) {
      double sum = 0, abs = 0;
      for (int64_t p = 0; p < s.k; ++p) {
        const double x = s.ta ? a[p * lda + i] : a[i * lda + p];
        const double y = s.tb ? b[j * ldb + p] : b[p * ldb + j];
        sum += x * y;
        abs += std::abs(x * y);
      }
      c[i * ldc + j] = alpha * sum + beta * c0[i * ldc + j];
      mag[i * ldc + j] = std::abs(alpha) * abs + std::abs(beta * c0[i * ldc + j]);
    }
}

// Runs gemm<float> and returns max |C - ref| / (sum |a||b| + 1e-30) over the entries.
double relative_error(const ComputeContext& ctx, const Shape& s, float alpha, float beta, uint64_t seed) {
  const int64_t lda = (s.ta ? s.m : s.k) + 3, ldb = (s.tb ? s.k : s.n) + 1, ldc = s.n + 2;
  const auto a = cast<float>(random_vector(static_cast<size_t>((s.ta ? s.k : s.m) * lda), seed));
  const auto b = cast<float>(random_vector(static_cast<size_t>((s.tb ? s.n : s.k) * ldb), seed + 1));
  auto c = cast<float>(random_vector(static_cast<size_t>(s.m * ldc), seed + 2));
  std::vector<double> want, mag;
  reference(s, alpha, a, lda, b, ldb, beta, c, ldc, want, mag);
  kernels::gemm<float>(ctx, s.ta, s.tb, s.m, s.n, s.k, alpha, a.data(), lda, b.data(), ldb, beta, c.data(), ldc);
  double worst = 0;
  for (int64_t i = 0; i < s.m; ++i)
    for (int64_t j = 0; j < s.n; ++j)
      worst = std::max(worst, std::abs(c[i * ldc + j] - want[i * ldc + j]) / (mag[i * ldc + j] + 1e-30));
  return worst;
}

const std::vector<Shape> kShapes{
    {1, 65, 528, false, false},  {1, 40, 64, false, true},  {1, 7, 9, true, false},   // gemv
    {16, 2304, 96, false, false}, {5, 33, 70, false, false}, {16, 700, 33, false, false},  // few rows
    {1, 300, 40, false, false},  {3, 7, 5, false, false},
    {64, 48, 80, false, false},  {64, 48, 80, true, false}, {64, 48, 80, false, true},
    {64, 48, 80, true, true},    {300, 200, 160, false, false}, {9, 10, 0, false, false}};

class GemmBackends : public ::testing::TestWithParam<GemmBackend> {};

// f32 accumulates k products with rounding 6e-8 each: k * 6e-8 relative to sum |a||b| bounds
// it; 1e-5 covers k <= 528 with room, and any wrong index or transpose gives errors of order 1.
TEST_P(GemmBackends, FloatMatchesDoubleOnEveryPath) {
  for (const bool invariant : {true, false}) {
    const ComputeContext ctx{GetParam(), Precision::f32, false, invariant};
    uint64_t seed = 10;
    for (const auto& s : kShapes)
      for (auto [alpha, beta] : {std::pair{1.f, 0.f}, std::pair{0.5f, 1.f}, std::pair{2.f, -0.75f}})
        EXPECT_LT(relative_error(ctx, s, alpha, beta, seed++), 1e-5)
            << s.m << "x" << s.n << "x" << s.k << " ta " << s.ta << " tb " << s.tb << " alpha " << alpha
            << " beta " << beta << " batch_invariant " << invariant;
  }
}

// batch_invariant: each row of a product of up to 16 rows is bit for bit that row's product alone,
// at one thread and at two (the stripes change with the thread count, the sums must not).
TEST_P(GemmBackends, FewRowProductsAreBatchInvariant) {
  const ComputeContext ctx{GetParam(), Precision::f32, false, true};
  const int64_t n = 2304, k = 768;  // (a shape where oneDNN's rounding does depend on the rows)
  const auto a = cast<float>(random_vector(static_cast<size_t>(16 * k), 3));
  const auto b = cast<float>(random_vector(static_cast<size_t>(k * n), 4));
  std::vector<float> alone(static_cast<size_t>(16 * n)), c(alone.size());
  for (int64_t i = 0; i < 16; ++i)
    kernels::gemm<float>(ctx, false, false, 1, n, k, 1.f, &a[i * k], k, b.data(), n, 0.f, &alone[i * n], n);
  const int threads = omp_get_max_threads();
  for (const int t : {1, 2}) {
    omp_set_num_threads(t);
    for (const int64_t m : {2, 5, 16}) {
      kernels::gemm<float>(ctx, false, false, m, n, k, 1.f, a.data(), k, b.data(), n, 0.f, c.data(), n);
      EXPECT_EQ(0, std::memcmp(c.data(), alone.data(), static_cast<size_t>(m * n) * sizeof(float)))
          << m << " rows, " << t << " threads";
    }
  }
  omp_set_num_threads(threads);
}

// gemm_panels: B packed in 64-column panels (a tail of 36, of 16 + 5, of 37 columns; whole panels
// only) gives bit for bit what gemm gives from B itself, for 1 to 16 rows and with beta, at one
// thread and at two; 17 rows take gemm's own path.
TEST_P(GemmBackends, PanelsGiveTheSameBits) {
  const ComputeContext ctx{GetParam(), Precision::f32, false, true};
  const int threads = omp_get_max_threads();
  uint64_t seed = 40;
  for (const int t : {1, 2}) {
    omp_set_num_threads(t);
    for (const auto& [k, n] : {std::pair<int64_t, int64_t>{70, 100}, {33, 21}, {96, 37}, {50, 128}})
      for (const int64_t m : {1, 3, 16, 17}) {
        const auto a = cast<float>(random_vector(static_cast<size_t>(m * k), seed++));
        const auto b = cast<float>(random_vector(static_cast<size_t>(k * n), seed++));
        const auto c0 = cast<float>(random_vector(static_cast<size_t>(m * n), seed++));
        const auto packed = kernels::pack_panels(k, n, b.data(), n);
        auto want = c0, got = c0;
        kernels::gemm<float>(ctx, false, false, m, n, k, 1.5f, a.data(), k, b.data(), n, 0.5f, want.data(), n);
        kernels::gemm_panels(ctx, m, 1.5f, a.data(), k, packed, b.data(), 0.5f, got.data(), n);
        EXPECT_EQ(0, std::memcmp(want.data(), got.data(), want.size() * sizeof(float)))
            << m << "x" << n << "x" << k << ", " << t << " threads";
      }
  }
  omp_set_num_threads(threads);
}

// Decoding's per-head products, vec_mat (register accumulators for 16 to 143 columns, a loop
// otherwise) and mat_vec, against double: every column count around the vector width and its
// multiples, with beta, row strides past the width and no rows at all. Bound as above.
TEST(SmallProducts, VecMatAndMatVecMatchDouble) {
  uint64_t seed = 70;
  for (const int64_t rows : {0, 1, 5, 300})
    for (const int64_t n : {1, 15, 16, 17, 64, 65, 130, 143, 144, 200})
      for (const float beta : {0.f, 1.f, -0.5f}) {
        const int64_t ld = n + 3;
        const auto m = cast<float>(random_vector(static_cast<size_t>(std::max<int64_t>(rows, 1) * ld), seed++));
        const auto x = cast<float>(random_vector(static_cast<size_t>(std::max(rows, n)), seed++));
        const auto y0 = cast<float>(random_vector(static_cast<size_t>(n), seed++));
        auto y = y0;
        kernels::vec_mat(rows, n, x.data(), m.data(), ld, beta, y.data());
        for (int64_t j = 0; j < n; ++j) {
          double want = beta * static_cast<double>(y0[j]), mag = std::abs(want);
          for (int64_t i = 0; i < rows; ++i) {
            want += static_cast<double>(x[i]) * m[i * ld + j];
            mag += std::abs(static_cast<double>(x[i]) * m[i * ld + j]);
          }
          EXPECT_LE(std::abs(y[j] - want), 1e-5 * mag + 1e-30) << "vec_mat " << rows << "x" << n << " beta " << beta << " column " << j;
        }
        std::vector<float> w(static_cast<size_t>(rows));
        kernels::mat_vec(rows, n, m.data(), ld, x.data(), w.data());
        for (int64_t i = 0; i < rows; ++i) {
          double want = 0, mag = 0;
          for (int64_t j = 0; j < n; ++j) {
            want += static_cast<double>(m[i * ld + j]) * x[j];
            mag += std::abs(static_cast<double>(m[i * ld + j]) * x[j]);
          }
          EXPECT_LE(std::abs(w[i] - want), 1e-5 * mag + 1e-30) << "mat_vec " << rows << "x" << n << " row " << i;
        }
      }
}

INSTANTIATE_TEST_SUITE_P(Both, GemmBackends, ::testing::Values(GemmBackend::openblas, GemmBackend::onednn),
                         [](const auto& info) { return gemm_backend_name(info.param); });

// bf16 rounds each input to 8 significant bits (relative error <= 2^-9), so each product is off
// by at most ~2^-8 of |a||b|, plus f32 accumulation: 2^-7 of sum |a||b| is a strict bound. The
// error must also exceed f32's (1e-5) on each shape: proof that a bf16 path ran.
TEST(GemmBf16, WithinItsRoundingBoundAndReallyBf16) {
  // Large products (oneDNN matmul) and small ones (the AVX512-BF16 kernel where the CPU has it;
  // 96 rows: split over the threads outside a parallel region).
  for (const Shape& s : {Shape{300, 200, 160, false, false}, Shape{256, 96, 256, true, false},
                         Shape{200, 256, 128, false, true}, Shape{96, 48, 80, false, true},
                         Shape{64, 48, 80, true, false}}) {
    const double e = relative_error(kBf16, s, 1.5f, 0.5f, 77);
    EXPECT_LT(e, 1.0 / 128) << s.m << "x" << s.n << "x" << s.k;
    if (s.m * s.n * s.k >= 1 << 21 || kernels::bf16_small_gemm_available()) {
      EXPECT_GT(e, 1e-4) << s.m << "x" << s.n << "x" << s.k;
    }
  }
}

// Round to nearest even, as the bf16 paths round their inputs (NaN aside: none here).
float round_bf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
  std::memcpy(&x, &u, 4);
  return x;
}

// The rounding of every bf16 input: nearest, ties to even, NaN kept a (quiet) NaN, overflow to
// infinity, on a row long enough for the vector loop and its masked tail.
TEST(GemmBf16, RoundingIsNearestEven) {
  const std::vector<std::pair<uint32_t, uint16_t>> cases{
      {0x3f808000u, 0x3f80}, {0x3f818000u, 0x3f82}, {0x3f808001u, 0x3f81}, {0x3f807fffu, 0x3f80},
      {0xbf808000u, 0xbf80}, {0x7f7fffffu, 0x7f80}, {0x7f800000u, 0x7f80}, {0xff800000u, 0xff80},
      {0x7f800001u, 0x7fc0}, {0x00000001u, 0x0000}, {0x80000000u, 0x8000}, {0x00008000u, 0x0000},
      {0x00018000u, 0x0002}, {0x40490fdbu, 0x4049}, {0xc0490fdbu, 0xc049}, {0x3e99999au, 0x3e9a},
      {0x447a0000u, 0x447a}};
  std::vector<float> x(cases.size());
  for (size_t i = 0; i < cases.size(); ++i) std::memcpy(&x[i], &cases[i].first, 4);
  std::vector<uint16_t> out(cases.size());
  kernels::round_rows_bf16(1, static_cast<int64_t>(x.size()), x.data(), static_cast<int64_t>(x.size()), out.data());
  for (size_t i = 0; i < cases.size(); ++i)
    EXPECT_EQ(out[i], cases[i].second) << std::hex << cases[i].first;
}

// The AVX512-BF16 kernel of small products against the double product of the rounded inputs:
// the rounding is then the same on both sides, what remains is f32 accumulation (k 2^-24 of
// sum |a||b|, and a pair's products are exact), so 1e-5 is a bound and a wrong rounding mode
// (2^-9 per input) or a misplaced pair, tail row, tail column or padding fails it. Every tail of
// the 8 x 32 register block (m, n), odd and even k, every transpose, alpha and beta, and C full
// of NaN with beta = 0 (never read).
TEST(GemmBf16, SmallKernelIsTheExactProductOfRoundedInputs) {
  if (!kernels::bf16_small_gemm_available()) GTEST_SKIP() << "no AVX512-BF16 on this CPU";
  uint64_t seed = 500;
  for (int64_t m : {1, 7, 8, 9, 17, 40})
    for (int64_t n : {1, 15, 16, 17, 32, 33, 65})
      for (int64_t k : {1, 2, 3, 64, 65})
        for (int t = 0; t < 4; ++t) {
          const Shape s{m, n, k, (t & 1) != 0, (t & 2) != 0};
          const int64_t lda = (s.ta ? m : k) + 3, ldb = (s.tb ? k : n) + 1, ldc = n + 2;
          auto a = cast<float>(random_vector(static_cast<size_t>((s.ta ? k : m) * lda), seed++));
          auto b = cast<float>(random_vector(static_cast<size_t>((s.tb ? n : k) * ldb), seed++));
          auto c = cast<float>(random_vector(static_cast<size_t>(m * ldc), seed++));
          const float alpha = t == 3 ? 1.f : 0.75f, beta = t == 1 ? 0.f : -0.5f;
          if (beta == 0.f) std::fill(c.begin(), c.end(), std::numeric_limits<float>::quiet_NaN());
          std::vector<float> ra(a.size()), rb(b.size());
          std::transform(a.begin(), a.end(), ra.begin(), round_bf16);
          std::transform(b.begin(), b.end(), rb.begin(), round_bf16);
          std::vector<double> want, mag;
          reference(s, alpha, ra, lda, rb, ldb, beta, beta == 0.f ? std::vector<float>(c.size(), 0.f) : c,
                    ldc, want, mag);
          kernels::small_gemm_bf16(s.ta, s.tb, m, n, k, alpha, a.data(), lda, b.data(), ldb, beta,
                                   c.data(), ldc);
          double worst = 0;
          for (int64_t i = 0; i < m; ++i)
            for (int64_t j = 0; j < n; ++j) {
              const double e = std::abs(c[i * ldc + j] - want[i * ldc + j]) / (mag[i * ldc + j] + 1e-30);
              worst = std::isnan(e) ? 1.0 : std::max(worst, e);
            }
          for (int64_t i = 0; i < m; ++i)  // the padding between rows of C is left alone
            for (int64_t j = n; j < ldc && beta != 0.f; ++j) ASSERT_FALSE(std::isnan(c[i * ldc + j]));
          ASSERT_LT(worst, 1e-5) << m << "x" << n << "x" << k << " ta " << s.ta << " tb " << s.tb;
        }
}

// Blocks of operands packed once (the softmax tiles' use): rows i0.. of A, rows k0.. and columns
// j0.. of B, with an odd k that ends inside a pair of B (A's zero padding must cancel B's next
// row), against the double product of the rounded blocks. Same bound as above.
TEST(GemmBf16, PackedBlocksAreTheProductsOfTheirRoundedBlocks) {
  if (!kernels::bf16_small_gemm_available()) GTEST_SKIP() << "no AVX512-BF16 on this CPU";
  const int64_t rows = 40, cols = 100, depth = 70;
  const auto a = cast<float>(random_vector(static_cast<size_t>(rows * depth), 1));
  const auto b = cast<float>(random_vector(static_cast<size_t>(depth * cols), 2));
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      kernels::PackedA pa;
      kernels::PackedB pb;
      kernels::pack_b_bf16(tb, depth, cols, b.data(), tb ? depth : cols, pb);  // op(B) depth x cols
      auto op_a = [&](int64_t i, int64_t p) { return round_bf16(ta ? a[p * rows + i] : a[i * depth + p]); };
      auto op_b = [&](int64_t p, int64_t j) { return round_bf16(tb ? b[j * depth + p] : b[p * cols + j]); };
      for (auto [i0, m, k0, k, j0, n] : {std::array<int64_t, 6>{9, 17, 4, 33, 32, 65},
                                         std::array<int64_t, 6>{0, 40, 2, 67, 64, 36},
                                         std::array<int64_t, 6>{31, 9, 0, 1, 0, 1}}) {
        kernels::pack_a_bf16(ta, rows, k, a.data(), ta ? rows : depth, pa);  // op(A) rows x k
        std::vector<float> c(static_cast<size_t>(m * n), std::numeric_limits<float>::quiet_NaN());
        kernels::gemm_packed_bf16(m, n, k, 1.f, pa, i0, pb, k0, j0, 0.f, c.data(), n);
        for (int64_t i = 0; i < m; ++i)
          for (int64_t j = 0; j < n; ++j) {
            double want = 0, mag = 0;
            for (int64_t p = 0; p < k; ++p) {
              want += static_cast<double>(op_a(i0 + i, p)) * op_b(k0 + p, j0 + j);
              mag += std::abs(static_cast<double>(op_a(i0 + i, p)) * op_b(k0 + p, j0 + j));
            }
            ASSERT_LT(std::abs(c[i * n + j] - want), 1e-5 * mag + 1e-30)
                << "ta " << ta << " tb " << tb << " i0 " << i0 << " k0 " << k0 << " j0 " << j0
                << " at " << i << "," << j;
          }
      }
    }
}

// Attention with bf16 products against the double reference: inputs of every product rounded to
// 8 bits make outputs good to ~1%; 5e-2 of the largest output still catches any wrong weight,
// mask or block (errors of order 1).
TEST(GemmBf16, AttentionOfEveryMechanismStaysClose) {
  for (const auto& mc : mechanism_cases()) {
    if (mc.variant()) continue;  // the default degree and sketch of each mechanism
    const Mechanism m = mc.mechanism;
    AttentionConfig cfg;
    mc.apply(cfg);
    cfg.r = 16;
    cfg.block = 64;
    AttentionT<float> att(cfg, 32, 32, kBf16);
    perturb_params(att, 5);
    const AttentionShape shape{1, 2, 300, 32, 32};
    const size_t size = 2 * 300 * 32;
    const auto q = cast<float>(random_vector(size, 1)), k = cast<float>(random_vector(size, 2)),
               v = cast<float>(random_vector(size, 3));
    std::vector<float> out(size);
    att.forward(shape, q.data(), k.data(), v.data(), out.data(), nullptr);
    const auto want = reference_attention(att, shape, q, k, v);
    EXPECT_LT(max_rel_error(std::vector<double>(out.begin(), out.end()), want), 5e-2) << mechanism_name(m);
  }
}

// Backward in bf16 against the same attention in double: inputs of every product rounded to 8
// bits leave gradients good to a few percent of their largest entry (measured 0.2-3.4% for dq,
// dk, dv); 5e-2 still catches any wrong product (errors of order 1). The learned sketch's
// parameter gradients, sums over every token of products of rounded features, get 1e-1
// (measured up to 5.2%). Each error must exceed f32's (1e-4): bf16 really ran. Heads in
// parallel, and two threads inside one head (softmax's operands packed once by the calling
// thread, read by both); an odd length leaves half a pair in every packing.
TEST(GemmBf16, AttentionBackwardOfEveryMechanismStaysClose) {
  for (const auto& mc : mechanism_cases())
    for (int64_t heads : {2, 1})
      for (int64_t n : {256, 301}) {
        if (mc.variant()) continue;  // the default degree and sketch of each mechanism
        const Mechanism m = mc.mechanism;
        AttentionConfig cfg;
        mc.apply(cfg);
        cfg.r = 16;
        cfg.block = 64;
        cfg.threads = 2;
        if (n % cfg.block && m != Mechanism::softmax && m != Mechanism::polynomial) continue;
        AttentionT<float> att(cfg, 32, 32, kBf16);
        AttentionT<double> ref(cfg, 32, 32);
        perturb_params(att, 5);
        perturb_params(ref, 5);
        const AttentionShape shape{1, heads, n, 32, 32};
        const size_t size = static_cast<size_t>(heads * n * 32);
        const auto q = random_vector(size, 1), k = random_vector(size, 2), v = random_vector(size, 3),
                   dout = random_vector(size, 4);
        const auto want = forward_backward(ref, shape, q, k, v, dout);
        const auto got = forward_backward(att, shape, cast<float>(q), cast<float>(k), cast<float>(v),
                                          cast<float>(dout));

        auto check = [&](const std::vector<float>& bf16, const std::vector<double>& exact,
                         const std::string& what, double tolerance = 5e-2) {
          const double e = max_rel_error(std::vector<double>(bf16.begin(), bf16.end()), exact);
          EXPECT_LT(e, tolerance) << mechanism_name(m) << " heads " << heads << " n " << n << " " << what;
          EXPECT_GT(e, 1e-4) << mechanism_name(m) << " heads " << heads << " n " << n << " " << what;
        };
        check(got.dq, want.dq, "dq");
        check(got.dk, want.dk, "dk");
        check(got.dv, want.dv, "dv");
        for (size_t i = 0; i < want.dparams.size(); ++i)
          check(got.dparams[i], want.dparams[i], att.params()[i].name,
                att.params()[i].name.rfind("sketch.", 0) == 0 ? 1e-1 : 5e-2);
      }
}

}  // namespace
}  // namespace polysketch::test
