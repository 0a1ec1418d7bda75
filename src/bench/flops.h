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

// Measured matrix-product throughput (GFLOP/s, median of `repeat` m x m x m products, on the
// threads set up): OpenBLAS sgemm, oneDNN's f32 matmul, the f32 peak (the faster of the two) and
// oneDNN's bf16 matmul (bf16 inputs, f32 accumulation).
struct GemmPeaks {
  double sgemm = 0, onednn_f32 = 0, f32 = 0, bf16 = 0;
};
GemmPeaks measure_gemm_peaks(int64_t m = 2048, int repeat = 3);

}  // namespace polysketch::bench
