#include "model/generator.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "util/check.h"

namespace polysketch::model {

void check_sampling(const SamplingOptions& o, bool flag_names) {
  util::check_positive(flag_names ? "--top-p" : "top_p", o.top_p, 1.0);
  util::check_range(flag_names ? "--temperature" : "temperature", o.temperature, 0.0, 1e3);
  util::check_range(flag_names ? "--top-k" : "top_k", o.top_k, 0, int64_t{1} << 31);
}

int32_t sample(const std::vector<float>& all_logits, const SamplingOptions& o, kernels::Rng& rng,
               const std::vector<uint8_t>& allowed) {
  std::vector<float> masked;
  if (!allowed.empty()) {
    masked = all_logits;
    for (size_t i = 0; i < std::min(masked.size(), allowed.size()); ++i)
      if (!allowed[i]) masked[i] = -std::numeric_limits<float>::infinity();
  }
  const std::vector<float>& logits = allowed.empty() ? all_logits : masked;
  const int64_t v = static_cast<int64_t>(logits.size());
  if (o.temperature <= 0) return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  std::vector<int32_t> order(static_cast<size_t>(v));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  const int64_t k = o.top_k > 0 ? std::min(o.top_k, v) : v;
  std::vector<double> p(static_cast<size_t>(k));
  for (int64_t i = 0; i < k; ++i) p[i] = std::exp((logits[order[i]] - logits[order[0]]) / o.temperature);
  double sum = std::accumulate(p.begin(), p.end(), 0.0);
  int64_t keep = k;  // top-p: smallest prefix whose mass reaches top_p
  double mass = 0;
  for (int64_t i = 0; i < k; ++i) {
    mass += p[i] / sum;
    if (mass >= o.top_p) {
      keep = i + 1;
      break;
    }
  }
  sum = std::accumulate(p.begin(), p.begin() + keep, 0.0);
  double u = rng.uniform() * sum;
  for (int64_t i = 0; i < keep; ++i) {
    u -= p[i];
    if (u < 0) return order[i];
  }
  return order[keep - 1];
}

kernels::Rng sampling_rng(uint64_t seed) { return kernels::Rng::derive(seed, 0x6e4e, 0); }

std::vector<int32_t> prompt_input(const DecodeState& state, std::vector<int32_t> ids) {
  if (ids.empty() && state.position() == 0) ids.push_back(0);
  return ids;
}

void read_prompt(const Model& model, DecodeState& state, std::vector<int32_t> ids) {
  ids = prompt_input(state, std::move(ids));
  if (!ids.empty()) model.prefill(state, ids.data(), static_cast<int64_t>(ids.size()));
}

Generator::Generator(const Model& model, DecodeState& state, const SamplingOptions& options, int32_t end_token)
    : model_(model), state_(state), options_(options), rng_(sampling_rng(options.seed)),
      end_token_(end_token) {
  check_sampling(options, false);
}

int32_t Generator::next(const std::vector<uint8_t>& allowed) {
  const int32_t token = sample(state_.last_logits(), options_, rng_, allowed);
  DecodeState* one = &state_;
  model_.step(&one, &token, 1);
  ended_ = token == end_token_;
  return token;
}

}  // namespace polysketch::model
