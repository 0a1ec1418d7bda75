// Backward of every mechanism (inputs and parameters) against central finite differences in
// double precision, with L = sum(out * R) for a fixed random R.
//
// Tolerance: max |analytic - numeric| <= 1e-6 * max |numeric|. With step 1e-6 the central
// difference has truncation error ~1e-12 |f'''| and rounding error ~1e-10 in double; an actual
// gradient bug (missing term, wrong sign, wrong mask) gives errors of order 1e-1 or more.
#include <gtest/gtest.h>

#include <functional>

#include "mechanism_cases.h"
#include "reference.h"
#include "test_util.h"

namespace polysketch::test {
namespace {

struct GradCase {
  MechanismCase mc;
  bool causal;
  int64_t heads;
  int threads;
  Docs docs = Docs::none;
};

void PrintTo(const GradCase& c, std::ostream* os) {
  *os << c.mc.name() << (c.causal ? " causal" : " full") << " H" << c.heads << " T" << c.threads
      << docs_name(c.docs);
}

// The default variant of each mechanism causal and not, on heads in parallel and inside one
// head; the other degrees and sketches (mechanism_cases' variants) causal.
std::vector<GradCase> grad_cases() {
  std::vector<GradCase> cases;
  for (const auto& mc : mechanism_cases()) {
    if (mc.variant()) {
      cases.push_back({mc, true, 2, 2});
      cases.push_back({mc, true, 2, 2, Docs::inside_blocks});
      continue;
    }
    for (Docs docs : {Docs::block_starts, Docs::inside_blocks, Docs::adjacent}) {
      cases.push_back({mc, true, 2, 2, docs});
      cases.push_back({mc, true, 1, 2, docs});  // the scans' chunks restart inside one head
    }
    for (bool causal : {true, false}) {
      cases.push_back({mc, causal, 2, 2});
      cases.push_back({mc, causal, 1, 2});  // parallel inside the head
    }
  }
  return cases;
}

constexpr int64_t kN = 11, kH = 8, kD = 4;

AttentionConfig config_for(const GradCase& c) {
  AttentionConfig cfg;
  c.mc.apply(cfg);
  cfg.causal = c.causal;
  cfg.r = 4;
  cfg.block = 4;
  cfg.seed = 99;
  cfg.threads = c.threads;
  return cfg;
}

class GradTest : public ::testing::TestWithParam<GradCase> {};

// max |a-b| / max |b|
void expect_close(const std::vector<double>& analytic, const std::vector<double>& numeric,
                  const std::string& what) {
  EXPECT_LT(max_rel_error(analytic, numeric, 1e-8), 1e-6) << what;
}

TEST_P(GradTest, MatchesFiniteDifferences) {
  const auto& c = GetParam();
  AttentionT<double> att(config_for(c), kH, kD);
  perturb_params(att, 5);
  const auto ids = document_ids(c.docs, 1, kN, 4);
  const AttentionShape shape{1, c.heads, kN, kH, kD, ids.empty() ? nullptr : ids.data()};
  const size_t qs = static_cast<size_t>(c.heads * kN * kH), vs = static_cast<size_t>(c.heads * kN * kD);
  auto q = random_vector(qs, 11), k = random_vector(qs, 12), v = random_vector(vs, 13);
  const auto weight = random_vector(vs, 14);
  auto loss = [&] {
    std::vector<double> out(vs);
    att.forward(shape, q.data(), k.data(), v.data(), out.data(), nullptr);
    double l = 0;
    for (size_t i = 0; i < vs; ++i) l += out[i] * weight[i];
    return l;
  };
  const auto g = forward_backward(att, shape, q, k, v, weight);

  auto numeric = [&](std::vector<double>& x) { return numeric_grad(x, loss); };
  expect_close(g.dq, numeric(q), "dq");
  expect_close(g.dk, numeric(k), "dk");
  expect_close(g.dv, numeric(v), "dv");
  for (size_t p = 0; p < att.params().size(); ++p)
    expect_close(g.dparams[p], numeric(att.params()[p].value), att.params()[p].name);
}

INSTANTIATE_TEST_SUITE_P(AllMechanisms, GradTest, ::testing::ValuesIn(grad_cases()));

// The float backward (the fast path) agrees with the double one, and with itself across thread
// counts; parameter gradients accumulate across calls.
TEST(GradFloat, MatchesDoubleAndIsDeterministic) {
  for (Mechanism m : all_mechanisms()) {
    SCOPED_TRACE(mechanism_name(m));
    AttentionConfig cfg;
    cfg.mechanism = m;
    cfg.r = 8;
    cfg.block = 16;
    const AttentionShape shape{1, 2, 70, 16, 8};
    const size_t qs = 2 * 70 * 16, vs = 2 * 70 * 8;
    const auto q = random_vector(qs, 1), k = random_vector(qs, 2), v = random_vector(vs, 3),
               w = random_vector(vs, 4);
    auto run = [&]<typename T>(int threads, std::vector<double>* grads) {
      cfg.threads = threads;
      AttentionT<T> att(cfg, 16, 8);
      const auto qt = cast<T>(q), kt = cast<T>(k), vt = cast<T>(v), wt = cast<T>(w);
      std::vector<T> out(vs), dq(qs), dk(qs), dv(vs);
      AttentionSaved<T> saved;
      att.forward(shape, qt.data(), kt.data(), vt.data(), out.data(), &saved);
      auto dp = att.zero_grads();
      for (int rep = 0; rep < 2; ++rep)  // accumulates: twice the gradient
        att.backward(shape, qt.data(), kt.data(), vt.data(), out.data(), wt.data(), saved,
                     dq.data(), dk.data(), dv.data(), &dp);
      std::vector<double> all;
      for (auto* g : {&dq, &dk, &dv}) all.insert(all.end(), g->begin(), g->end());
      for (auto& g : dp)
        for (T x : g) all.push_back(x / 2);
      *grads = all;
    };
    std::vector<double> f1, f2, f2b, d1;
    run.template operator()<float>(1, &f1);
    run.template operator()<float>(2, &f2);
    run.template operator()<float>(2, &f2b);
    run.template operator()<double>(1, &d1);
    EXPECT_EQ(f2, f2b) << "same thread count must give bitwise identical gradients";
    EXPECT_LT(max_rel_error(f1, d1), 2e-4);
    EXPECT_LT(max_rel_error(f2, d1), 2e-4);
  }
}

}  // namespace
}  // namespace polysketch::test
