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
#include "polysketch/config.h"
#include "polysketch/decode.h"

namespace polysketch {

// A target id that is not scored: forward's loss (and eval's accuracy) skip these positions,
// e.g. every position but the answers of a synthetic task (`polysketch prepare --task`).
inline constexpr int32_t kIgnoreTarget = -1;

namespace model {
template <typename P, typename A>
struct ModelTensors;  // src/model/weights.h
struct DecodePanels;  // src/model/block.h
}

// Context parallelism (`polysketch train --context-parallel K`): this process holds tokens
// [offset, offset + len) of every sequence of a batch; the other chunks are on the other members
// of `exchange`'s group (AttentionT::forward). Sketch mechanisms only.
template <typename T>
struct ContextChunkT {
  ChunkExchangeT<T>* exchange = nullptr;
  int64_t offset = 0;    // absolute position of the chunk's first token: RoPE, sinusoids, dropout
  int64_t seq_len = 0;   // length of the whole sequences
  int64_t scored = 0;    // scored targets of the whole batch over every chunk (>= 1)
  // Document masking across chunks in time (chunked training: an exchange that is sequential,
  // with forward's `documents` for the chunk): [batch] the document id of each sequence's token
  // before the chunk, null for the first chunk (ChunkExchangeT, AttentionShape::segments_before).
  const int32_t* documents_before = nullptr;
  // Scoring by position (Model::score) with documents_before: [batch] where the document of
  // each sequence's token before the chunk starts (an absolute position), to count from.
  const int64_t* document_starts = nullptr;
};

template <typename T>
class ModelT;

// Working memory of the inference calls (loss, logits, prefill, sketch_error): owned by the
// caller, one per thread, reused from call to call so that large buffers are allocated once.
// Calls given none use a temporary one.
template <typename T>
class WorkspaceT {
 public:
  WorkspaceT();
  ~WorkspaceT();
  WorkspaceT(WorkspaceT&&) noexcept;
  WorkspaceT& operator=(WorkspaceT&&) noexcept;

 private:
  friend class ModelT<T>;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// What a training forward keeps for its backward (every layer's activations, d loss/d logits)
// and their working memory: owned by the caller, reused step after step (fresh
// multi-hundred-megabyte buffers every step would cost page faults and zero-filling).
template <typename T>
class TrainCacheT {
 public:
  TrainCacheT();
  ~TrainCacheT();
  TrainCacheT(TrainCacheT&&) noexcept;
  TrainCacheT& operator=(TrainCacheT&&) noexcept;

 private:
  friend class ModelT<T>;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The weights, const once loaded: every computing call is const and writes only what the caller
// passes (a workspace, a training cache, decoding states), so several threads may use one model
// at once, each with its own.
template <typename T>
class ModelT {
 public:
  // Its products (and its attention's) run as `ctx` says (polysketch/compute.h; the default:
  // f32 on OpenBLAS; make_compute_context picks this machine's best).
  explicit ModelT(const ModelConfig& config, const ComputeContext& ctx = {});
  ~ModelT();
  ModelT(const ModelT&) = delete;
  ModelT& operator=(const ModelT&) = delete;

  const ModelConfig& config() const { return config_; }
  const ComputeContext& context() const { return ctx_; }

  // Every trainable tensor, in a fixed order with stable names (the safetensors keys). The
  // non-const form is for loading and for the optimizer (it drops prepare_decoding's copies).
  std::vector<Param<T>*> params();
  std::vector<const Param<T>*> params() const;
  std::vector<std::vector<T>> zero_grads() const;  // shaped like params()
  int64_t parameter_count() const;

