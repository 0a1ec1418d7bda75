// The tiny training run the training tests share: 2 layers, width 32, quiet, no intermediate
// evaluations or checkpoints. Tests change what they need.
#pragma once

#include <string>

#include "train/trainer.h"

namespace polysketch::test {

inline train::TrainOptions tiny_options(const std::string& data, const std::string& out) {
  train::TrainOptions o;
  o.data_dir = data;
  o.out_dir = out;
  o.model.layers = 2;
  o.model.width = 32;
  o.model.heads = 2;
  o.model.context = 32;
  o.model.attention.mechanism = Mechanism::polysketch_learned_local;
  o.model.attention.r = 8;
  o.model.attention.block = 8;
  o.batch = 4;
  o.steps = 150;
  o.warmup = 10;
  o.lr = 3e-3;
  o.eval_every = 0;
  o.eval_batches = 2;
  o.checkpoint_every = 0;
  o.progress = false;
  return o;
}

}  // namespace polysketch::test
