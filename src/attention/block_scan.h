// The block-based causal algorithm of the sketch mechanisms (POLYSKETCH.md section 2), for one
// head. With A = phi(q), B = phi(k), C = [v | 1]:
//   N_l = diag_l + pack(A_l) Z_l,   Z_l = sum_{m<l} pack(B_m)^T C_m     (causal)
//   N_l = diag_l + pack(A_l) (Z - pack(B_l)^T C_l)                      (non-causal)
// where pack is the packed symmetric self-tensoring (r(r+1)/2 columns) and diag_l is the dense
// block product: <A_i,B_j>^2 for pure sketches, the exact <qn_i,kn_j>^p for *-local mechanisms.
// Nothing n x n is formed; working memory is O(b r^2) per thread.
#pragma once

#include <cstdint>

#include "polysketch/compute.h"

namespace polysketch::attention {

template <typename T>
struct SketchHead {
  const ComputeContext* ctx;
  int64_t n, r, d, block;
  const T* a;  // phi(q) [n x r]
  const T* b;  // phi(k) [n x r]
  const T* v;  // [n x d]
  bool causal;
  // Exact local blocks (*-local): LayerNormed q, k [n x h] and degree p; qn == nullptr otherwise.
  const T* qn = nullptr;
  const T* kn = nullptr;
  int64_t h = 0;
  int p = 4;
  // Context parallelism (causal): the key state of the earlier chunks, sum of pack(B_m)^T C_m,
  // and (backward) the gradient state of the later ones, sum of pack(A_m)^T G_m; each
  // [r(r+1)/2 x (d+1)], null for a whole sequence.
  const T* z_in = nullptr;
  const T* u_in = nullptr;
  // Chunks run one after another (ChunkExchangeT::sequential): where the scans leave the state
  // after this chunk, z_in plus its key state (forward) and u_in plus its gradient state
  // (backward, scan in reverse); null when not wanted.
  T* z_out = nullptr;
  T* u_out = nullptr;
  // Document masking (causal): document ids [n], non-decreasing. A row attends
  // only to its own document: the diagonal blocks mask the other pairs, and the scans restart
  // their state at each document start (the key state of a block holds only the keys after its
  // last start; a row uses the incoming state only before its block's first start).
  const int32_t* seg = nullptr;
  // With seg and z_in: a document starts at this chunk's first token (the earlier chunks' state
  // is not this document's, and this chunk passes none back to them).
  bool starts_document = false;
};

// out [n x d], den [n] = 1 + sum_j w_ij. Uses up to `threads` threads across blocks.
template <typename T>
void sketch_forward(const SketchHead<T>& s, int threads, T* out, T* den);

// da, db [n x r] and dv [n x d] are overwritten; for *-local, the local blocks' gradients are
// added into dqn, dkn [n x h].
template <typename T>
void sketch_backward(const SketchHead<T>& s, int threads, const T* out, const T* dout,
                     const T* den, T* da, T* db, T* dv, T* dqn, T* dkn);

// What this chunk passes on under context parallelism, each [r(r+1)/2 x (d+1)], overwritten:
// forward, its key state sum_l pack(B_l)^T C_l; backward, its gradient state
// sum_l pack(A_l)^T G_l (G = dL/dN from out, dout, den), which is also dL/dz_in.
template <typename T>
void sketch_key_state(const SketchHead<T>& s, int threads, T* state);
template <typename T>
void sketch_grad_state(const SketchHead<T>& s, int threads, const T* out, const T* dout,
                       const T* den, T* state);

}  // namespace polysketch::attention
