// Internal: one transformer block, its forward and backward side by side (POLYSKETCH.md 3),
// over n rows of width D:
//   x += drop1(attend(LN1(x) W_qkv) W_out);   x += drop2(GLU(LN2(x) W_in) W_glu_out)
// The training forward, prefill and the batched decoding step all run this code. What differs
// is the attention between the two projections (the rows of a window against each other, or
// each row against its own sequence's decoding state): the caller passes it in.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "kernels/gemm.h"
#include "model/weights.h"

namespace polysketch::model {

template <typename T>
struct BlockActs {  // written by block_forward, read by block_backward
  std::vector<T> x_in, x_mid;  // the block's input and the residual after attention (kept only)
  std::vector<T> ln1, merged, ln2, u, g;
  std::vector<T> mask1, mask2;  // dropout masks [n x D], filled by the caller; empty: none
};
template <typename T>
struct BlockScratch {  // forward working memory, shared by every layer
  std::vector<T> qkv, proj;
};
template <typename T>
struct BlockBackScratch {  // backward working memory, shared by every layer
  std::vector<T> dy, tmp, dg, du, dqkv;
};

// attend(qkv, merged): qkv [n x 3D] (each row q | k | v; may be changed in place) -> merged
// [n x D], every head's output side by side.
template <typename T>
using Attend = std::function<void(T* qkv, T* merged)>;
// attend_backward(dmerged, work, dqkv): d loss/d merged [n x D] -> d loss/d qkv [n x 3D]
// (overwritten); dmerged may be overwritten and work is n x D scratch.
template <typename T>
using AttendBackward = std::function<void(T* dmerged, T* work, T* dqkv)>;

// A block's dense weights packed for few-row products (ModelT::prepare_decoding), and a model's.
struct BlockPanels {
  kernels::PanelMatrix qkv, out, glu_in, glu_out;
};
struct DecodePanels {
  std::vector<BlockPanels> layers;
};

// The block's first half up to the attention: LN1, the q|k|v projection and attend; returns the
// merged heads [n x D] (in a.merged). block_forward runs it first; a pass that only needs the
// attention's states (chunked training's first pass, last layer) stops there.
template <typename T>
T* block_attend(const ComputeContext& ctx, const BlockWeights<T>& w, int64_t n, const T* x, BlockActs<T>& a,
                BlockScratch<T>& s, const Attend<T>& attend, const BlockPanels* panels = nullptr);
// x [n x D] is updated in place. keep: a.x_in and a.x_mid are kept for backward. panels (float,
// optional): the same weights packed, for products of few rows.
template <typename T>
void block_forward(const ComputeContext& ctx, const BlockWeights<T>& w, int64_t n, T* x, BlockActs<T>& a, BlockScratch<T>& s,
                   bool keep, const Attend<T>& attend, const BlockPanels* panels = nullptr);
// dx [n x D]: d loss/d block output in, d loss/d block input out. Adds the weight gradients of
// the dense layers into g (the attention's own gradients are attend_backward's business).
template <typename T>
void block_backward(const ComputeContext& ctx, const BlockWeights<T>& w, const BlockGrads<T>& g, const BlockActs<T>& a,
                    int64_t n, T* dx, BlockBackScratch<T>& s, const AttendBackward<T>& attend_backward);

}  // namespace polysketch::model
