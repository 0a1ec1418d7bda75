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
                                uint64_t dropout_seed, std::vector<std::vector<T>>& grads) {
  if (const auto problem = model::chunking_problem(model.config(), len, chunk, "training"); !problem.empty())
    throw Error(problem);
  const int64_t chunks = (len + chunk - 1) / chunk;
  const int64_t n = batch * len;
  const int64_t scored = n - std::count(targets, targets + n, kIgnoreTarget);
  if (scored < 1) throw Error("forward: every target is ignored (nothing to learn from)");
  model::TimeChunks<T> exchange(chunks);
  std::vector<int32_t> x, y;
  auto run_forward = [&](int64_t c) {
    const int64_t begin = c * chunk, size = std::min(chunk, len - begin);
    model::chunk_columns(tokens, batch, len, begin, size, x);
    model::chunk_columns(targets, batch, len, begin, size, y);
    const ContextChunkT<T> part{&exchange, begin, len, scored};
    return model.forward(cache, x.data(), y.data(), batch, size, dropout_seed, &part);
  };
  double loss = 0;
  for (int64_t c = 0; c < chunks; ++c) {
    exchange.begin(model::TimeChunks<T>::Pass::forward, c);
    loss += run_forward(c);
  }
  for (int64_t c = chunks - 1; c >= 0; --c) {
    if (c < chunks - 1) {  // the last chunk's activations are still in the cache
      exchange.begin(model::TimeChunks<T>::Pass::replay, c);
      run_forward(c);
    }
    exchange.begin(model::TimeChunks<T>::Pass::backward, c);
    model.backward(cache, grads);
  }
  return loss;
}

template double chunked_forward_backward<float>(const ModelT<float>&, TrainCacheT<float>&, const int32_t*,
                                                const int32_t*, int64_t, int64_t, int64_t, uint64_t,
                                                std::vector<std::vector<float>>&);
template double chunked_forward_backward<double>(const ModelT<double>&, TrainCacheT<double>&, const int32_t*,
                                                 const int32_t*, int64_t, int64_t, int64_t, uint64_t,
                                                 std::vector<std::vector<double>>&);

}  // namespace polysketch::train
