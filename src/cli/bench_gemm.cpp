// polysketch bench-gemm: GFLOP/s of each GEMM backend and precision on the matrix products the
// project itself runs (the bench-train model's dense layers at --n tokens, the block algorithm's
// per-block products, softmax tiles, the learned sketch network), through the same dispatch as
// training; table or --json lines.
#include <fmt/core.h>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/common.h"
#include "kernels/gemm.h"
#include "kernels/packing.h"
#include "util/check.h"

namespace polysketch::cli {

namespace {
struct BenchGemmOptions {
  int64_t n = 8192, width = 768, heads = 12, vocab = 4096;
  int64_t r = 32, block = 256, repeat = 5;
  int threads = 0;
  bool json = false;
};

struct Shape {
  std::string name;
  bool trans_a, trans_b;
  int64_t m, n, k;
  bool per_thread;  // run per head / per block inside a parallel region
};

std::vector<Shape> project_shapes(const BenchGemmOptions& o) {
  const int64_t d = o.width, t = o.n, h = d / o.heads, f = (8 * d / 3) / 8 * 8,
                rp = kernels::packed_size(o.r), b = o.block, hid = 8 * o.r;
  return {
      {"qkv projection", false, false, t, 3 * d, d, false},
      {"qkv weight gradient", true, false, d, 3 * d, t, false},
      {"attention output projection", false, false, t, d, d, false},
      {"glu in", false, false, t, 2 * f, d, false},
      {"glu out", false, false, t, d, f, false},
      {"output logits", false, true, t, o.vocab, d, false},
      {"block key state pack(B)^T C", true, false, rp, h + 1, b, true},
      {"block query pack(A) Z", false, false, b, h + 1, rp, true},
      {"exact local block <q, k>", false, true, b, b, h, true},
      {"softmax tile Q K^T", false, true, 128, 128, h, true},
      {"softmax tile W V", false, false, 128, h, 128, true},
      {"learned sketch in -> 8r", false, false, b, hid, h, true},
      {"learned sketch 8r -> r", false, false, b, o.r, hid, true},
      {"learned sketch r -> 8r", false, false, b, hid, o.r, true},
  };
}

void run(const BenchGemmOptions& o) {
  util::check_range("--n", o.n, 1, int64_t{1} << 20);
  util::check_range("--width", o.width, 1, int64_t{1} << 16);
  util::check_range("--heads", o.heads, 1, o.width);
  if (o.width % o.heads != 0) throw Error(fmt::format("--width {} is not a multiple of --heads {}", o.width, o.heads));
  util::check_range("--vocab", o.vocab, 1, int64_t{1} << 20);
  util::check_range("--r", o.r, int64_t{1}, int64_t{1024});
  util::check_range("--block", o.block, int64_t{1}, int64_t{1} << 16);
  util::check_range("--repeat", o.repeat, int64_t{1}, int64_t{1000});
  const int threads = apply_runtime(Runtime{o.threads, "f32"}).threads;
  // bf16: the training dispatch (oneDNN matmul for large calls, our AVX512-BF16 kernel for
  // small and per-thread products); "bf16 no kernel": the same with that kernel off (oneDNN
  // matmul from 4 MFLOP, float32 below), the path before the kernel existed.
  const std::vector<ComputeContext> columns{{GemmBackend::openblas, Precision::f32, false},
                                    {GemmBackend::onednn, Precision::f32, false},
                                    {GemmBackend::onednn, Precision::bf16, true},
                                    {GemmBackend::onednn, Precision::bf16, false}};
  if (!o.json)
    fmt::print("OpenBLAS core {}; bf16 products {} on this machine ({:.0f} vs f32 {:.0f} GFLOP/s, "
               "training's products)\n",
               kernels::openblas_core(), kernels::bf16_choice().use ? "pay" : "do not pay",
               kernels::bf16_choice().bf16_gflops, kernels::bf16_choice().f32_gflops);
  if (!o.json)
    fmt::print("{:<30} {:>6} {:>6} {:>6} {:>7} {:>13} {:>11} {:>9} {:>15}   (GFLOP/s, {} threads)\n",
               "product", "M", "N", "K", "per", "openblas f32", "onednn f32", "bf16", "bf16 no kernel", threads);
  for (const auto& s : project_shapes(o)) {
    std::vector<double> gflops;
    for (const auto& c : columns)
      gflops.push_back(kernels::measure_product_gflops(c, s.trans_a,
                                                       s.trans_b, s.m, s.n, s.k, s.per_thread, o.repeat));
    if (o.json) {
      fmt::print("{}\n", nlohmann::json{{"product", s.name}, {"m", s.m}, {"n", s.n}, {"k", s.k},
                                        {"trans_a", s.trans_a}, {"trans_b", s.trans_b},
                                        {"per_thread", s.per_thread}, {"threads", threads},
                                        {"openblas_f32_gflops", gflops[0]},
                                        {"onednn_f32_gflops", gflops[1]},
                                        {"bf16_gflops", gflops[2]},
                                        {"bf16_no_kernel_gflops", gflops[3]},
                                        {"openblas_core", kernels::openblas_core()},
                                        {"bf16_pays", kernels::bf16_choice().use}}.dump());
    } else {
      fmt::print("{:<30} {:>6} {:>6} {:>6} {:>7} {:>13.1f} {:>11.1f} {:>9.1f} {:>15.1f}\n", s.name, s.m,
                 s.n, s.k, s.per_thread ? "thread" : "call", gflops[0], gflops[1], gflops[2], gflops[3]);
    }
    std::fflush(stdout);
  }
}
}  // namespace

void add_bench_gemm(CLI::App& app) {
  auto o = std::make_shared<BenchGemmOptions>();
  auto* cmd = app.add_subcommand(
      "bench-gemm", "GFLOP/s of OpenBLAS, oneDNN (f32, bf16) and the bf16 kernel on the project's own matrix products");
  cmd->add_option("--n", o->n, "tokens of the dense layers' products")->capture_default_str();
  cmd->add_option("--width", o->width)->capture_default_str();
  cmd->add_option("--heads", o->heads)->capture_default_str();
  cmd->add_option("--vocab", o->vocab)->capture_default_str();
  cmd->add_option("--r", o->r, "sketch size")->capture_default_str();
  cmd->add_option("--block", o->block, "block size b")->capture_default_str();
  cmd->add_option("--repeat", o->repeat, "timed samples per measurement (median reported)")->capture_default_str();
  cmd->add_option("--threads", o->threads, "0: all cores")->capture_default_str();
  cmd->add_flag("--json", o->json, "one JSON object per product");
  cmd->callback([o] { run(*o); });
}

}  // namespace polysketch::cli
