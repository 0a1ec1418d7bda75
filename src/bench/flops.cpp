#include "bench/flops.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <vector>

#include "attention/mechanism.h"
#include "kernels/gemm.h"

namespace polysketch::bench {

double attention_forward_flops(const AttentionConfig& cfg, const AttentionShape& s) {
  const double n = static_cast<double>(s.n), h = static_cast<double>(s.head_dim),
               d = static_cast<double>(s.value_dim), heads = static_cast<double>(s.batch * s.heads);
  // Query-key pairs inside the attended region (causal: the lower triangle, diagonal included).
  auto pairs = [&](double len) { return cfg.causal ? len * (len + 1) / 2 : len * len; };
  if (!attention::uses_sketch(cfg.mechanism)) return heads * 2 * pairs(n) * (h + d);  // S = Q K^T, then W V
  const bool local = attention::is_local(cfg.mechanism), learned = attention::is_learned(cfg.mechanism);
  const double r = static_cast<double>(attention::feature_dim(cfg, s.head_dim));
  const double rp = r * (r + 1) / 2, dc = d + 1, b = cfg.block;
  // Diagonal blocks: dense products with features (dimension r) or, for *-local, q/k (h).
  const double full_blocks = std::floor(n / b), tail = n - full_blocks * b;
  const double diag_pairs = full_blocks * pairs(b) + pairs(tail);
  const double diag = 2 * diag_pairs * ((local ? h : r) + dc);
  // Block states: H_l = pack(B_l)^T C_l and pack(A_l) Z_l, each 2 n rp (d+1).
  const double state = 2 * 2 * n * rp * dc;
  // Feature maps for q and k.
  double features = 0;
  if (learned) {
    const double hidden = cfg.hidden_mult * r;
    double chain = 0, in = h;
    for (int l = 0; l < cfg.sketch_levels; ++l, in = r) chain += 2 * n * (in * hidden + hidden * r);
    features = 2 /*q,k*/ * 2 /*f,g*/ * chain;
  } else {
    // Degree p/2 tree: p/2 - 1 internal nodes... each with two products; the leaves read h.
    double nodes_in_h = 0, nodes_in_r = 0;
    for (int m = cfg.p / 2, count = 1; m > 1; m /= 2, count *= 2)
      (m == 2 ? nodes_in_h : nodes_in_r) += count;
    features = 2 /*q,k*/ * 2 /*G1,G2*/ * 2 * n * r * (nodes_in_h * h + nodes_in_r * r);
  }
  return heads * (diag + state + features);
}

GemmPeaks measure_gemm_peaks(int64_t m, int repeat) {
  GemmPeaks p;
  p.sgemm = kernels::measure_gemm_gflops(GemmBackend::openblas, Precision::f32, m, repeat);
  p.onednn_f32 = kernels::measure_gemm_gflops(GemmBackend::onednn, Precision::f32, m, repeat);
  p.bf16 = kernels::measure_gemm_gflops(GemmBackend::onednn, Precision::bf16, m, repeat);
  p.f32 = std::max(p.sgemm, p.onednn_f32);
  return p;
}

}  // namespace polysketch::bench
