// The model's layers as forward/backward pairs with the same argument order (llm.c style).
// Row-major; N = batch * len rows.
#pragma once

#include <cstdint>
#include <vector>

namespace polysketch::model {

// Sinusoidal position table [len x width] for positions t0..t0+len-1, sin and cos interleaved:
// pe[t][2i] = sin(t w_i), pe[t][2i+1] = cos(t w_i), w_i = 10000^(-2i/width).
template <typename T>
std::vector<T> sinusoidal_positions(int64_t len, int64_t width, int64_t t0 = 0);
template <typename T>
void sinusoidal_row(int64_t t, int64_t width, T* pe);  // row t of that table

// out[b,t] = scale * E[tokens[b,t]] + pe[t]. The model uses scale = sqrt(width) as the original
// Transformer does: E (std 1/sqrt(width), tied with the output layer) then contributes as much as
// the unit-amplitude sinusoids instead of being drowned by them.
template <typename T>
void embedding_forward(T* out, const int32_t* tokens, const T* table, T scale, const T* pe,
                       int64_t batch, int64_t len, int64_t width);
template <typename T>
void embedding_backward(T* dtable, const T* dout, const int32_t* tokens, T scale, int64_t n,
                        int64_t width);

// RoPE (base 10000) on x [heads_total, len, hd], rotating pairs (2i, 2i+1) of each row by
// t * 10000^(-2i/hd), positions t = t0..t0+len-1. Backward applies the inverse rotation to the
// gradient. In place.
template <typename T>
void rope_forward(T* x, int64_t heads_total, int64_t len, int64_t hd, int64_t t0 = 0);
template <typename T>
void rope_backward(T* dx, int64_t heads_total, int64_t len, int64_t hd, int64_t t0 = 0);


// qkv [batch*len x 3D] -> q, k, v [batch, heads, len, hd]; and the reverse (gradients).
template <typename T>
void split_heads(const T* qkv, T* q, T* k, T* v, int64_t batch, int64_t len, int64_t heads,
                 int64_t hd);
template <typename T>
void merge_qkv_grads(T* dqkv, const T* dq, const T* dk, const T* dv, int64_t batch, int64_t len,
                     int64_t heads, int64_t hd);
// o [batch, heads, len, hd] <-> [batch*len x D]
template <typename T>
void merge_heads(T* out, const T* o, int64_t batch, int64_t len, int64_t heads, int64_t hd);
template <typename T>
void split_heads_grad(T* dout_heads, const T* dmerged, int64_t batch, int64_t len, int64_t heads,
                      int64_t hd);

// GLU: u [N x 2F] = [x1 | x2] -> g [N x F] = x1 * gelu(x2)
template <typename T>
void glu_forward(T* g, const T* u, int64_t n, int64_t f);
template <typename T>
void glu_backward(T* du, const T* dg, const T* u, int64_t n, int64_t f);

// Dropout mask [batch*len x width] holding 0 or 1/(1-p) (p == 0: mask empty), drawn from
// (seed, site) row by row: each token of each sequence of seq_len tokens (0: len) has its own
// stream, found by its absolute position t0 + t, so a chunk of a sequence (context parallelism)
// gets the rows of the whole sequence's mask.
template <typename T>
void dropout_mask(std::vector<T>& mask, int64_t batch, int64_t len, int64_t width, double p,
                  uint64_t seed, uint64_t site, int64_t t0 = 0, int64_t seq_len = 0);

// Cross-entropy: logits [N x V] -> the sum over the scored rows of -log softmax(logits)[target]
// divided by `denominator` (0: the number of scored rows, the mean; context parallelism passes
// the whole sequence's); rows whose target is kIgnoreTarget are not scored (their dlogits are
// 0). If dlogits is non-null it receives d(loss)/d logits (may alias logits). Throws Error
// when the denominator is 0.
template <typename T>
double cross_entropy(const T* logits, const int32_t* targets, int64_t n, int64_t vocab,
                     T* dlogits, int64_t denominator = 0);

}  // namespace polysketch::model
