// Softmax attention, FlashAttention style: query tiles against key tiles with an online max and
// sum, no n x n buffer, O(n) extra memory (the per-row log-sum-exp); backward recomputes the
// probabilities from the saved log-sum-exp.
#pragma once

#include <cstdint>

#include "polysketch/compute.h"

namespace polysketch::attention {

// One head: q, k [n x h], v [n x d] -> out [n x d], lse [n]. seg: document ids [n] (causal
// only; null: one document): key tiles before a query tile's first document are skipped.
template <typename T>
void softmax_forward(const ComputeContext& ctx, int64_t n, int64_t h, int64_t d, const T* q, const T* k, const T* v,
                     bool causal, const int32_t* seg, int threads, T* out, T* lse);

// dq, dk [n x h], dv [n x d] overwritten.
template <typename T>
void softmax_backward(const ComputeContext& ctx, int64_t n, int64_t h, int64_t d, const T* q, const T* k, const T* v,
                      const T* out, const T* dout, const T* lse, bool causal, const int32_t* seg,
                      int threads, T* dq, T* dk, T* dv);

}  // namespace polysketch::attention
