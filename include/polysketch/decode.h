// Decoding state of one sequence: owned by the caller and separate from the model's weights (as
// gemma.cpp's KV cache is), so one loaded model serves many sequences at once.
//
//   polysketch::Model model(config);                 // weights loaded
//   polysketch::DecodeState s(model.config());       // empty, position 0
//   auto logits = model.prefill(s, prompt.data(), prompt.size());   // block algorithm, one pass
//   std::vector<polysketch::DecodeState*> batch{&s, &t};
//   auto next = model.step(batch.data(), tokens, 2); // [2 x vocab], each at its own position
//
// Sketch mechanisms keep, per layer and head, the packed prefix state of the completed blocks
// (r(r+1)/2 x (h+1)) and the current partial block: the state's size does not depend on the
// position. softmax and polynomial keep a KV cache, which grows until `max_bytes`.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "polysketch/config.h"

namespace polysketch {

// A memory budget shared by a set of decoding states (a server's sequences and sessions): each
// state made with it counts its bytes against the limit for as long as it lives. Making a state
// that does not fit, forking one, or growing a KV cache past the limit throws Error naming the
// sizes, unless `on_exceeded` makes room first. Thread-safe.
class DecodeBudget {
 public:
  explicit DecodeBudget(int64_t limit_bytes);
  int64_t limit() const { return limit_; }
  int64_t used() const { return used_; }
  // Called with the bytes missing when a charge does not fit (from the thread that charges,
  // possibly inside a decoding step; it must not use the states being stepped): it may free
  // other states (evict them) and return true to retry, or return false to fail.
  std::function<bool(int64_t missing_bytes)> on_exceeded;

  // Counts `bytes` more, or throws Error (`what` says for what); release() gives them back.
  void charge(int64_t bytes, const char* what);
  void release(int64_t bytes) { used_ -= bytes; }

 private:
  const int64_t limit_;
  std::atomic<int64_t> used_{0};
};

template <typename T>
class DecodeStateT {
 public:
  // Throws Error for a non-causal model (it cannot be decoded token by token). With `budget`,
  // the state's bytes count against it (and copies' and growth's too).
  explicit DecodeStateT(const ModelConfig& config, std::shared_ptr<DecodeBudget> budget = nullptr);
  ~DecodeStateT();
  DecodeStateT(const DecodeStateT& other);  // a deep copy: fork a sequence
  DecodeStateT(DecodeStateT&&) noexcept;
  DecodeStateT& operator=(DecodeStateT&&) noexcept;

  const ModelConfig& config() const { return config_; }
  int64_t position() const { return position_; }  // tokens consumed so far
  int64_t bytes() const;                           // memory held by the state's tensors
  // Logits [vocab] that followed the last token consumed (empty at position 0); kept in
  // snapshots, so a loaded state can be continued without any new token.
  const std::vector<T>& last_logits() const;
  // softmax / polynomial: a step that would grow the KV cache past this throws Error.
  // Default: half of the machine's physical memory.
  int64_t max_bytes;
  // Sketch mechanisms: tokens per pass of prefill (rounded down to a multiple of the block size,
  // at least one block). Bounds prefill's working memory independently of the prompt's length.
  int64_t prefill_chunk = 4096;

  // Snapshot: magic, version, the model's identity (Model::identity()), position, every tensor,
  // CRC-32. load() rejects another model's state, a truncated or corrupt file, with Error.
  void save(const std::string& path, const std::string& model_identity) const;
  static DecodeStateT load(const std::string& path, const ModelConfig& config,
                           const std::string& model_identity,
                           std::shared_ptr<DecodeBudget> budget = nullptr);
  const std::shared_ptr<DecodeBudget>& budget() const { return budget_; }

  struct Impl;  // internal (src/model/decode_state.h)

 private:
  friend struct DecodeAccess;  // internal: the model's passes (src/model/decode_state.h)
  void charge(int64_t bytes, const char* what);  // against the budget, if any
  ModelConfig config_;
  int64_t position_ = 0;
  std::unique_ptr<Impl> impl_;
  std::shared_ptr<DecodeBudget> budget_;
  int64_t charged_ = 0;  // bytes counted against budget_
};

using DecodeState = DecodeStateT<float>;

}  // namespace polysketch
