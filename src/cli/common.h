// What every subcommand shares: the one place that sets up threads.
#pragma once

namespace polysketch::cli {

// --threads: 0 means all cores. Sets OpenMP's and the BLAS library's thread counts; returns the
// count in use. Throws Error for a negative or absurd value.
int set_threads(int threads);

}  // namespace polysketch::cli
