// Exact polynomial attention on tiles: W_ij = <x_i, y_j>^p, causal mask j <= i + diag_offset.
// Used by the `polynomial` mechanism over all tile pairs, and by the block algorithm for its
// diagonal blocks (features with p = 2 for pure sketches, LayerNormed q/k with p for *-local).
// C = [v | 1] has d+1 columns, so the last column of N accumulates the denominator.
#pragma once

#include <cstdint>
#include <vector>

#include "polysketch/compute.h"

namespace polysketch::attention {

struct TileMask {
  bool causal;
  int64_t diag_offset;  // global row index of query 0 minus that of key 0
  // Document masking: the document ids of the tile's queries and keys (null: none); pairs of
  // different documents get weight 0.
  const int32_t* seg_q = nullptr;
  const int32_t* seg_k = nullptr;
};

// N [mq x dc] += W C, with x [mq x dim] (stride ldx), y [mk x dim] (stride ldy), C [mk x dc].
template <typename T>
void poly_tile_forward(const ComputeContext& ctx, int64_t mq, int64_t mk, int64_t dim, const T* x, int64_t ldx, const T* y,
                       int64_t ldy, const T* c, int64_t dc, int p, TileMask mask, T* n,
                       std::vector<T>& scratch);

// Given G = dL/dN [mq x dc]: dx += dW/dx, dy += dW/dy, dc += W^T G (all accumulated).
template <typename T>
void poly_tile_backward(const ComputeContext& ctx, int64_t mq, int64_t mk, int64_t dim, const T* x, int64_t ldx, const T* y,
                        int64_t ldy, const T* c, int64_t dc, int p, TileMask mask, const T* g,
                        T* dx, int64_t lddx, T* dy, int64_t lddy, T* dcout,
                        std::vector<T>& scratch);

// The whole exact polynomial mechanism for one head: qn, kn [n x dim] already LayerNormed,
// c = [v | 1] [n x dc]. N [n x dc] is overwritten. Tiles are processed by `threads` threads.
// seg: the document ids [n] (causal only; null: one document); tiles with no pair in one
// document are skipped.
template <typename T>
void poly_attention_forward(const ComputeContext& ctx, int64_t n, int64_t dim, const T* qn, const T* kn, const T* c,
                            int64_t dc, int p, bool causal, const int32_t* seg, int threads, T* nout);

// G [n x dc]; dqn, dkn [n x dim] and dc_out [n x dc] are overwritten.
template <typename T>
void poly_attention_backward(const ComputeContext& ctx, int64_t n, int64_t dim, const T* qn, const T* kn, const T* c,
                             int64_t dc, int p, bool causal, const int32_t* seg, int threads, const T* g,
                             T* dqn, T* dkn, T* dc_out);

}  // namespace polysketch::attention
