// What every subcommand shares: the one place that sets up threads.
#pragma once

namespace polysketch::cli {

// --threads: 0 means all cores. Sets OpenMP's and the BLAS library's thread counts; returns the
// count in use. Throws Error for a negative or absurd value.
int set_threads(int threads);

}  // namespace polysketch::cli

#include <string>

#include "polysketch/model.h"

namespace polysketch::cli {

// parse_mechanism with the flag's name in the error.
Mechanism mechanism_flag(const std::string& name);

// Checks a model given by flags (--layers, --width, --heads, --context, --r, --block, --p,
// --dropout), naming the flag of the first invalid value; then the rules between values.
void check_model_flags(const ModelConfig& m);

}  // namespace polysketch::cli
