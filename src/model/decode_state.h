// Internal: what a DecodeState holds (one attention::HeadState per layer and head), and the
// check that a state belongs to a model's configuration.
#pragma once

#include <vector>

#include "attention/decode.h"
#include "polysketch/decode.h"

namespace polysketch {

template <typename T>
struct DecodeStateT<T>::Impl {
  std::vector<attention::HeadState<T>> heads;  // [layers * heads], layer-major
  std::vector<T> logits;                       // after the last token consumed
};

// Throws Error unless `state` was made for this configuration.
template <typename T>
void check_decode_state(const ModelConfig& config, DecodeStateT<T>& state);

// KV-cache mechanisms: throws Error when `tokens` more would grow the state past max_bytes.
template <typename T>
void check_kv_room(const ModelConfig& config, const DecodeStateT<T>& state, int64_t tokens);

}  // namespace polysketch
