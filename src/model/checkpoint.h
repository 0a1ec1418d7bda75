// Reading a checkpoint directory: what eval, generate and resume share. A checkpoint is
// ROOT/step-N/{model.safetensors, config.json, tokenizer.model, state.json, ...}; ROOT/latest
// names the newest. Writing it, and the optimizer's state, belong to the trainer
// (train/checkpoint.h).
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "model/safetensors.h"
#include "polysketch/model.h"

namespace polysketch::model {

// "step-00000042" -> 42; -1 for any other name.
int64_t checkpoint_step_of(const std::string& dir_name);

struct Checkpoint {
  std::string dir;  // the step-N directory read
  ModelConfig config;
  std::string tokenizer_bytes;
  nlohmann::json state;  // state.json; `step` checked (a non-negative integer matching the name)
  std::map<std::string, Tensor> weights;
};

// `path` is a step-N directory or a run directory holding `latest`. Validates every file it
// reads (Error naming the file and the problem).
Checkpoint read_checkpoint(const std::string& path);
// The run directory `path` names: itself, or the run holding it when it is a step-N directory.
std::string run_directory(const std::string& path);

// Copies weights into the model checking names, shapes and finiteness; Error names the tensor.
void load_weights(Model& model, const std::map<std::string, Tensor>& weights, const std::string& where);

// Copies tensor `key` into dst, checked against p's shape and for NaN/Inf.
void copy_tensor(const Param<float>& p, const std::map<std::string, Tensor>& tensors,
                 const std::string& key, std::vector<float>& dst, const std::string& where);

}  // namespace polysketch::model
