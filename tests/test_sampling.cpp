// sample() against its definition: temperature scales the logits, top-k keeps the k largest,
// top-p keeps the smallest prefix (largest first) whose mass reaches p, and the draw follows the
// renormalised distribution of what is kept. 200000 draws per case; every frequency within 5
// standard deviations of its probability (a case fails by chance with probability < 1e-5).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>

#include "kernels/rng.h"
#include "model/generator.h"

namespace polysketch::test {
namespace {

std::vector<double> expected(const std::vector<float>& logits, const model::SamplingOptions& o) {
  const size_t v = logits.size();
  std::vector<size_t> order(v);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return logits[a] > logits[b]; });
  std::vector<double> p(v, 0.0);
  const size_t k = o.top_k > 0 ? std::min<size_t>(o.top_k, v) : v;
  double z = 0;
  for (size_t i = 0; i < k; ++i) z += std::exp(static_cast<double>(logits[order[i]]) / o.temperature);
  double mass = 0;
  size_t keep = k;
  for (size_t i = 0; i < k; ++i) {
    mass += std::exp(static_cast<double>(logits[order[i]]) / o.temperature) / z;
    if (mass >= o.top_p) {
      keep = i + 1;
      break;
    }
  }
  double kept = 0;
  for (size_t i = 0; i < keep; ++i) kept += std::exp(static_cast<double>(logits[order[i]]) / o.temperature);
  for (size_t i = 0; i < keep; ++i)
    p[order[i]] = std::exp(static_cast<double>(logits[order[i]]) / o.temperature) / kept;
  return p;
}

TEST(Sampling, FollowsTheDefinitionOfTemperatureTopKAndTopP) {
  const std::vector<float> logits{1.0f, 3.0f, -0.5f, 2.0f, 0.0f, 2.5f, -2.0f, 1.5f};
  const std::vector<model::SamplingOptions> cases{
      {1.0, 0, 1.0, 1}, {0.5, 0, 1.0, 1}, {2.0, 0, 1.0, 1}, {1.0, 3, 1.0, 1},
      {1.0, 0, 0.6, 1}, {0.7, 5, 0.8, 1}, {1.0, 1, 1.0, 1}, {3.0, 0, 0.95, 1}};
  constexpr int kDraws = 200000;
  for (const auto& o : cases) {
    const auto want = expected(logits, o);
    kernels::Rng rng(11);
    std::vector<int> count(logits.size(), 0);
    for (int i = 0; i < kDraws; ++i) ++count[model::sample(logits, o, rng)];
    for (size_t id = 0; id < logits.size(); ++id) {
      const double f = static_cast<double>(count[id]) / kDraws;
      const double sd = std::sqrt(want[id] * (1 - want[id]) / kDraws);
      EXPECT_NEAR(f, want[id], 5 * sd + 1e-12)
          << "T " << o.temperature << " top-k " << o.top_k << " top-p " << o.top_p << " id " << id;
    }
  }
  kernels::Rng rng(1);  // temperature 0: the argmax, whatever the other options
  EXPECT_EQ(model::sample(logits, {0.0, 3, 0.5, 1}, rng), 1);
}

TEST(Sampling, NeverDrawsAMaskedId) {
  std::vector<float> logits(50, 0.f);
  logits[7] = 5.f;  // the favourite is masked
  std::vector<uint8_t> allowed(50, 0);
  for (int id : {3, 11, 40}) allowed[id] = 1;
  kernels::Rng rng(5);
  std::map<int32_t, int> seen;
  for (const double t : {0.0, 0.7, 1.0, 5.0})
    for (int i = 0; i < 300; ++i) ++seen[model::sample(logits, {t, 0, 1.0, 1}, rng, allowed)];
  for (const auto& [id, count] : seen) EXPECT_TRUE(allowed[id]) << id << " drawn " << count << " times";
  EXPECT_EQ(seen.size(), 3u);
  EXPECT_EQ(model::sample(logits, {0.0, 2, 0.5, 1}, rng, allowed), 3);  // greedy among the allowed
}

}  // namespace
}  // namespace polysketch::test
