// The chunks of a sequence batch processed one after another in one process, as a context-parallel
// group in time (ChunkExchangeT): chunked training (src/train/chunked.h) and chunked evaluation
// (src/eval/evaluate.h) pass the attention's block states from chunk to chunk through it.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "polysketch/model.h"

namespace polysketch::model {

// The chunks of one sequence batch as a context-parallel group in time: each incoming call of a
// chunk's forward (one per layer, in layer order) gets the sum of the earlier chunks' states for
// that layer, and each call of a backward (layers in reverse) the sum of the later chunks'; the
// outgoing call after it hands on the sum including this chunk.
template <typename T>
class TimeChunks final : public ChunkExchangeT<T> {
 public:
  enum class Pass { forward, replay, backward };

  // keep: the forward keeps each chunk's incoming states for a replay (training's recomputation);
  // without, the forward only passes them on (evaluation: memory independent of the length).
  explicit TimeChunks(int64_t chunks, bool keep = true) : keep_(keep), prefix_(static_cast<size_t>(chunks)) {}

  // Starts chunk `chunk`'s forward (states accumulate and are kept), its recomputation (the kept
  // states are given back) or its backward (gradient states accumulate, in reverse).
  void begin(Pass pass, int64_t chunk) {
    pass_ = pass;
    chunk_ = static_cast<size_t>(chunk);
    call_ = 0;
  }

  bool sequential() const override { return true; }

  // The state entering the chunk: forward, the earlier chunks' (kept for the replay); replay,
  // the kept one; backward, the later chunks' gradient state.
  void incoming(T* values, int64_t count, bool reverse) override {
    const size_t k = call_++;
    if (reverse != (pass_ == Pass::backward))
      throw Error("chunked pass: a state exchange out of order (internal error)");
    if (pass_ == Pass::replay) {
      if (!keep_) throw Error("chunked pass: a replay of states that were not kept (internal error)");
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
    const auto& sum = sums[k];
    if (static_cast<int64_t>(sum.size()) != count)
      throw Error("chunked pass: state sizes differ between chunks (internal error)");
    if (pass_ == Pass::forward && chunk_ > 0 && keep_) prefix_[chunk_].push_back(sum);  // chunk 0 starts from 0
    std::copy(sum.begin(), sum.end(), values);
  }

  // The state leaving the chunk (its incoming state plus its own), for the next chunk in the
  // pass's direction; a replay passes nothing on.
  void outgoing(const T* values, int64_t count, bool reverse) override {
    if (call_ == 0 || reverse != (pass_ == Pass::backward))
      throw Error("chunked pass: a state exchange out of order (internal error)");
    if (pass_ == Pass::replay) return;
    auto& sum = (pass_ == Pass::forward ? forward_ : backward_).at(call_ - 1);
    if (static_cast<int64_t>(sum.size()) != count)
      throw Error("chunked pass: state sizes differ between chunks (internal error)");
    std::copy(values, values + count, sum.begin());
  }

  // For a caller that computes its own state first, as context parallelism does.
  void exclusive_sum(T* values, int64_t count, bool reverse) override {
    std::vector<T> total(values, values + count);
    incoming(values, count, reverse);
    for (int64_t i = 0; i < count; ++i) total[static_cast<size_t>(i)] += values[i];
    outgoing(total.data(), count, reverse);
  }

 private:
  bool keep_;
  Pass pass_ = Pass::forward;
  size_t chunk_ = 0, call_ = 0;
  std::vector<std::vector<T>> forward_, backward_;     // running sums, per call (layer)
  std::vector<std::vector<std::vector<T>>> prefix_;    // per chunk, per call: its incoming state
};

// Columns [begin, begin + len) of every row of x [batch x total]: one chunk of a batch.
inline void chunk_columns(const int32_t* x, int64_t batch, int64_t total, int64_t begin, int64_t len,
                          std::vector<int32_t>& out) {
  out.resize(static_cast<size_t>(batch * len));
  for (int64_t b = 0; b < batch; ++b)
    std::copy(x + b * total + begin, x + b * total + begin + len, out.begin() + b * len);
}

// Columns [begin, begin + len) of the document ids [batch x total] into `docs`; past the first
// column, the id of each sequence's token before them into `before`, whose data it returns
// (ContextChunkT::documents_before; null at column 0).
inline const int32_t* chunk_documents(const int32_t* ids, int64_t batch, int64_t total, int64_t begin,
                                      int64_t len, std::vector<int32_t>& docs, std::vector<int32_t>& before) {
  chunk_columns(ids, batch, total, begin, len, docs);
  if (begin == 0) return nullptr;
  chunk_columns(ids, batch, total, begin - 1, 1, before);
  return before.data();
}

// Why a model of `config` cannot run sequences of `context` tokens in chunks of `chunk`, or ""
// when it can (a sketch mechanism, causal; chunk and context whole numbers of blocks). `what`
// names the use in the message ("training", "evaluation").
std::string chunking_problem(const ModelConfig& config, int64_t context, int64_t chunk, const char* what);

}  // namespace polysketch::model