  // Training forward: mean next-token cross-entropy of targets given tokens, both
  // [batch x len], over the scored positions (targets in [0, vocab); kIgnoreTarget skips one;
  // at least one must be scored), with dropout (seeded by dropout_seed); keeps in `cache` what
  // backward needs. With `chunk`, tokens and targets are one chunk of longer sequences and the
  // result is this chunk's share of the loss (its cross-entropy sum / chunk->scored): the
  // shares of the group add up to the whole batch's loss, and backward's gradients likewise.
  // With `documents` ([batch x len] ids, non-decreasing along each sequence; whole sequences,
  // or chunks in time with chunk->documents_before), tokens attend only within their document
  // (AttentionShape::segments); positions stay those of the window.
  double forward(TrainCacheT<T>& cache, const int32_t* tokens, const int32_t* targets,
                 int64_t batch, int64_t len, uint64_t dropout_seed = 0,
                 const ContextChunkT<T>* chunk = nullptr, const int32_t* documents = nullptr) const;
  // Chunks in time (chunked training's first pass): runs chunk `chunk` of the sequences only as
  // far as its attention states need (what forward with `chunk` would pass on, with the same
  // dropout), keeping nothing for backward and computing no loss; cache's memory is reused.
  void pass_states(TrainCacheT<T>& cache, const int32_t* tokens, int64_t batch, int64_t len,
                   uint64_t dropout_seed, const ContextChunkT<T>& chunk,
                   const int32_t* documents = nullptr) const;
  // Adds d(loss)/d(params) into grads (shaped like params()) for cache's forward, which it
  // consumes (with a chunk: every member of the group calls backward). With `ready`, calls
  // ready(begin, end) as soon as the gradients of params()[begin, end) are complete: a layer at
  // a time, last layer first, then the embedding, output bias and final LayerNorm (e.g. to start
  // summing them over processes while backward goes on).
  void backward(TrainCacheT<T>& cache, std::vector<std::vector<T>>& grads,
                const std::function<void(size_t, size_t)>& ready = {}) const;

  // Evaluation (no dropout, nothing kept): the mean cross-entropy over the scored positions,
  // their number, and how many of them have their target as the model's first choice. With
  // by_position, also per position t in [0, len): the cross-entropy summed over the batch's
  // scored rows at t, and their number (does the model use the long context?). With `documents`
  // (as forward's), attention stays within each document and t counts from the token's document
  // start (the context it sees). With `chunk` (as forward's, documents too), the tokens are one
  // chunk of longer sequences: t is then a position in the whole sequences, in [0, seq_len) (a
  // chunk may score nothing).
  struct Score {
    double loss = 0;
    int64_t scored = 0, correct = 0;
    std::vector<double> position_loss;
    std::vector<int64_t> position_scored;
  };
  Score score(const int32_t* tokens, const int32_t* targets, int64_t batch, int64_t len,
              WorkspaceT<T>* ws = nullptr, bool by_position = false,
              const int32_t* documents = nullptr, const ContextChunkT<T>* chunk = nullptr) const;
  double loss(const int32_t* tokens, const int32_t* targets, int64_t batch, int64_t len,
              WorkspaceT<T>* ws = nullptr) const {
    return score(tokens, targets, batch, len, ws).loss;
  }
  // Logits [batch x len x vocab] for tokens [batch x len].
  std::vector<T> logits(const int32_t* tokens, int64_t batch, int64_t len,
                        WorkspaceT<T>* ws = nullptr) const;

  // Sketch mechanisms only: per layer, the relative error ||o - o_exact|| / ||o_exact|| of the
  // attention output against the exact polynomial attention with the same weights and inputs
  // (AttentionT::exact_forward), over tokens [batch x len]. Quadratic in len.
  std::vector<double> sketch_error(const int32_t* tokens, int64_t batch, int64_t len,
                                   WorkspaceT<T>* ws = nullptr) const;

  // Decoding (polysketch/decode.h). prefill: consumes n >= 1 tokens into `state` and returns the
  // logits [vocab] of the last one. From an empty state it is one pass of the block algorithm;
  // a non-empty state (a loaded snapshot) is advanced token by token.
  std::vector<T> prefill(DecodeStateT<T>& state, const int32_t* tokens, int64_t n,
                         WorkspaceT<T>* ws = nullptr) const;
  // Advances states[0..batch) (distinct, each at its own position) by tokens[b] each, in one
  // batched pass; returns logits [batch x vocab]. Positions may pass config().context.
  std::vector<T> step(DecodeStateT<T>* const* states, const int32_t* tokens, int64_t batch) const;
  // Once the weights are final (after loading; float models): copies the dense weights into the
  // layout the few-row products stream contiguously (kernels::PanelMatrix), which step then
  // uses: faster decoding, the same results bit for bit, for another copy of those weights in
  // memory. Changing the weights afterwards needs another call (params() drops the copies). Not
  // to be called while other threads decode.
  void prepare_decoding();
  // Identifies these weights and this configuration (CRC-32s): what a state snapshot is tied to.
  std::string identity() const;

 private:
  ModelConfig config_;
  ComputeContext ctx_;
  std::unique_ptr<model::ModelTensors<Param<T>, std::unique_ptr<AttentionT<T>>>> weights_;
  std::unique_ptr<model::DecodePanels> panels_;  // prepare_decoding's; null until then
};

using Model = ModelT<float>;
using Workspace = WorkspaceT<float>;
using TrainCache = TrainCacheT<float>;
using ContextChunk = ContextChunkT<float>;

}  // namespace polysketch
