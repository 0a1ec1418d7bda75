// The PolySketchFormer language model (POLYSKETCH.md section 3): token embedding + sinusoidal
// positions, L pre-norm blocks (fused QKV, RoPE, attention of any mechanism, output projection;
// GLU with GELU), final LayerNorm, tied embedding + output bias. Forward and backward by hand.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "polysketch/attention.h"

namespace polysketch {

// A target id that is not scored: forward's loss (and eval's accuracy) skip these positions,
// e.g. every position but the answers of a synthetic task (`polysketch prepare --task`).
inline constexpr int32_t kIgnoreTarget = -1;

struct ModelConfig {
  int64_t vocab = 4096;
  int64_t layers = 4;
  int64_t width = 256;    // D
  int64_t heads = 4;      // head size D / heads
  int64_t context = 256;  // longest sequence the model is trained or evaluated on by default
  double dropout = 0.0;   // after the attention and GLU output projections (training only)
  uint64_t seed = 1;      // parameter initialisation and sketches (`train --seed` sets it)
  AttentionConfig attention;  // mechanism, p, r, block, ...; seed/layer are set per layer

  int64_t head_dim() const { return width / heads; }
  int64_t glu_hidden() const { return (8 * width / 3) / 8 * 8; }
  void validate() const;  // throws Error naming the offending value
  int64_t parameter_count() const;
  // Throws Error, naming the sizes, when the parameters (and, for train_tokens > 0, training
  // on that many tokens per micro-batch: gradients, AdamW state, activations) would need more
  // memory than the machine has. An estimate made before allocating anything.
  void check_fits_in_memory(int64_t train_tokens) const;
  std::string to_json() const;
  static ModelConfig from_json(const std::string& text, const std::string& where);
};

template <typename T>
class DecodeStateT;  // polysketch/decode.h

// Context parallelism (`polysketch train --context-parallel K`): this process holds tokens
// [offset, offset + len) of every sequence of a batch; the other chunks are on the other members
// of `exchange`'s group (AttentionT::forward). Sketch mechanisms only.
template <typename T>
struct ContextChunkT {
  ChunkExchangeT<T>* exchange = nullptr;
  int64_t offset = 0;    // absolute position of the chunk's first token: RoPE, sinusoids, dropout
  int64_t seq_len = 0;   // length of the whole sequences
  int64_t scored = 0;    // scored targets of the whole batch over every chunk (>= 1)
};

template <typename T>
class ModelT {
 public:
  explicit ModelT(const ModelConfig& config);
  ~ModelT();
  ModelT(const ModelT&) = delete;
  ModelT& operator=(const ModelT&) = delete;

  const ModelConfig& config() const { return config_; }

  // Every trainable tensor, in a fixed order with stable names (the safetensors keys).
  std::vector<Param<T>*> params();
  std::vector<std::vector<T>> zero_grads();
  int64_t parameter_count();

  // Mean next-token cross-entropy of targets given tokens, both [batch x len], over the scored
  // positions (targets in [0, vocab); kIgnoreTarget skips one; at least one must be scored).
  // With train=true, dropout is active (seeded by dropout_seed) and activations are kept for backward().
  // With `chunk`, tokens and targets are one chunk of longer sequences and the result is this
  // chunk's share of the loss (its cross-entropy sum / chunk->scored): the shares of the group
  // add up to the whole batch's loss, and backward's gradients likewise.
  double forward(const int32_t* tokens, const int32_t* targets, int64_t batch, int64_t len,
                 bool train, uint64_t dropout_seed = 0, const ContextChunkT<T>* chunk = nullptr);
  // Adds d(loss)/d(params) into grads (shaped like params()). Call after forward(train=true)
  // (with a chunk: every member of the group calls backward). With `ready`, calls
  // ready(begin, end) as soon as the gradients of params()[begin, end) are complete: a layer at
  // a time, last layer first, then the embedding, output bias and final LayerNorm (e.g. to start
  // summing them over processes while backward goes on).
  void backward(std::vector<std::vector<T>>& grads,
                const std::function<void(size_t, size_t)>& ready = {});

  // Logits [batch x len x vocab] for tokens [batch x len] (no dropout, nothing kept).
  std::vector<T> logits(const int32_t* tokens, int64_t batch, int64_t len);

  // Sketch mechanisms only: per layer, the relative error ||o - o_exact|| / ||o_exact|| of the
  // attention output against the exact polynomial attention with the same weights and inputs
  // (AttentionT::exact_forward), over tokens [batch x len]. Quadratic in len.
  std::vector<double> sketch_error(const int32_t* tokens, int64_t batch, int64_t len);

  // Decoding (polysketch/decode.h). prefill: consumes n >= 1 tokens into `state` and returns the
  // logits [vocab] of the last one. From an empty state it is one pass of the block algorithm;
  // a non-empty state (a loaded snapshot) is advanced token by token.
  std::vector<T> prefill(DecodeStateT<T>& state, const int32_t* tokens, int64_t n);
  // Advances states[0..batch) (distinct, each at its own position) by tokens[b] each, in one
  // batched pass; returns logits [batch x vocab]. Positions may pass config().context.
  // Const: it reads the weights and writes only the states, so several threads may step
  // different states on one model at once (prefill and training still may not run beside it).
  std::vector<T> step(DecodeStateT<T>* const* states, const int32_t* tokens, int64_t batch) const;
  // Identifies these weights and this configuration (CRC-32s): what a state snapshot is tied to.
  std::string identity();

 private:
  struct Impl;
  ModelConfig config_;
  std::unique_ptr<Impl> impl_;
};

using Model = ModelT<float>;
using ContextChunk = ContextChunkT<float>;

}  // namespace polysketch
