// A model's configuration: its shape and attention (config.json in a checkpoint).
#pragma once

#include <cstdint>
#include <string>

#include "polysketch/attention.h"

namespace polysketch {

struct ModelConfig {
  int64_t vocab = 4096;
  int64_t layers = 4;
  int64_t width = 256;    // D
  int64_t heads = 4;      // head size D / heads
  int64_t context = 256;  // longest sequence the model is trained or evaluated on by default
  double dropout = 0.0;   // after the attention and GLU output projections (training only)
  uint64_t seed = 1;      // parameter initialisation and sketches (`train --seed` sets it)
  AttentionConfig attention;  // mechanism, p, r, block, ...; seed/layer are set per layer

  int64_t head_dim() const { return width / heads; }
  int64_t glu_hidden() const { return (8 * width / 3) / 8 * 8; }
  void validate() const;  // throws Error naming the offending value
  int64_t parameter_count() const;  // exactly ModelT::parameter_count(), without building a model
  // Throws Error, naming the sizes, when the parameters (and, for train_tokens > 0, training
  // on that many tokens per micro-batch: gradients, AdamW state, activations) would need more
  // memory than the machine has. An estimate made before allocating anything.
  // extra_bytes: more kept for training (chunked training's block states).
  void check_fits_in_memory(int64_t train_tokens, int64_t extra_bytes = 0) const;
  std::string to_json() const;
  static ModelConfig from_json(const std::string& text, const std::string& where);
};

}  // namespace polysketch
