#include "train/chunked.h"

#include <fmt/format.h>

#include <algorithm>

#include "attention/mechanism.h"
#include "kernels/packing.h"

namespace polysketch::train {

namespace {

// The chunks of one sequence batch as a context-parallel group in time: each exclusive_sum call
// of a chunk's forward (one per layer, in layer order) gets the sum of the earlier chunks' states
// for that layer, and each call of a backward (layers in reverse) the sum of the later chunks'.
template <typename T>
class TimeChunks final : public ChunkExchangeT<T> {
 public:
  enum class Pass { forward, replay, backward };

  explicit TimeChunks(int64_t chunks) : prefix_(static_cast<size_t>(chunks)) {}

  // Starts chunk `chunk`'s forward (states accumulate and are kept), its recomputation (the kept
  // states are given back) or its backward (gradient states accumulate, in reverse).
  void begin(Pass pass, int64_t chunk) {
    pass_ = pass;
    chunk_ = static_cast<size_t>(chunk);
    call_ = 0;
  }

  void exclusive_sum(T* values, int64_t count, bool reverse) override {
    const size_t k = call_++;
    if (reverse != (pass_ == Pass::backward))
      throw Error("chunked training: a state exchange out of order (internal error)");
    if (pass_ == Pass::replay) {
      if (chunk_ == 0) {
        std::fill(values, values + count, T(0));
      } else {
        const auto& kept = prefix_[chunk_].at(k);
        std::copy(kept.begin(), kept.end(), values);
      }
      return;
    }
    auto& sums = pass_ == Pass::forward ? forward_ : backward_;
    if (sums.size() <= k) sums.emplace_back(static_cast<size_t>(count), T(0));
    auto& sum = sums[k];
    if (static_cast<int64_t>(sum.size()) != count)
      throw Error("chunked training: state sizes differ between chunks (internal error)");
    if (pass_ == Pass::forward && chunk_ > 0) prefix_[chunk_].push_back(sum);  // chunk 0 starts from 0
    for (int64_t i = 0; i < count; ++i) {
      const T own = values[i];
      values[i] = sum[static_cast<size_t>(i)];
      sum[static_cast<size_t>(i)] += own;
    }
  }

 private:
  Pass pass_ = Pass::forward;
  size_t chunk_ = 0, call_ = 0;
  std::vector<std::vector<T>> forward_, backward_;     // running sums, per call (layer)
  std::vector<std::vector<std::vector<T>>> prefix_;    // per chunk, per call: its incoming state
};

// Columns [begin, begin + len) of every row of x [batch x total].
void columns(const int32_t* x, int64_t batch, int64_t total, int64_t begin, int64_t len,
             std::vector<int32_t>& out) {
  out.resize(static_cast<size_t>(batch * len));
  for (int64_t b = 0; b < batch; ++b)
    std::copy(x + b * total + begin, x + b * total + begin + len, out.begin() + b * len);
}

}  // namespace

std::string chunking_problem(const ModelConfig& config, int64_t context, int64_t chunk) {
  if (chunk < 1) return fmt::format("--chunk must be >= 1, got {}", chunk);
  if (const auto problem = chunk_layout_problem(config.attention, chunk); !problem.empty())
    return "--chunk " + std::to_string(chunk) + ": training in chunks " + problem;
  if (context % config.attention.block != 0)
    return fmt::format("--chunk: the context {} is not a whole number of blocks of {} (the chunks "
                       "after the first start on a block)", context, config.attention.block);
  return "";
}

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
  if (const auto problem = chunking_problem(model.config(), len, chunk); !problem.empty()) throw Error(problem);
  const int64_t chunks = (len + chunk - 1) / chunk;
  const int64_t n = batch * len;
  const int64_t scored = n - std::count(targets, targets + n, kIgnoreTarget);
  if (scored < 1) throw Error("forward: every target is ignored (nothing to learn from)");
  TimeChunks<T> exchange(chunks);
  std::vector<int32_t> x, y;
  auto run_forward = [&](int64_t c) {
    const int64_t begin = c * chunk, size = std::min(chunk, len - begin);
    columns(tokens, batch, len, begin, size, x);
    columns(targets, batch, len, begin, size, y);
    const ContextChunkT<T> part{&exchange, begin, len, scored};
    return model.forward(cache, x.data(), y.data(), batch, size, dropout_seed, &part);
  };
  double loss = 0;
  for (int64_t c = 0; c < chunks; ++c) {
    exchange.begin(TimeChunks<T>::Pass::forward, c);
    loss += run_forward(c);
  }
  for (int64_t c = chunks - 1; c >= 0; --c) {
    if (c < chunks - 1) {  // the last chunk's activations are still in the cache
      exchange.begin(TimeChunks<T>::Pass::replay, c);
      run_forward(c);
    }
    exchange.begin(TimeChunks<T>::Pass::backward, c);
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
