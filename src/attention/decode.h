// Decoding one attention head token by token (POLYSKETCH.md section 2, last paragraph).
//   sketch mechanisms: z = packed prefix state of the completed blocks, sum_m pack(B_m)^T [V_m|1]
//     (r(r+1)/2 x (d+1)), plus the current partial block: its keys' features phi(kn), values
//     and, for *-local, the LayerNormed keys kn for the exact local part. A full block is folded
//     into z with one matrix product. Size independent of the position.
//   softmax: a KV cache of the (RoPE'd) keys and values; polynomial: of kn and values. O(n).
#pragma once

#include <cstdint>
#include <vector>

#include "polysketch/attention.h"

namespace polysketch::attention {

template <typename T>
struct HeadState {
  std::vector<T> z;      // sketch: [r(r+1)/2 x (d+1)]
  std::vector<T> keys;   // softmax: k; polynomial: kn [count x h]; *-local: kn of the block [b x h]
  std::vector<T> feats;  // sketch: phi(kn) of the current block [b x r]
  std::vector<T> vals;   // [count x d] (sketch: [b x d])
  int64_t count = 0;     // rows in use in keys/vals: the position, or the position mod b
};

// True when the state has a fixed size (the sketch mechanisms).
bool has_constant_state(Mechanism m);

// An empty state (position 0), buffers at their fixed capacity for the sketch mechanisms.
template <typename T>
void init_head_state(const AttentionConfig& cfg, int64_t head_dim, HeadState<T>& s);

// Appends n tokens' k [n x h], v [n x d] (one head, after RoPE). Sketch mechanisms need the
// state at a block boundary (count == 0): complete blocks are folded into z, the rest starts the
// next block. phi_k [n x r], if given, is phi(LN_k(k)) already computed (learned sketches keep it
// from the forward pass; recomputing the sketch network would cost as much again).
template <typename T>
void append_tokens(const AttentionT<T>& att, int64_t head_dim, HeadState<T>& s, int64_t n,
                   const T* k, const T* v, const T* phi_k = nullptr);

// Chunked prefill of a sketch mechanism from a state at a block boundary: out [n x d] and den [n]
// (the denominators 1 + sum_j w_ij) are the attention of the chunk's queries q [n x h] over the
// chunk alone; this adds the earlier tokens, held in z, to both (out is renormalised in place).
// phi_q [n x r] as phi_k above.
template <typename T>
void add_earlier_tokens(const AttentionT<T>& att, int64_t head_dim, const HeadState<T>& s,
                        int64_t n, const T* q, T* out, T* den, const T* phi_q = nullptr);

// A sketch mechanism's per-token inputs for n rows (tokens x heads of one layer) at once: the
// normalised q and k and their features, one batched product per layer instead of a small one per
// head and sequence (which dominated batched decoding).
template <typename T>
struct StepFeatures {
  std::vector<T> qn, kn;         // [n x h]: LN_q(q), LN_k(k)
  std::vector<T> phi_q, phi_k;   // [n x r]
};
// Fills f for q, k [n x h] (after RoPE). Sketch mechanisms only.
template <typename T>
void step_features(const AttentionT<T>& att, int64_t head_dim, int64_t n, const T* q, const T* k,
                   StepFeatures<T>& f);

// Appends the token's k [h], v [d] and writes the attention output of its query q [h] to out [d].
// `row` (sketch mechanisms; optional): the token's row of step_features, used instead of
// computing it here.
template <typename T>
void step_head(const AttentionT<T>& att, int64_t head_dim, HeadState<T>& s, const T* q,
               const T* k, const T* v, T* out, std::vector<T>& scratch,
               const StepFeatures<T>* f = nullptr, int64_t row = 0);

}  // namespace polysketch::attention
