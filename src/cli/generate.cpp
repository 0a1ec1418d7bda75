// polysketch generate: sample text from a checkpoint (temperature, top-k, top-p, seed), streamed.
// Each token runs a full forward over the last `context` tokens (fast decoding is future work).
#include <fmt/core.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "cli/commands.h"
#include "cli/common.h"
#include "data/tokenizer.h"
#include "kernels/rng.h"
#include "train/checkpoint.h"
#include "util/check.h"

namespace polysketch::cli {

namespace {
struct GenerateOptions {
  std::string checkpoint, prompt;
  int64_t max_tokens = 200, top_k = 0;
  double temperature = 0.8, top_p = 1.0;
  uint64_t seed = 1;
  int threads = 0;
};

int32_t sample(std::vector<float> logits, const GenerateOptions& o, kernels::Rng& rng) {
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

void run(const GenerateOptions& o) {
  util::check_range("--max-tokens", o.max_tokens, 0, int64_t{1} << 30);
  util::check_positive("--top-p", o.top_p, 1.0);
  util::check_range("--temperature", o.temperature, 0.0, 1e3);
  util::check_range("--top-k", o.top_k, 0, int64_t{1} << 31);
  set_threads(o.threads);
  const auto ck = train::load_checkpoint(o.checkpoint, false);
  Model model(ck.config);
  train::load_weights(model, ck.weights, ck.dir + "/model.safetensors");
  const auto tok = data::Tokenizer::from_bytes(ck.tokenizer_bytes, ck.dir + "/tokenizer.model");
  std::vector<int32_t> ids = tok.encode(o.prompt);
  if (ids.empty()) ids.push_back(0);
  auto rng = kernels::Rng::derive(o.seed, 0x6e4e, 0);
  std::string shown = tok.decode(ids);
  fmt::print("{}", shown);
  std::fflush(stdout);
  const int64_t v = ck.config.vocab, ctx = ck.config.context;
  for (int64_t i = 0; i < o.max_tokens; ++i) {
    const int64_t start = std::max<int64_t>(0, static_cast<int64_t>(ids.size()) - ctx);
    const int64_t len = static_cast<int64_t>(ids.size()) - start;
    const auto logits = model.logits(ids.data() + start, 1, len);
    ids.push_back(sample(std::vector<float>(logits.end() - v, logits.end()), o, rng));
    const std::string text = tok.decode(ids);  // decode whole: pieces may merge across tokens
    if (text.size() > shown.size() && text.compare(0, shown.size(), shown) == 0) {
      fmt::print("{}", text.substr(shown.size()));
      std::fflush(stdout);
      shown = text;
    }
  }
  fmt::print("\n");
}
}  // namespace

void add_generate(CLI::App& app) {
  auto o = std::make_shared<GenerateOptions>();
  auto* cmd = app.add_subcommand("generate", "Sample text from a trained checkpoint");
  cmd->add_option("--checkpoint", o->checkpoint)->required();
  cmd->add_option("--prompt", o->prompt, "text to continue")->capture_default_str();
  cmd->add_option("--max-tokens", o->max_tokens)->capture_default_str();
  cmd->add_option("--temperature", o->temperature, "0: greedy")->capture_default_str();
  cmd->add_option("--top-k", o->top_k, "0: off")->capture_default_str();
  cmd->add_option("--top-p", o->top_p)->capture_default_str();
  cmd->add_option("--seed", o->seed)->capture_default_str();
  cmd->add_option("--threads", o->threads, "0: all cores")->capture_default_str();
  cmd->callback([o] { run(*o); });
}

}  // namespace polysketch::cli
