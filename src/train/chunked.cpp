#include "train/chunked.h"

#include <fmt/format.h>

#include <algorithm>

#include "attention/mechanism.h"
#include "kernels/packing.h"
#include "model/time_chunks.h"

namespace polysketch::train {

int64_t chunk_state_bytes(const ModelConfig& config, int64_t batch, int64_t context, int64_t chunk) {
  const int64_t chunks = (context + chunk - 1) / chunk;
  const int64_t r = attention::feature_dim(config.attention, config.head_dim());
  const int64_t state = kernels::packed_size(r) * (config.head_dim() + 1);
  return 4 * (chunks - 1) * config.layers * batch * config.heads * state;
}

template <typename T>
double chunked_forward_backward(const ModelT<T>& model, TrainCacheT<T>& cache, const int32_t* tokens,
                                const int32_t* targets, int64_t batch, int64_t len, int64_t chunk,
                                uint64_t dropout_seed, std::vector<std::vector<T>>& grads,
                                const int32_t* documents) {
  if (const auto problem = model::chunking_problem(model.config(), len, chunk, "training"); !problem.empty())
    throw Error(problem);
  const int64_t chunks = (len + chunk - 1) / chunk;
  const int64_t n = batch * len;
  const int64_t scored = n - std::count(targets, targets + n, kIgnoreTarget);
  if (scored < 1) throw Error("forward: every target is ignored (nothing to learn from)");
  model::TimeChunks<T> exchange(chunks);
  std::vector<int32_t> x, y, docs, before;
  auto run = [&](int64_t c, bool states_only) {
    const int64_t begin = c * chunk, size = std::min(chunk, len - begin);
    model::chunk_columns(tokens, batch, len, begin, size, x);
    ContextChunkT<T> part{&exchange, begin, len, scored};
    if (documents) part.documents_before = model::chunk_documents(documents, batch, len, begin, size, docs, before);
    const int32_t* chunk_docs = documents ? docs.data() : nullptr;
    if (states_only) {
      model.pass_states(cache, x.data(), batch, size, dropout_seed, part, chunk_docs);
      return 0.0;
    }
    model::chunk_columns(targets, batch, len, begin, size, y);
    return model.forward(cache, x.data(), y.data(), batch, size, dropout_seed, &part, chunk_docs);
  };
  // The first pass only carries the states forward: a chunk's loss comes from its replay (the
  // last chunk's from its forward, whose activations backward then uses directly).
  double loss = 0;
  for (int64_t c = 0; c < chunks; ++c) {
    exchange.begin(model::TimeChunks<T>::Pass::forward, c);
    loss += run(c, c < chunks - 1);
  }
  for (int64_t c = chunks - 1; c >= 0; --c) {
    if (c < chunks - 1) {
      exchange.begin(model::TimeChunks<T>::Pass::replay, c);
      loss += run(c, false);
    }
    exchange.begin(model::TimeChunks<T>::Pass::backward, c);
    model.backward(cache, grads);
  }
  return loss;
}

template double chunked_forward_backward<float>(const ModelT<float>&, TrainCacheT<float>&, const int32_t*,
                                                const int32_t*, int64_t, int64_t, int64_t, uint64_t,
                                                std::vector<std::vector<float>>&, const int32_t*);
template double chunked_forward_backward<double>(const ModelT<double>&, TrainCacheT<double>&, const int32_t*,
                                                 const int32_t*, int64_t, int64_t, int64_t, uint64_t,
                                                 std::vector<std::vector<double>>&, const int32_t*);

}  // namespace polysketch::train
