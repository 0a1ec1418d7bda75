// polysketch bench-attention: time forward or forward+backward of attention mechanisms over
// context lengths; a readable table or JSON lines (docs/BENCHMARKS.md explains every field).
#include <fmt/core.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <nlohmann/json.hpp>
#include <sstream>

#include "bench/flops.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "kernels/gemm.h"
#include "kernels/rng.h"
#include "polysketch/attention.h"
#include "util/check.h"
#include "util/memory.h"

namespace polysketch::cli {

namespace {

struct BenchOptions {
  std::vector<std::string> mechanisms{"softmax", "polysketch", "polysketch-learned-local"};
  std::vector<int64_t> ns{1024, 4096};
  std::vector<std::string> passes{"fwd+bwd"};
  std::vector<int64_t> documents{1};  // per sequence, equal lengths (1: no document masking)
  int64_t batch = 1, heads = 12, head_dim = 64;
  int r = 32, block = 256, p = 4, repeat = 3;
  Runtime runtime;
  bool causal = true, json = false;
  std::string sketch = "gaussian";
};

// Comma lists: "--n 1024,4096" and "--n 1024 --n 4096" both work.
template <typename T>
void add_list(CLI::App* cmd, const std::string& flag, std::vector<T>& out, const std::string& help) {
  cmd->add_option(flag, out, help)->delimiter(',')->capture_default_str();
}

struct Measurement {
  double seconds, peak_rss_mb;
};

Measurement run_one(const ComputeContext& ctx, const AttentionConfig& cfg, const AttentionShape& shape,
                    bool backward, int repeat) {
  util::reset_peak_rss();
  const size_t qs = static_cast<size_t>(shape.batch * shape.heads * shape.n * shape.head_dim);
  const size_t vs = static_cast<size_t>(shape.batch * shape.heads * shape.n * shape.value_dim);
  const Attention att(cfg, shape.head_dim, shape.value_dim, ctx);
  std::vector<float> q(qs), k(qs), v(vs), out(vs);
  kernels::Rng rng(42);
  for (auto* t : {&q, &k, &v})
    for (auto& x : *t) x = static_cast<float>(rng.uniform() * 2 - 1);
  std::vector<float> dout, dq, dk, dv;
  if (backward) {
    dout.resize(vs);
    for (auto& x : dout) x = static_cast<float>(rng.uniform() * 2 - 1);
    dq.resize(qs);
    dk.resize(qs);
    dv.resize(vs);
  }
  auto grads = att.zero_grads();
  AttentionSaved<float> saved;
  std::vector<double> times;
  for (int i = 0; i < repeat; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    att.forward(shape, q.data(), k.data(), v.data(), out.data(), backward ? &saved : nullptr);
    if (backward)
      att.backward(shape, q.data(), k.data(), v.data(), out.data(), dout.data(), saved, dq.data(),
                   dk.data(), dv.data(), &grads);
    times.push_back(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(times.begin(), times.end());
  return {times[times.size() / 2], util::peak_rss_mb()};
}

void run(const BenchOptions& o) {
  util::check_range("--repeat", int64_t{o.repeat}, 1, 1000);
  const auto [threads, ctx] = apply_runtime(o.runtime);
  for (const auto& pass : o.passes)
    if (pass != "fwd" && pass != "fwd+bwd")
      throw Error(fmt::format("--pass must be fwd or fwd+bwd, got '{}'", pass));
  for (int64_t n : o.ns) {
    util::check_range("--n", n, 1, int64_t{1} << 30);
    for (int64_t docs : o.documents) util::check_range("--documents", docs, 1, n);
    // q, k, v, out (and dout, dq, dk, dv for the backward), float32, before allocating them.
    const double bytes = 8.0 * static_cast<double>(o.batch * o.heads) * static_cast<double>(n) *
                         static_cast<double>(o.head_dim) * 4;
    const double have = static_cast<double>(util::physical_memory_bytes());
    if (have > 0 && bytes > have)
      throw Error(fmt::format("--n {} with --batch {} --heads {} --head-dim {} needs about {:.1f} "
                              "GiB, more than this machine's {:.1f} GiB",
                              n, o.batch, o.heads, o.head_dim, bytes / (1 << 30), have / (1 << 30)));
  }
  std::vector<AttentionConfig> configs;
  for (const auto& name : o.mechanisms) {
    AttentionConfig cfg;
    cfg.mechanism = mechanism_flag(name);
    cfg.causal = o.causal;
    cfg.p = o.p;
    cfg.r = o.r;
    cfg.block = o.block;
    cfg.sketch = parse_sketch_type(o.sketch);
    cfg.threads = threads;
    const Attention check(cfg, o.head_dim, o.head_dim);  // invalid flags fail before any timing
    configs.push_back(cfg);
  }
  const auto peaks = bench::measure_gemm_peaks();
  const bool bf16 = ctx.precision == Precision::bf16;
  const double peak = bf16 ? peaks.bf16 : peaks.f32;
  if (!o.json) {
    fmt::print("{} threads; 2048^3 products: OpenBLAS sgemm {:.1f}, oneDNN f32 {:.1f}, bf16 {:.1f} "
               "GFLOP/s; peak in use {:.1f}\n{}\n",
               threads, peaks.sgemm, peaks.onednn_f32, peaks.bf16, peak, runtime_line(o.runtime, ctx));
    fmt::print("batch {} heads {} head_dim {} r {} block {} p {} {}\n\n", o.batch, o.heads,
               o.head_dim, o.r, o.block, o.p, o.causal ? "causal" : "non-causal");
    fmt::print("{:<26} {:<8} {:>7} {:>10} {:>11} {:>9} {:>8} {:>9}\n", "mechanism", "pass", "n",
               "seconds", "tokens/s", "GFLOP/s", "%peak", "peak MB");
  }
  for (const auto& pass : o.passes)
    for (const AttentionConfig& cfg : configs)
      for (int64_t n : o.ns)
        for (int64_t docs : o.documents) {
          const Mechanism m = cfg.mechanism;
          std::vector<int32_t> ids;  // document t * docs / n of every sequence
          for (int64_t i = 0; docs > 1 && i < o.batch * n; ++i) ids.push_back(static_cast<int32_t>(i % n * docs / n));
          const AttentionShape shape{o.batch, o.heads, n, o.head_dim, o.head_dim, ids.empty() ? nullptr : ids.data()};
          const bool bwd = pass == "fwd+bwd";
          const auto meas = run_one(ctx, cfg, shape, bwd, o.repeat);
          const double flops = bwd ? bench::attention_train_flops(cfg, shape)
                                   : bench::attention_forward_flops(cfg, shape);
          const double gflops = flops / meas.seconds / 1e9;
          if (o.json) {
            nlohmann::json j{{"mechanism", mechanism_name(m)}, {"causal", o.causal},
                             {"pass", pass}, {"n", n}, {"batch", o.batch}, {"heads", o.heads},
                             {"head_dim", o.head_dim}, {"r", o.r}, {"block", o.block}, {"p", o.p},
                             {"threads", threads}, {"seconds", meas.seconds}, {"gflops", gflops},
                             {"sgemm_gflops", peaks.sgemm}, {"peak_gflops", peak},
                             {"peak_f32_gflops", peaks.f32}, {"peak_bf16_gflops", peaks.bf16},
                             {"efficiency", gflops / peak}, {"peak_rss_mb", meas.peak_rss_mb},
                             {"documents", docs}};
            j.update(runtime_fields(o.runtime, ctx));
            fmt::print("{}\n", j.dump());
          } else {
            fmt::print("{:<26} {:<8} {:>7} {:>10.4f} {:>11.0f} {:>9.1f} {:>7.1f}% {:>9.0f}\n",
                       mechanism_name(m) + (docs > 1 ? fmt::format(" docs {}", docs) : ""), pass, n, meas.seconds,
                       static_cast<double>(n * o.batch) / meas.seconds, gflops,
                       100 * gflops / peak, meas.peak_rss_mb);
          }
          std::fflush(stdout);
        }
}

}  // namespace

void add_bench_attention(CLI::App& app) {
  auto opts = std::make_shared<BenchOptions>();
  auto* cmd = app.add_subcommand("bench-attention",
                                 "Time attention mechanisms (forward, or forward+backward) over "
                                 "context lengths; table or --json lines");
  add_list(cmd, "--mechanism", opts->mechanisms,
           "softmax, polynomial, polysketch, polysketch-learned, polysketch-local, "
           "polysketch-learned-local");
  add_list(cmd, "--n", opts->ns, "context lengths");
  add_list(cmd, "--pass", opts->passes, "fwd or fwd+bwd");
  cmd->add_option("--batch", opts->batch, "batch size")->capture_default_str()->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  cmd->add_option("--heads", opts->heads, "attention heads")->capture_default_str()->check(CLI::Range(int64_t{1}, int64_t{1} << 16));
  cmd->add_option("--head-dim", opts->head_dim, "head size h (= value size)")->capture_default_str()->check(CLI::Range(int64_t{1}, int64_t{1} << 16));
  cmd->add_option("--r", opts->r, "sketch size")->capture_default_str();
  cmd->add_option("--block", opts->block, "block size b")->capture_default_str();
  cmd->add_option("--p", opts->p, "polynomial degree")->capture_default_str();
  cmd->add_option("--sketch", opts->sketch, "random sketch: gaussian or hadamard")->capture_default_str();
  add_runtime_flags(cmd, opts->runtime);
  add_list(cmd, "--documents", opts->documents,
           "documents per sequence, of equal length (document masking; 1: none); GFLOP/s count "
           "the unmasked work");
  cmd->add_option("--repeat", opts->repeat, "timed runs per measurement (median reported)")->capture_default_str();
  cmd->add_flag("--causal,!--non-causal", opts->causal, "causal mask (default) or none");
  cmd->add_flag("--json", opts->json, "one JSON object per measurement");
  cmd->callback([opts] { run(*opts); });
}

}  // namespace polysketch::cli
