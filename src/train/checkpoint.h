// Checkpoints: a directory per save, ROOT/step-NNNNNNNN/ with model.safetensors, optimizer.safetensors
// (AdamW m and v), config.json, tokenizer.model and state.json (step, seeds, training options).
// Each is written to a temporary directory and renamed into place, then ROOT/latest (a symlink)
// is switched atomically: a kill at any moment leaves the previous checkpoint intact.
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "model/checkpoint.h"
#include "model/safetensors.h"
#include "polysketch/model.h"
#include "train/adamw.h"

namespace polysketch::train {

// Returns the directory written. Refuses (Error) weights holding NaN or Inf. Re-saving an
// existing step swaps the new directory in atomically (renameat2 RENAME_EXCHANGE).
std::string save_checkpoint(const std::string& root, int64_t step, const Model& model,
                            AdamW* optimizer, const std::string& tokenizer_bytes,
                            const nlohmann::json& state);

// ROOT's step-N directories, (N, path) in increasing N.
std::vector<std::pair<int64_t, std::string>> list_checkpoints(const std::string& root);
// Removes the oldest step-N directories until `keep` remain; never the one ROOT/latest names.
void prune_checkpoints(const std::string& root, int64_t keep);

// A checkpoint read for resuming: model::Checkpoint plus AdamW's m and v (and a checked
// adam_steps == step) when with_optimizer.
struct LoadedCheckpoint : model::Checkpoint {
  std::map<std::string, model::Tensor> optimizer;
};
LoadedCheckpoint load_checkpoint(const std::string& path, bool with_optimizer);

void load_optimizer(AdamW& opt, Model& model, const std::map<std::string, model::Tensor>& state,
                    const std::string& where);

}  // namespace polysketch::train
