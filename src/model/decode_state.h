// Internal: what a DecodeState holds (one attention::HeadState per layer and head), and the
// check that a state belongs to a model's configuration.
#pragma once

#include <cstdint>
#include <vector>

#include "attention/decode.h"
#include "polysketch/decode.h"

namespace polysketch {

template <typename T>
struct DecodeStateT<T>::Impl {
  std::vector<attention::HeadState<T>> heads;  // [layers * heads], layer-major
  std::vector<T> logits;                       // after the last token consumed
};

// The state's internals, for the model's passes (DecodeStateT's friend).
struct DecodeAccess {
  template <typename T>
  static typename DecodeStateT<T>::Impl& impl(DecodeStateT<T>& s) { return *s.impl_; }
  template <typename T>
  static void advance(DecodeStateT<T>& s, int64_t tokens) { s.position_ += tokens; }
  template <typename T>
  static void charge(DecodeStateT<T>& s, int64_t bytes) { s.charge(bytes, "a KV cache's growth"); }
  template <typename T>
  static void refund(DecodeStateT<T>& s, int64_t bytes) {
    if (s.budget_) s.budget_->release(bytes);
    s.charged_ -= bytes;
  }
};

// KV-cache mechanisms: fills an empty state with n random keys and values (and zero logits),
// what a prefill of n tokens leaves behind in size and in decode cost, for benchmarks of
// contexts whose real prefill would take minutes.
void fill_synthetic_kv_cache(DecodeStateT<float>& s, int64_t n, uint64_t seed);

// Throws Error unless `state` was made for this configuration.
template <typename T>
void check_decode_state(const ModelConfig& config, DecodeStateT<T>& state);

// KV-cache mechanisms: throws Error when `tokens` more would grow the state past max_bytes.
template <typename T>
void check_kv_room(const ModelConfig& config, const DecodeStateT<T>& state, int64_t tokens);
// ... and counts that growth against the states' budgets, all or none (Error when one does not fit).
template <typename T>
void reserve_kv(const ModelConfig& config, DecodeStateT<T>* const* states, int64_t count, int64_t tokens);

}  // namespace polysketch
