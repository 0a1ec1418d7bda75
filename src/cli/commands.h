// Each subcommand registers its flags and callback on the CLI11 app.
#pragma once

#include <CLI/CLI.hpp>

namespace polysketch::cli {

void add_bench_attention(CLI::App& app);
void add_prepare(CLI::App& app);
void add_train(CLI::App& app);
void add_eval(CLI::App& app);
void add_generate(CLI::App& app);
void add_bench_train(CLI::App& app);
void add_bench_decode(CLI::App& app);
void add_bench_gemm(CLI::App& app);
void add_serve(CLI::App& app);

}  // namespace polysketch::cli
