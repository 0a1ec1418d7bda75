// Internal: the model's parameters and buffers, shared by model.cpp (training) and decode.cpp.
#pragma once

#include <algorithm>
#include <memory>
#include <vector>

#include "kernels/gemm.h"
#include "polysketch/model.h"

namespace polysketch {

template <typename T>
struct ModelT<T>::Impl {
  struct Layer {
    Param<T> ln1_scale, ln1_bias, qkv, out, ln2_scale, ln2_bias, glu_in, glu_out;
    std::unique_ptr<AttentionT<T>> attn;
  };
  struct LayerActs {  // kept by forward(train) for backward
    std::vector<T> x_in, ln1, q, k, v, o, merged, mask1, x_mid, ln2, u, g, mask2;
    AttentionSaved<T> saved;
  };
  Param<T> embedding, output_bias, final_scale, final_bias;
  std::vector<Layer> layers;
  // Cache of the last training forward.
  std::vector<LayerActs> acts;
  std::vector<T> x_final, xf, dlogits;
  std::vector<int32_t> tokens;
  int64_t batch = 0, len = 0;
  ContextChunkT<T> chunk;  // of the last training forward (exchange null: whole sequences)
  // Scratch kept across steps: fresh multi-hundred-megabyte buffers every step cost page faults
  // and zero-filling (a quarter of a step at n = 32768). Also the position table for `pe_len`.
  std::vector<T> qkv, proj, dx, tmp, dg, du, dy, dq, dk, dv, dqkv, pe;
  int64_t pe_len = -1, pe_t0 = 0;
  bool grads_ready = false;  // dlogits holds d loss / d logits of the last training forward
};

// logits [n x v] = xf E^T + bias
template <typename T>
void output_logits(const Param<T>& emb, const Param<T>& bias, const std::vector<T>& xf, int64_t n,
                   int64_t d, int64_t v, std::vector<T>& logits) {
  logits.resize(static_cast<size_t>(n * v));
  for (int64_t i = 0; i < n; ++i) std::copy(bias.value.begin(), bias.value.end(), logits.begin() + i * v);
  kernels::gemm<T>(false, true, n, v, d, T(1), xf.data(), d, emb.value.data(), d, T(1), logits.data(), v);
}

}  // namespace polysketch
