// Internal: the trunk of the network (embedding, the blocks, final LayerNorm) as one pass that
// training, evaluation, prefill and the sketch-error diagnostic share; the memory it works in
// (owned by a Workspace or a TrainCache); and the output layer.
#pragma once

#include <functional>
#include <vector>

#include "kernels/gemm.h"
#include "model/block.h"
#include "polysketch/model.h"

namespace polysketch::model {

template <typename T>
struct LayerActs {
  BlockActs<T> block;
  std::vector<T> q, k, v, o;  // [batch, heads, len, hd], after RoPE
  AttentionSaved<T> saved;
};

template <typename T>
struct TrunkMemory {
  std::vector<LayerActs<T>> layers;  // one per layer when kept for backward, else the first reused
  BlockScratch<T> scratch;
  std::vector<T> x, xf;  // the residual stream after the last block and its final LayerNorm [N x D]
  std::vector<T> pe;     // position table of positions pe_t0 .. pe_t0 + pe_len - 1
  int64_t pe_len = -1, pe_t0 = 0;
};

// Called after each layer's attention with q, k, v, out [1, heads, len, hd] (after RoPE) and the
// saved row statistics (the denominators, for the non-softmax mechanisms); it may adjust out in
// place (the earlier tokens of a chunked prefill) and record k, v in a decoding state.
template <typename T>
using AttentionHook = std::function<void(size_t layer, const T* q, const T* k, const T* v, T* out,
                                         AttentionSaved<T>& saved)>;

template <typename T>
struct TrunkPass {
  const int32_t* tokens = nullptr;  // [batch x len], checked against the vocabulary
  int64_t batch = 1, len = 1;
  int64_t t0 = 0;          // absolute position of the first token of each sequence
  bool keep = false;       // keep every layer's activations for backward (training)
  bool states_only = false;  // chunks in time: only pass the attention's states on (the last
                             // layer stops after its attention; no final LayerNorm)
  double dropout = 0;      // training only
  uint64_t dropout_seed = 0;
  int64_t seq_len = 0;     // whole sequences' length when these are chunks of them (0: len)
  ChunkExchangeT<T>* exchange = nullptr;  // context parallelism
  const AttentionHook<T>* hook = nullptr;
  const int32_t* documents = nullptr;  // [batch x len] document ids (AttentionShape::segments)
  const int32_t* documents_before = nullptr;  // chunks: AttentionShape::segments_before
};

// A pass over tokens [batch x len] with their document ids (or null); with a context chunk, the
// chunk of longer sequences it describes (positions from its offset, its state exchange, the
// documents before it).
template <typename T>
TrunkPass<T> chunk_pass(const int32_t* tokens, int64_t batch, int64_t len, const int32_t* documents,
                        const ContextChunkT<T>* chunk) {
  TrunkPass<T> pass{tokens, batch, len};
  pass.documents = documents;
  if (chunk) {
    pass.t0 = chunk->offset;
    pass.seq_len = chunk->seq_len;
    pass.exchange = chunk->exchange;
    pass.documents_before = chunk->documents_before;
  }
  return pass;
}

// Runs the network up to the final LayerNorm: mem.xf [N x D].
template <typename T>
void run_trunk(const ComputeContext& ctx, const Weights<T>& w, const ModelConfig& cfg, const TrunkPass<T>& pass, TrunkMemory<T>& mem);

// logits [n x v] = xf E^T + bias
template <typename T>
void output_logits(const ComputeContext& ctx, const Weights<T>& w, const T* xf, int64_t n,
                   std::vector<T>& logits) {
  const auto v = w.embedding.shape[0], d = w.embedding.shape[1];
  logits.resize(static_cast<size_t>(n * v));
  for (int64_t i = 0; i < n; ++i) std::copy(w.output_bias.value.begin(), w.output_bias.value.end(), logits.begin() + i * v);
  kernels::gemm<T>(ctx, false, true, n, v, d, T(1), xf, d, w.embedding.value.data(), d, T(1), logits.data(), v);
}

}  // namespace polysketch::model

namespace polysketch {
template <typename T>
struct WorkspaceT<T>::Impl {
  model::TrunkMemory<T> trunk;
};
template <typename T>
struct TrainCacheT<T>::Impl {
  model::TrunkMemory<T> trunk;
  std::vector<T> dlogits;  // d loss / d logits of the forward
  std::vector<int32_t> tokens, documents;  // documents: empty without document masking
  std::vector<int32_t> documents_before;   // a chunk's (ContextChunkT::documents_before)
  int64_t batch = 0, len = 0;
  ContextChunkT<T> chunk;  // exchange null: whole sequences
  model::BlockBackScratch<T> back;
  std::vector<T> dx, dq, dk, dv;
  bool ready = false;  // holds a forward not yet consumed by backward
};
}  // namespace polysketch
