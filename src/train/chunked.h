// Training on long sequences a chunk of tokens at a time (`polysketch train --chunk N`): memory of
// one chunk's activations, whatever the context (docs/DESIGN.md, "Chunked training").
//
// Context parallelism splits a sequence over ranks that pass each other the attention's block
// states; this passes them across time, in one process. Forward: chunk by chunk, each layer
// starting from the key state of the earlier chunks (kept, per chunk and layer, for the
// recomputation); every chunk but the last runs only as far as the states need (no output
// layer, the last layer up to its attention). Backward: chunks in reverse order; the chunk's
// forward is recomputed from its kept states (the last chunk's is still in the cache), giving
// its loss, then back-propagated with each layer's gradient state from the later chunks. The
// attention's own state comes out of its scan (ChunkExchangeT::sequential), with no extra
// pass. Sketch mechanisms only (the others attend to every earlier key); chunks of whole blocks.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "polysketch/model.h"

namespace polysketch::train {

// Forward and backward of one micro-batch, tokens and targets [batch x len], in chunks of `chunk`
// tokens (the last may be shorter): ADDS the parameter gradients into grads and returns the
// loss (mean cross-entropy over the scored targets), both equal to model.forward + backward on
// the whole sequences up to summation order (dropout masks by absolute position). With
// `documents` ([batch x len], as forward's), attention stays within each document across the
// chunks. Throws Error with model::chunking_problem's reason.
template <typename T>
double chunked_forward_backward(const ModelT<T>& model, TrainCacheT<T>& cache, const int32_t* tokens,
                                const int32_t* targets, int64_t batch, int64_t len, int64_t chunk,
                                uint64_t dropout_seed, std::vector<std::vector<T>>& grads,
                                const int32_t* documents = nullptr);

// Bytes of the key states kept for the recomputation: per chunk after the first, per layer, per
// sequence and head, r(r+1)/2 x (head_dim + 1) values.
int64_t chunk_state_bytes(const ModelConfig& config, int64_t batch, int64_t context, int64_t chunk);

}  // namespace polysketch::train
