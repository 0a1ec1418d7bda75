// Useful FLOP counts for the attention benchmark (formulas documented in docs/BENCHMARKS.md).
#pragma once

#include <cstdint>

#include "polysketch/attention.h"

namespace polysketch::bench {

// Forward FLOPs of one attention call (all batch x heads), matrix products only.
double attention_forward_flops(const AttentionConfig& cfg, const AttentionShape& s);

// Forward + backward: 3.5 x forward, the FlashAttention papers' convention (backward = 2.5 x
// forward, counting the recomputation that memory-efficient backward passes do).
inline double attention_train_flops(const AttentionConfig& cfg, const AttentionShape& s) {
  return 3.5 * attention_forward_flops(cfg, s);
}

// sgemm throughput (GFLOP/s) of OpenBLAS on `threads` threads, median of `repeat` runs of an
// m x m x m product.
double measure_sgemm_gflops(int threads, int64_t m = 2048, int repeat = 3);

}  // namespace polysketch::bench
