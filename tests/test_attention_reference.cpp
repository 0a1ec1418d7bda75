// Every mechanism, causal and not, against the naive double-precision reference, for
// n in {1, 7, b-1, b, b+1, 3b+5} and several b (one table drives all cases, as in ggml's
// test-backend-ops).
//
// Tolerances (max abs error relative to the largest reference output):
//  - double: 1e-9. Same arithmetic reordered (blocks, packed tensor squares, online softmax),
//    so only rounding at ~1e-16 per operation remains; 1e-9 leaves room for p = 8 powers.
//  - float: 2e-4. All weights are >= 0, so sums do not cancel; the error is float rounding
//    (6e-8) amplified by the weights' dynamic range (<q,k>^p with p up to 8) and by the
//    exp/tanh approximations (~2e-7). Measured errors are ~1e-6; 2e-4 still catches any wrong
//    weight, mask or block boundary (those give errors of order 1).
#include <gtest/gtest.h>

#include <fmt/format.h>

#include "reference.h"

namespace polysketch::test {
namespace {

struct Case {
  Mechanism mechanism;
  bool causal;
  int64_t n;
  int block;
  int p = 4;
  SketchType sketch = SketchType::gaussian;
  int64_t batch = 1, heads = 2;
  int threads = 2;
  std::string name() const {
    std::string s = fmt::format("{}_{}_n{}_b{}_p{}_{}_B{}H{}T{}", mechanism_name(mechanism),
                                causal ? "causal" : "full", n, block, p,
                                sketch == SketchType::gaussian ? "gauss" : "hadamard", batch, heads,
                                threads);
    for (auto& c : s)
      if (c == '-') c = '_';
    return s;
  }
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name(); }

std::vector<Case> all_cases() {
  std::vector<Case> cases;
  for (Mechanism m : all_mechanisms())
    for (bool causal : {true, false})
      for (int b : {4, 16})
        for (int64_t n : {int64_t{1}, int64_t{7}, int64_t(b - 1), int64_t(b), int64_t(b + 1),
                          int64_t(3 * b + 5)})
          cases.push_back({m, causal, n, b});
  for (Mechanism m : all_mechanisms()) {
    // One head on two threads: parallelism inside the sequence (chunked scans, tile splits).
    cases.push_back({m, true, 150, 8, 4, SketchType::gaussian, 1, 1, 2});
    cases.push_back({m, false, 150, 8, 4, SketchType::gaussian, 1, 1, 2});
    // Many heads over two threads, and a single thread.
    cases.push_back({m, true, 37, 8, 4, SketchType::gaussian, 2, 3, 2});
    cases.push_back({m, true, 37, 8, 4, SketchType::gaussian, 2, 3, 1});
    cases.push_back({m, true, 20, 1, 4});   // b = 1
    cases.push_back({m, true, 20, 64, 4});  // b > n
  }
  for (Mechanism m : {Mechanism::polynomial, Mechanism::polysketch, Mechanism::polysketch_local})
    for (int p : {2, 8}) {
      cases.push_back({m, true, 45, 16, p});
      cases.push_back({m, false, 45, 16, p});
    }
  for (Mechanism m : {Mechanism::polysketch, Mechanism::polysketch_local})
    for (int p : {4, 8}) cases.push_back({m, true, 45, 16, p, SketchType::hadamard});
  cases.push_back({Mechanism::polynomial, true, 40, 16, 6});
  return cases;
}

class ReferenceTest : public ::testing::TestWithParam<Case> {};

template <typename T>
double run_case(const Case& c) {
  AttentionConfig cfg;
  cfg.mechanism = c.mechanism;
  cfg.causal = c.causal;
  cfg.p = c.p;
  cfg.r = 8;
  cfg.block = c.block;
  cfg.sketch = c.sketch;
  cfg.seed = 1234;
  cfg.layer = 3;
  cfg.threads = c.threads;
  const AttentionShape shape{c.batch, c.heads, c.n, 16, 8};
  AttentionT<T> att(cfg, shape.head_dim, shape.value_dim);
  perturb_params(att, 77);  // non-trivial LayerNorm parameters, so that their use is checked
  const size_t qs = static_cast<size_t>(c.batch * c.heads * c.n * 16);
  const size_t vs = static_cast<size_t>(c.batch * c.heads * c.n * 8);
  const auto q = cast<T>(random_vector(qs, 1)), k = cast<T>(random_vector(qs, 2)),
             v = cast<T>(random_vector(vs, 3));
  std::vector<T> out(vs);
  att.forward(shape, q.data(), k.data(), v.data(), out.data(), nullptr);
  const auto ref = reference_attention(att, shape, q, k, v);
  return max_rel_error(std::vector<double>(out.begin(), out.end()), ref);
}

TEST_P(ReferenceTest, DoubleMatchesReference) { EXPECT_LT(run_case<double>(GetParam()), 1e-9); }
TEST_P(ReferenceTest, FloatMatchesReference) { EXPECT_LT(run_case<float>(GetParam()), 2e-4); }

INSTANTIATE_TEST_SUITE_P(AllMechanisms, ReferenceTest, ::testing::ValuesIn(all_cases()),
                         [](const auto& info) { return info.param.name(); });

}  // namespace
}  // namespace polysketch::test
