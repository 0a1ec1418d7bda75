#include "cli/common.h"

#include <fmt/format.h>
#include <omp.h>

#include "kernels/gemm.h"
#include "model/config_fields.h"
#include "util/check.h"

namespace polysketch::cli {

void add_runtime_flags(CLI::App* cmd, Runtime& r) {
  cmd->add_option("--threads", r.threads, "0: all cores")->capture_default_str();
  cmd->add_option("--precision", r.precision,
                  "f32, or bf16: matrix-product inputs rounded to bfloat16, float32 accumulation")
      ->capture_default_str();
}

Compute apply_runtime(const Runtime& r) {
  util::check_range("--threads", int64_t{r.threads}, 0, 4096);
  Precision p;
  try {
    p = parse_precision(r.precision);
  } catch (const Error& e) {
    throw Error(fmt::format("--precision: {}", e.what()));
  }
  const int t = r.threads > 0 ? r.threads : omp_get_max_threads();
  omp_set_num_threads(t);
  kernels::set_blas_threads(t);
  kernels::bf16_forced();  // POLYSKETCH_BF16 checked before any work, whatever the precision
  std::string note;        // bf16 where it is slower than f32: said once, f32 products
  const ComputeContext ctx = make_compute_context(p, GemmBackend::automatic, &note);
  if (!note.empty()) fmt::print(stderr, "{}\n", note);
  return {t, ctx};
}

nlohmann::json runtime_fields(const Runtime& r, const ComputeContext& ctx) {
  return {{"precision", precision_name(ctx.precision)},
          {"precision_requested", r.precision},
          {"gemm", gemm_backend_name(ctx.backend)},
          {"openblas_core", kernels::openblas_core()}};
}

std::string runtime_line(const Runtime& r, const ComputeContext& ctx) {
  const std::string ran = precision_name(ctx.precision);
  return fmt::format("products: {} GEMM, {}{}; OpenBLAS core {}",
                     gemm_backend_name(ctx.backend), ran,
                     ran == r.precision ? "" : fmt::format(" (asked: {})", r.precision),
                     kernels::openblas_core());
}

Mechanism mechanism_flag(const std::string& name) {
  try {
    return parse_mechanism(name);
  } catch (const Error& e) {
    throw Error(fmt::format("--mechanism: {}", e.what()));
  }
}

void check_model_flags(const ModelConfig& m) { model::check_config(m, true); }

}  // namespace polysketch::cli
