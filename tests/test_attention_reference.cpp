// Every mechanism, causal and not, against the naive double-precision reference, for
// n in {1, 7, b-1, b, b+1, 3b+5} and several b, and with documents packed in a sequence (one
// table drives all cases, as in ggml's test-backend-ops).
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

#include "mechanism_cases.h"
#include "reference.h"

namespace polysketch::test {
namespace {

struct Case {
  MechanismCase mc;
  bool causal;
  int64_t n;
  int block;
  int64_t batch = 1, heads = 2;
  int threads = 2;
  Docs docs = Docs::none;
  std::string name() const {
    return fmt::format("{}_{}_n{}_b{}_B{}H{}T{}{}", mc.name(), causal ? "causal" : "full", n, block,
                       batch, heads, threads, docs_name(docs));
  }
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name(); }

// The default variant of each mechanism over every shape; the other degrees and sketches
// (mechanism_cases' variants) on one shape, causal and not.
std::vector<Case> all_cases() {
  std::vector<Case> cases;
  for (const auto& mc : mechanism_cases()) {
    if (mc.variant()) {
      for (bool causal : {true, false}) cases.push_back({mc, causal, 45, 16});
      cases.push_back({mc, true, 45, 16, 2, 2, 2, Docs::inside_blocks});
      continue;
    }
    // Document masking: every layout, two sequences laid out differently, on heads in parallel,
    // inside one head (chunked scans restarting), one thread; past one 128-row tile (tile skips).
    for (Docs docs : document_layouts()) {
      cases.push_back({mc, true, 29, 8, 2, 2, 2, docs});
      cases.push_back({mc, true, 150, 8, 1, 1, 2, docs});
      cases.push_back({mc, true, 29, 8, 2, 2, 1, docs});
    }
    cases.push_back({mc, true, 300, 16, 2, 1, 2, Docs::inside_blocks});
    cases.push_back({mc, true, 300, 16, 1, 1, 2, Docs::short_docs});
    for (bool causal : {true, false})
      for (int b : {4, 16})
        for (int64_t n : {int64_t{1}, int64_t{7}, int64_t(b - 1), int64_t(b), int64_t(b + 1),
                          int64_t(3 * b + 5)})
          cases.push_back({mc, causal, n, b});
    // One head on two threads: parallelism inside the sequence (chunked scans, tile splits).
    cases.push_back({mc, true, 150, 8, 1, 1, 2});
    cases.push_back({mc, false, 150, 8, 1, 1, 2});
    // Many heads over two threads, and a single thread.
    cases.push_back({mc, true, 37, 8, 2, 3, 2});
    cases.push_back({mc, true, 37, 8, 2, 3, 1});
    cases.push_back({mc, true, 20, 1});   // b = 1
    cases.push_back({mc, true, 20, 64});  // b > n
  }
  return cases;
}

class ReferenceTest : public ::testing::TestWithParam<Case> {};

template <typename T>
double run_case(const Case& c) {
  AttentionConfig cfg;
  c.mc.apply(cfg);
  cfg.causal = c.causal;
  cfg.r = 8;
  cfg.block = c.block;
  cfg.seed = 1234;
  cfg.layer = 3;
  cfg.threads = c.threads;
  const auto ids = document_ids(c.docs, c.batch, c.n, c.block);
  const AttentionShape shape{c.batch, c.heads, c.n, 16, 8, ids.empty() ? nullptr : ids.data()};
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
