// What every subcommand shares: the one place that sets up threads and float precision, and
// checks of model flags.
#pragma once

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <string>

#include "polysketch/model.h"

namespace polysketch::cli {

struct Runtime {
  int threads = 0;                // 0: all cores
  std::string precision = "f32";  // f32 | bf16 (matrix-product inputs; see kernels/gemm.h)
};

// Adds --threads and --precision to a subcommand.
void add_runtime_flags(CLI::App* cmd, Runtime& runtime);

// Validates and applies them: OpenMP's and the BLAS libraries' thread counts, then makes the
// compute context the command's models run with (the GEMM backend measured, bf16 falling back to
// f32 where slower, said once on stderr).
struct Compute {
  int threads;
  ComputeContext ctx;
};
Compute apply_runtime(const Runtime& runtime);

// What the matrix products run on: the GEMM backend, the precision they really run at and the
// one asked for, OpenBLAS's core. As JSON fields for benchmark rows, and as one line for their
// text headers.
nlohmann::json runtime_fields(const Runtime& runtime, const ComputeContext& ctx);
std::string runtime_line(const Runtime& runtime, const ComputeContext& ctx);

// parse_mechanism with the flag's name in the error.
Mechanism mechanism_flag(const std::string& name);

// Checks a model given by flags: every rule of ModelConfig::validate (model/config_fields.h),
// naming the flag (--layers, --width, ...) of the first invalid value.
void check_model_flags(const ModelConfig& m);

}  // namespace polysketch::cli
