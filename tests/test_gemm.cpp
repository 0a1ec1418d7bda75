// The GEMM layer: every float path (gemv for one row, the streaming kernel for few rows, oneDNN
// and OpenBLAS for the rest) against a double-precision product, both backends; bf16 products
// against their rounding bound; attention of every mechanism in bf16 against the double reference.
#include <gtest/gtest.h>

#include <cmath>

#include "kernels/gemm.h"
#include "reference.h"

namespace polysketch::test {
namespace {

using kernels::GemmBackend;
using kernels::Precision;

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
double relative_error(const Shape& s, float alpha, float beta, uint64_t seed) {
  const int64_t lda = (s.ta ? s.m : s.k) + 3, ldb = (s.tb ? s.k : s.n) + 1, ldc = s.n + 2;
  const auto a = cast<float>(random_vector(static_cast<size_t>((s.ta ? s.k : s.m) * lda), seed));
  const auto b = cast<float>(random_vector(static_cast<size_t>((s.tb ? s.n : s.k) * ldb), seed + 1));
  auto c = cast<float>(random_vector(static_cast<size_t>(s.m * ldc), seed + 2));
  std::vector<double> want, mag;
  reference(s, alpha, a, lda, b, ldb, beta, c, ldc, want, mag);
  kernels::gemm<float>(s.ta, s.tb, s.m, s.n, s.k, alpha, a.data(), lda, b.data(), ldb, beta, c.data(), ldc);
  double worst = 0;
  for (int64_t i = 0; i < s.m; ++i)
    for (int64_t j = 0; j < s.n; ++j)
      worst = std::max(worst, std::abs(c[i * ldc + j] - want[i * ldc + j]) / (mag[i * ldc + j] + 1e-30));
  return worst;
}

const std::vector<Shape> kShapes{
    {1, 65, 528, false, false},  {1, 40, 64, false, true},  {1, 7, 9, true, false},   // gemv
    {16, 2304, 96, false, false}, {5, 33, 70, false, false},                           // few rows
    {64, 48, 80, false, false},  {64, 48, 80, true, false}, {64, 48, 80, false, true},
    {64, 48, 80, true, true},    {300, 200, 160, false, false}, {9, 10, 0, false, false}};

class GemmBackends : public ::testing::TestWithParam<GemmBackend> {
 protected:
  void TearDown() override { kernels::set_gemm_backend(GemmBackend::automatic); }
};

// f32 accumulates k products with rounding 6e-8 each: k * 6e-8 relative to sum |a||b| bounds
// it; 1e-5 covers k <= 528 with room, and any wrong index or transpose gives errors of order 1.
TEST_P(GemmBackends, FloatMatchesDoubleOnEveryPath) {
  kernels::set_gemm_backend(GetParam());
  uint64_t seed = 10;
  for (const auto& s : kShapes)
    for (auto [alpha, beta] : {std::pair{1.f, 0.f}, std::pair{0.5f, 1.f}, std::pair{2.f, -0.75f}})
      EXPECT_LT(relative_error(s, alpha, beta, seed++), 1e-5)
          << s.m << "x" << s.n << "x" << s.k << " ta " << s.ta << " tb " << s.tb << " alpha " << alpha << " beta " << beta;
}

INSTANTIATE_TEST_SUITE_P(Both, GemmBackends, ::testing::Values(GemmBackend::openblas, GemmBackend::onednn),
                         [](const auto& info) { return kernels::gemm_backend_name(info.param); });

// bf16 rounds each input to 8 significant bits (relative error <= 2^-9), so each product is off
// by at most ~2^-8 of |a||b|, plus f32 accumulation: 2^-7 of sum |a||b| is a strict bound. The
// error must also exceed f32's (1e-5): proof that the bf16 path ran.
TEST(GemmBf16, WithinItsRoundingBoundAndReallyBf16) {
  kernels::set_precision(Precision::bf16);
  double worst = 0;
  for (const Shape& s : {Shape{300, 200, 160, false, false}, Shape{256, 96, 256, true, false},
                         Shape{200, 256, 128, false, true}}) {
    const double e = relative_error(s, 1.5f, 0.5f, 77);
    EXPECT_LT(e, 1.0 / 128) << s.m << "x" << s.n << "x" << s.k;
    worst = std::max(worst, e);
  }
  kernels::set_precision(Precision::f32);
  EXPECT_GT(worst, 1e-4);
}

// Attention with bf16 products against the double reference: inputs of every product rounded to
// 8 bits make outputs good to ~1%; 5e-2 of the largest output still catches any wrong weight,
// mask or block (errors of order 1).
TEST(GemmBf16, AttentionOfEveryMechanismStaysClose) {
  kernels::set_precision(Precision::bf16);
  for (Mechanism m : all_mechanisms()) {
    AttentionConfig cfg;
    cfg.mechanism = m;
    cfg.r = 16;
    cfg.block = 64;
    AttentionT<float> att(cfg, 32, 32);
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
  kernels::set_precision(Precision::f32);
}

}  // namespace
}  // namespace polysketch::test
