// polysketch bench-decode: prefill time, decode tokens/s (all sequences together), state bytes per
// sequence and peak RSS, per mechanism, context length and batch; table or --json lines.
#include <fmt/core.h>

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <thread>
#include <memory>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/common.h"
#include "kernels/rng.h"
#include "model/decode_state.h"
#include "polysketch/decode.h"
#include "util/check.h"
#include "util/memory.h"

namespace polysketch::cli {

namespace {
struct BenchDecodeOptions {
  std::vector<std::string> mechanisms{"softmax", "polysketch", "polysketch-learned-local"};
  std::vector<int64_t> contexts{1024, 4096, 16384, 65536}, batches{1, 16};
  int64_t layers = 4, width = 768, heads = 12, vocab = 4096, decode = 64, warmup = 8, repeat = 1;
  int64_t real_kv_prefill = 4096;
  bool batch_invariant = true;
  int r = 32, block = 256;
  int concurrent = 0;  // > 1: that many sequences on as many threads, against one thread in turn
  Runtime runtime;
  bool json = false;
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Greedy decoding of `state` for `tokens` steps on the calling thread (one OpenMP thread).
std::vector<int32_t> decode_greedy(const Model& model, DecodeState& state, int64_t tokens) {
  omp_set_num_threads(1);
  std::vector<int32_t> out;
  DecodeState* one = &state;
  for (int64_t i = 0; i < tokens; ++i) {
    const auto& l = state.last_logits();
    const auto t = static_cast<int32_t>(std::max_element(l.begin(), l.end()) - l.begin());
    out.push_back(t);
    model.step(&one, &t, 1);
  }
  return out;
}

// k sequences after a context of ctx tokens, decoded by k threads at once on one model (one
// OpenMP thread each) against one thread decoding them in turn: tokens/s of both (medians of 3,
// interleaved), and whether the tokens are the same.
void concurrent_row(const BenchDecodeOptions& o, const Model& model, int64_t ctx, const ComputeContext& compute) {
  const auto& cfg = model.config();
  const auto k = static_cast<size_t>(o.concurrent);
  std::vector<DecodeState> prefilled;
  kernels::Rng rng(5);
  for (size_t s = 0; s < k; ++s) {
    std::vector<int32_t> prompt(static_cast<size_t>(ctx));
    for (auto& t : prompt) t = static_cast<int32_t>(rng.below(static_cast<uint64_t>(cfg.vocab)));
    prefilled.emplace_back(cfg);
    model.prefill(prefilled.back(), prompt.data(), ctx);
  }
  std::vector<double> in_turn, together;
  bool identical = true;
  for (int round = 0; round < 3; ++round) {
    std::vector<DecodeState> a(prefilled), b(prefilled);
    std::vector<std::vector<int32_t>> want(k), got(k);
    auto t0 = std::chrono::steady_clock::now();
    std::thread([&] {
      for (size_t s = 0; s < k; ++s) want[s] = decode_greedy(model, a[s], o.decode);
    }).join();
    in_turn.push_back(static_cast<double>(k * o.decode) / seconds_since(t0));
    t0 = std::chrono::steady_clock::now();
    std::vector<std::thread> threads;
    for (size_t s = 0; s < k; ++s) threads.emplace_back([&, s] { got[s] = decode_greedy(model, b[s], o.decode); });
    for (auto& t : threads) t.join();
    together.push_back(static_cast<double>(k * o.decode) / seconds_since(t0));
    identical = identical && got == want;
  }
  std::sort(in_turn.begin(), in_turn.end());
  std::sort(together.begin(), together.end());
  const double turn = in_turn[1], conc = together[1];
  const std::string name = mechanism_name(cfg.attention.mechanism);
  if (o.json) {
    nlohmann::json j{{"mechanism", name}, {"context", ctx}, {"concurrent_sequences", o.concurrent},
                     {"decode_tokens", o.decode}, {"in_turn_tokens_per_s", turn},
                     {"concurrent_tokens_per_s", conc}, {"speedup", conc / turn}, {"identical_tokens", identical}};
    j.update(runtime_fields(o.runtime, compute));
    fmt::print("{}\n", j.dump());
  } else {
    fmt::print("{:<26} {:>7}  {} sequences on {} threads at once: {:.1f} tok/s, one thread in turn: "
               "{:.1f} tok/s, {:.2f}x; tokens {}\n", name, ctx, k, k, conc, turn, conc / turn,
               identical ? "identical" : "DIFFER");
  }
  if (!identical) throw Error("concurrent decoding gave other tokens than decoding in turn");
}

void run(const BenchDecodeOptions& o) {
  util::check_range("--decode", o.decode, 1, 1 << 20);
  util::check_range("--concurrent", int64_t{o.concurrent}, 0, 64);
  for (int64_t c : o.contexts) util::check_range("--context", c, 1, int64_t{1} << 26);
  for (int64_t b : o.batches) util::check_range("--batch", b, 1, 4096);
  util::check_range("--warmup", o.warmup, 0, 1 << 20);
  util::check_range("--repeat", o.repeat, 1, 1000);
  auto [threads, compute] = apply_runtime(o.runtime);
  compute.batch_invariant = o.batch_invariant;
  std::vector<ModelConfig> configs;
  for (const auto& name : o.mechanisms) {
    ModelConfig c;
    c.vocab = o.vocab;
    c.layers = o.layers;
    c.width = o.width;
    c.heads = o.heads;
    c.attention.mechanism = mechanism_flag(name);
    c.attention.r = o.r;
    c.attention.block = o.block;
    check_model_flags(c);
    configs.push_back(c);
  }
  if (!o.json)
    fmt::print("model: {} layers, width {}, {} heads, vocab {}, r {}, block {}, {} threads; {} decode "
               "tokens per sequence after the context\n{}\n\n{:<26} {:>7} {:>5} {:>10} {:>11} {:>12} "
               "{:>12} {:>8}  {}\n",
               o.layers, o.width, o.heads, o.vocab, o.r, o.block, threads, o.decode,
               runtime_line(o.runtime, compute), "mechanism",
               "context", "batch", "prefill s", "prefill t/s", "decode tok/s", "state bytes",
               "peak MB", "context made by");
  const double physical = static_cast<double>(util::physical_memory_bytes());
  for (const auto& cfg : configs) {
    Model model(cfg, compute);
    model.prepare_decoding();  // as serve and generate decode
    const bool sketch = attention::has_constant_state(cfg.attention.mechanism);
    for (int64_t ctx : o.contexts) {
      // One context per (mechanism, length), forked for every batch size.
      std::unique_ptr<DecodeState> first;
      const std::string name = mechanism_name(cfg.attention.mechanism);
      double prefill_s = 0;
      const bool real = sketch || ctx <= o.real_kv_prefill;
      kernels::Rng rng(11);
      // Per batch size, `repeat` times, the batch sizes interleaved (a slow moment of the machine
      // hits all of them): forks of one context, `warmup` tokens, then `decode` timed tokens; the
      // median reported, with the peak RSS of the runs of that batch size.
      struct Row {
        int64_t batch;
        std::vector<double> tokens_per_s;
        double rss = 0;
        int64_t state_bytes = 0;
      };
      std::vector<Row> rows;
      for (int64_t batch : o.batches) {
        const double kv_bytes = 2.0 * 4 * static_cast<double>(cfg.layers * cfg.width) * static_cast<double>(ctx + o.warmup + o.decode);
        if (!sketch && kv_bytes * static_cast<double>(batch) > 0.6 * physical) {
          const std::string why = fmt::format("skipped: {} KV caches of {:.1f} GiB exceed 60% of memory",
                                              batch, kv_bytes / (1 << 30));
          if (o.json)
            fmt::print("{}\n", nlohmann::json{{"mechanism", name}, {"context", ctx}, {"batch", batch}, {"skipped", why}}.dump());
          else
            fmt::print("{:<26} {:>7} {:>5}  {}\n", name, ctx, batch, why);
          continue;
        }
        rows.push_back({batch, {}, 0, 0});
      }
      if (!rows.empty()) {
        first = std::make_unique<DecodeState>(cfg);
        if (real) {
          std::vector<int32_t> prompt(static_cast<size_t>(ctx));
          for (auto& t : prompt) t = static_cast<int32_t>(rng.below(static_cast<uint64_t>(cfg.vocab)));
          const auto t0 = std::chrono::steady_clock::now();
          model.prefill(*first, prompt.data(), ctx);
          prefill_s = seconds_since(t0);
        } else {
          fill_synthetic_kv_cache(*first, ctx, rng.next_u64());
        }
      }
      for (int64_t rep = 0; rep < o.repeat; ++rep)
        for (auto& row : rows) {
          util::reset_peak_rss();
          std::vector<DecodeState> states(static_cast<size_t>(row.batch), *first);
          std::vector<DecodeState*> ptrs;
          for (auto& st : states) ptrs.push_back(&st);
          std::vector<int32_t> next(static_cast<size_t>(row.batch));
          for (auto& t : next) t = static_cast<int32_t>(rng.below(static_cast<uint64_t>(cfg.vocab)));
          for (int64_t i = 0; i < o.warmup; ++i) model.step(ptrs.data(), next.data(), row.batch);
          const auto t0 = std::chrono::steady_clock::now();
          for (int64_t i = 0; i < o.decode; ++i) model.step(ptrs.data(), next.data(), row.batch);
          row.tokens_per_s.push_back(static_cast<double>(row.batch * o.decode) / seconds_since(t0));
          row.rss = std::max(row.rss, util::peak_rss_mb());
          row.state_bytes = states[0].bytes();
        }
      for (auto& row : rows) {
        const int64_t batch = row.batch;
        auto sorted = row.tokens_per_s;
        std::sort(sorted.begin(), sorted.end());
        const double decode_tps = sorted[sorted.size() / 2];
        const int64_t state_bytes = row.state_bytes;
        const double rss = row.rss;
        const std::string method = real ? "prefill" : "synthetic KV cache";
        if (o.json) {
          nlohmann::json j{{"mechanism", name}, {"context", ctx}, {"batch", batch},
                           {"decode_tokens", o.decode}, {"warmup_tokens", o.warmup}, {"threads", threads},
                           {"decode_tokens_per_s", decode_tps}, {"decode_tokens_per_s_runs", row.tokens_per_s},
                           {"state_bytes", state_bytes}, {"peak_rss_mb", rss}, {"context_method", method},
                           {"batch_invariant", compute.batch_invariant}};
          j.update(runtime_fields(o.runtime, compute));
          if (real) {
            j["prefill_seconds"] = prefill_s;
            j["prefill_tokens_per_s"] = static_cast<double>(ctx) / prefill_s;
          }
          fmt::print("{}\n", j.dump());
        } else {
          fmt::print("{:<26} {:>7} {:>5} {:>10} {:>11} {:>12.1f} {:>12} {:>8.0f}  {}\n", name, ctx, batch,
                     real ? fmt::format("{:.3f}", prefill_s) : "-",
                     real ? fmt::format("{:.0f}", static_cast<double>(ctx) / prefill_s) : "-",
                     decode_tps, state_bytes, rss, method);
        }
        std::fflush(stdout);
      }
      if (o.concurrent > 1) concurrent_row(o, model, ctx, compute);
    }
  }
}
}  // namespace

void add_bench_decode(CLI::App& app) {
  auto o = std::make_shared<BenchDecodeOptions>();
  auto* cmd = app.add_subcommand("bench-decode", "Time prefill and token-by-token decoding per "
                                                 "mechanism, context length and batch");
  cmd->add_option("--mechanism", o->mechanisms)->delimiter(',')->capture_default_str();
  cmd->add_option("--context", o->contexts, "context lengths")->delimiter(',')->capture_default_str();
  cmd->add_option("--batch", o->batches, "sequences decoded together")->delimiter(',')->capture_default_str();
  cmd->add_option("--decode", o->decode, "tokens decoded per sequence, timed")->capture_default_str();
  cmd->add_option("--warmup", o->warmup, "tokens decoded per sequence before the timing")->capture_default_str();
  cmd->add_option("--repeat", o->repeat, "timed runs per batch size, interleaved; the median is reported")
      ->capture_default_str();
  cmd->add_option("--batch-invariant", o->batch_invariant,
                  "products of <= 16 rows by our streaming kernel, whose rounding does not depend on "
                  "the batch (false: oneDNN's sgemm, where it is the GEMM backend)")->capture_default_str();
  cmd->add_option("--real-kv-prefill", o->real_kv_prefill,
                  "softmax/polynomial: longest context made by a real prefill; longer ones get a "
                  "random KV cache of the same size")->capture_default_str();
  cmd->add_option("--concurrent", o->concurrent,
                  "also decode this many sequences on as many threads at once (one model, one "
                  "OpenMP thread each) against one thread decoding them in turn")
      ->capture_default_str();
  cmd->add_option("--layers", o->layers)->capture_default_str();
  cmd->add_option("--width", o->width)->capture_default_str();
  cmd->add_option("--heads", o->heads)->capture_default_str();
  cmd->add_option("--vocab", o->vocab)->capture_default_str();
  cmd->add_option("--r", o->r)->capture_default_str();
  cmd->add_option("--block", o->block)->capture_default_str();
  add_runtime_flags(cmd, o->runtime);
  cmd->add_flag("--json", o->json, "one JSON object per measurement");
  cmd->callback([o] { run(*o); });
}

}  // namespace polysketch::cli
