// polysketch bench-train: time one full training step (forward, backward, AdamW update) of a
// language model per mechanism and context length; table or --json lines.
#include <fmt/core.h>
#include <omp.h>

#include <chrono>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/common.h"
#include "kernels/gemm.h"
#include "kernels/rng.h"
#include "polysketch/model.h"
#include "train/adamw.h"
#include "model/time_chunks.h"
#include "train/chunked.h"
#include "util/check.h"
#include "util/memory.h"

namespace polysketch::cli {

namespace {
struct BenchTrainOptions {
  std::vector<std::string> mechanisms{"softmax", "polysketch", "polysketch-learned-local"};
  std::vector<int64_t> ns{2048, 8192, 32768};
  int64_t layers = 4, width = 768, heads = 12, vocab = 4096, batch = 1;
  int r = 32, block = 256, repeat = 1, warmup = 1, hidden_mult = 8;
  int64_t chunk = 0;  // train/chunked.h; 0: whole sequences
  Runtime runtime;
  bool json = false;
};

ModelConfig config_for(const BenchTrainOptions& o, const std::string& mechanism, int64_t n) {
  ModelConfig cfg;
  cfg.vocab = o.vocab;
  cfg.layers = o.layers;
  cfg.width = o.width;
  cfg.heads = o.heads;
  cfg.context = n;
  cfg.attention.mechanism = mechanism_flag(mechanism);
  cfg.attention.r = o.r;
  cfg.attention.block = o.block;
  cfg.attention.hidden_mult = o.hidden_mult;
  check_model_flags(cfg);
  return cfg;
}

void run(const BenchTrainOptions& o) {
  util::check_range("--repeat", int64_t{o.repeat}, 1, 1000);
  util::check_range("--warmup", int64_t{o.warmup}, 0, 1000);
  util::check_range("--batch", o.batch, 1, int64_t{1} << 20);
  for (int64_t n : o.ns) util::check_range("--n", n, 1, int64_t{1} << 30);
  util::check_range("--chunk", o.chunk, 0, int64_t{1} << 30);
  for (const auto& name : o.mechanisms)  // every configuration checked before any timing
    for (int64_t n : o.ns) {
      const auto cfg = config_for(o, name, n);
      if (o.chunk > 0)
        if (const auto problem = model::chunking_problem(cfg, n, o.chunk, "training"); !problem.empty()) throw Error(problem);
      cfg.check_fits_in_memory(o.batch * (o.chunk > 0 ? std::min(o.chunk, n) : n),
                               o.chunk > 0 ? train::chunk_state_bytes(cfg, o.batch, n, o.chunk) : 0);
    }
  const auto [threads, ctx] = apply_runtime(o.runtime);
  if (!o.json)
    fmt::print("model: {} layers, width {}, {} heads, vocab {}, batch {}, r {}, block {}, {} threads{}\n{}\n\n"
               "{:<26} {:>7} {:>12} {:>10} {:>9}\n",
               o.layers, o.width, o.heads, o.vocab, o.batch, o.r, o.block, threads,
               o.chunk > 0 ? fmt::format(", chunks of {} tokens", o.chunk) : "", runtime_line(o.runtime, ctx), "mechanism",
               "n", "s/step", "tokens/s", "peak MB");
  for (const auto& name : o.mechanisms)
    for (int64_t n : o.ns) {
      util::reset_peak_rss();
      Model model(config_for(o, name, n), ctx);
      train::AdamW opt(model.params(), {});
      auto grads = model.zero_grads();
      TrainCache cache;
      kernels::Rng rng(7);
      std::vector<int32_t> x(static_cast<size_t>(o.batch * n)), y(x.size());
      for (auto& t : x) t = static_cast<int32_t>(rng.below(static_cast<uint64_t>(o.vocab)));
      for (auto& t : y) t = static_cast<int32_t>(rng.below(static_cast<uint64_t>(o.vocab)));
      std::vector<double> times;
      for (int i = 0; i < o.warmup + o.repeat; ++i) {  // warm-up steps first touch the buffers
        const auto t0 = std::chrono::steady_clock::now();
        if (o.chunk > 0) {
          train::chunked_forward_backward(model, cache, x.data(), y.data(), o.batch, n, o.chunk, 0, grads);
        } else {
          model.forward(cache, x.data(), y.data(), o.batch, n);
          model.backward(cache, grads);
        }
        opt.step(model.params(), grads, 1e-4);
        if (i >= o.warmup)
          times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      }
      std::sort(times.begin(), times.end());
      const double sec = times[times.size() / 2];
      const double tok_s = static_cast<double>(o.batch * n) / sec;
      const double rss = util::peak_rss_mb();
      if (o.json) {
        nlohmann::json j{{"mechanism", name}, {"n", n}, {"batch", o.batch}, {"layers", o.layers},
                         {"width", o.width}, {"heads", o.heads}, {"r", o.r}, {"block", o.block}, {"hidden_mult", o.hidden_mult},
                         {"threads", threads}, {"seconds_per_step", sec}, {"tokens_per_s", tok_s},
                         {"peak_rss_mb", rss}, {"chunk", o.chunk}};
        j.update(runtime_fields(o.runtime, ctx));
        fmt::print("{}\n", j.dump());
      } else {
        fmt::print("{:<26} {:>7} {:>12.3f} {:>10.0f} {:>9.0f}\n", name, n, sec, tok_s, rss);
      }
      std::fflush(stdout);
    }
}
}  // namespace

void add_bench_train(CLI::App& app) {
  auto o = std::make_shared<BenchTrainOptions>();
  auto* cmd = app.add_subcommand("bench-train", "Time one training step (forward, backward, "
                                                "optimizer) per mechanism and context length");
  cmd->add_option("--mechanism", o->mechanisms)->delimiter(',')->capture_default_str();
  cmd->add_option("--n", o->ns, "context lengths")->delimiter(',')->capture_default_str();
  cmd->add_option("--layers", o->layers)->capture_default_str();
  cmd->add_option("--width", o->width)->capture_default_str();
  cmd->add_option("--heads", o->heads)->capture_default_str();
  cmd->add_option("--vocab", o->vocab)->capture_default_str();
  cmd->add_option("--batch", o->batch)->capture_default_str();
  cmd->add_option("--r", o->r)->capture_default_str();
  cmd->add_option("--hidden-mult", o->hidden_mult, "learned sketch: hidden width = hidden-mult x r")->capture_default_str();
  cmd->add_option("--block", o->block)->capture_default_str();
  cmd->add_option("--chunk", o->chunk, "train each sequence a chunk of this many tokens at a time "
                                       "(sketch mechanisms; 0: whole sequences)")->capture_default_str();
  add_runtime_flags(cmd, o->runtime);
  cmd->add_option("--repeat", o->repeat, "timed steps (median reported)")->capture_default_str();
  cmd->add_option("--warmup", o->warmup, "untimed steps before them")->capture_default_str();
  cmd->add_flag("--json", o->json, "one JSON object per measurement");
  cmd->callback([o] { run(*o); });
}

}  // namespace polysketch::cli
