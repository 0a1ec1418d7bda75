// Sampling from a model, token by token: the prompt in one prefill, then one decoding step per
// token against a caller-owned state. Shared by `polysketch generate` and the Python module, so
// both produce the same tokens for the same seed.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/rng.h"
#include "polysketch/model.h"

namespace polysketch::model {

struct SamplingOptions {
  double temperature = 0.8;  // 0: greedy
  int64_t top_k = 0;         // 0: off
  double top_p = 1.0;        // nucleus mass in (0, 1]
  uint64_t seed = 1;
};

// Throws Error naming the field (temperature, top_k, top_p) of an invalid value, or with
// flag_names its command-line flag (--temperature, --top-k, --top-p).
void check_sampling(const SamplingOptions& options, bool flag_names);

// A token id drawn from logits under the options (temperature, then top-k, then top-p).
// `allowed` (if not empty): per id, 0 where a token must not be drawn (data::TextStream's mask);
// ids past its end are allowed. At least one allowed id is expected.
int32_t sample(const std::vector<float>& logits, const SamplingOptions& options, kernels::Rng& rng,
               const std::vector<uint8_t>& allowed = {});

// The sampler's random stream for a seed (every generator of the same seed draws the same).
kernels::Rng sampling_rng(uint64_t seed);

// The tokens a prompt puts into a state: the prompt, but for an empty prompt on an empty state
// token 0 (there must be something to predict from); on a non-empty state nothing.
std::vector<int32_t> prompt_input(const DecodeState& state, std::vector<int32_t> ids);
// Reads a prompt into a state (one prefill of prompt_input).
void read_prompt(const Model& model, DecodeState& state, std::vector<int32_t> ids);

class Generator {
 public:
  // end_token: the token that ends the text (the tokenizer's end-of-document token), -1: none.
  Generator(const Model& model, DecodeState& state, const SamplingOptions& options, int32_t end_token = -1);
  // Consumes the prompt (read_prompt).
  void prompt(std::vector<int32_t> ids) { read_prompt(model_, state_, std::move(ids)); }
  // Samples the next token from the state's last logits (among `allowed`, see sample()) and
  // advances the state by it.
  int32_t next(const std::vector<uint8_t>& allowed = {});
  // Whether the last token drawn was end_token: the text is complete.
  bool ended() const { return ended_; }

 private:
  const Model& model_;
  DecodeState& state_;
  SamplingOptions options_;
  kernels::Rng rng_;
  int32_t end_token_;
  bool ended_ = false;
};

}  // namespace polysketch::model
