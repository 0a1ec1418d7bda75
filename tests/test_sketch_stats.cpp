// Statistics of the random sketch: E[<phi(q),phi(k)>] = <q,k>^(p/2), with a relative error that
// shrinks like 1/sqrt(r). Fixed seeds make the test deterministic; the bounds are statistical:
// |mean - target| < 5 standard errors (a correct sketch fails this with probability ~6e-7 per
// check, and with the fixed seeds it never changes), and the mean squared error must fall by
// more than 6x when r grows 16x (expected 16x).
#include <gtest/gtest.h>

#include <cmath>

#include "reference.h"

namespace polysketch::test {
namespace {

constexpr int64_t kH = 16;

struct Estimate {
  double mean, stderr_, mse;
};

Estimate estimate(SketchType type, int p, int r, double target, const std::vector<double>& q,
                  const std::vector<double>& k, int seeds) {
  double sum = 0, sum2 = 0, se = 0;
  for (int s = 0; s < seeds; ++s) {
    AttentionConfig cfg;
    cfg.mechanism = Mechanism::polysketch;
    cfg.p = p;
    cfg.r = r;
    cfg.sketch = type;
    cfg.seed = 1000 + s;
    AttentionT<double> att(cfg, kH, kH);
    std::vector<double> pq(r), pk(r);
    att.feature_map(1, q.data(), pq.data());
    att.feature_map(1, k.data(), pk.data());
    double dot = 0;
    for (int i = 0; i < r; ++i) dot += pq[i] * pk[i];
    sum += dot;
    sum2 += dot * dot;
    se += (dot - target) * (dot - target);
  }
  const double mean = sum / seeds, var = sum2 / seeds - mean * mean;
  return {mean, std::sqrt(var / seeds), se / seeds};
}

class SketchStats : public ::testing::TestWithParam<std::tuple<SketchType, int>> {};

TEST_P(SketchStats, UnbiasedAndErrorShrinksWithR) {
  const auto [type, p] = GetParam();
  auto q = random_vector(kH, 1), k = random_vector(kH, 2);
  for (int i = 0; i < kH; ++i) k[i] = 0.6 * q[i] + 0.4 * k[i];  // a sizeable <q,k>
  auto normalize = [](std::vector<double>& x) {
    double n = 0;
    for (double e : x) n += e * e;
    for (double& e : x) e /= std::sqrt(n);
  };
  normalize(q);
  normalize(k);
  double qk = 0;
  for (int i = 0; i < kH; ++i) qk += q[i] * k[i];
  const double target = std::pow(qk, p / 2);
  const auto small = estimate(type, p, 4, target, q, k, 3000);
  const auto large = estimate(type, p, 64, target, q, k, 3000);
  EXPECT_LT(std::abs(small.mean - target), 5 * small.stderr_) << "r=4 mean " << small.mean;
  EXPECT_LT(std::abs(large.mean - target), 5 * large.stderr_) << "r=64 mean " << large.mean;
  EXPECT_GT(small.mse / large.mse, 6.0) << "mse r=4 " << small.mse << " r=64 " << large.mse;
}

INSTANTIATE_TEST_SUITE_P(Random, SketchStats,
                         ::testing::Combine(::testing::Values(SketchType::gaussian,
                                                              SketchType::hadamard),
                                            ::testing::Values(4, 8)));

TEST(SketchStats, SameSeedAndLayerSameSketchOtherLayerDifferent) {
  AttentionConfig cfg;
  cfg.mechanism = Mechanism::polysketch;
  cfg.seed = 7;
  cfg.layer = 2;
  const AttentionT<float> a(cfg, 64, 64), b(cfg, 64, 64);
  cfg.layer = 3;
  const AttentionT<float> c(cfg, 64, 64);
  EXPECT_EQ(a.sketch_matrices(), b.sketch_matrices());
  EXPECT_NE(a.sketch_matrices(), c.sketch_matrices());
}

TEST(SketchStats, HadamardMatrixEntriesAreSignedOnes) {
  AttentionConfig cfg;
  cfg.mechanism = Mechanism::polysketch;
  cfg.sketch = SketchType::hadamard;
  cfg.r = 48;  // more columns than head_dim: permutations repeat
  const AttentionT<double> a(cfg, 16, 16);
  for (const auto& g : a.sketch_matrices())
    for (double x : g) EXPECT_EQ(std::abs(x), 1.0);
}

}  // namespace
}  // namespace polysketch::test
