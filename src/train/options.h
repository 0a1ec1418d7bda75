// The options of a training run (`polysketch train` flags), their validation, and their form in
// a checkpoint's state.json (what a resume continues with).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "polysketch/model.h"

namespace polysketch::train {

// Field names follow the `polysketch train` flags; error messages name the flags.
struct TrainOptions {
  std::string data_dir, out_dir, resume;
  // Fine-tuning: start from this checkpoint's (or run's latest) weights with a new optimizer,
  // schedule and data; its model is used (`model` is ignored) but for the context, which
  // init_context > 0 replaces. Exclusive with resume.
  std::string init;
  int64_t init_context = 0;
  ModelConfig model;  // vocab is taken from the data; ignored when resuming
  int64_t batch = 8, accum = 1, warmup = 50;
  int64_t steps = 0;  // 0: 1000 for a new run, the original run's when resuming
  double lr = 1e-3, min_lr_ratio = 0.1, clip = 1.0, weight_decay = 0.1;
  int64_t eval_every = 100, eval_batches = 16, checkpoint_every = 250;
  int64_t keep = 2;  // checkpoints kept (0: all); the one `latest` names is never removed
  // Ranks per sequence (mpirun): each holds a contiguous chunk of whole blocks of every sequence
  // (sketch mechanisms). A layout of this run, not saved: a resume may choose another.
  int64_t context_parallel = 1;
  double time_budget_s = 0;  // stop early (and save) after this much training time; 0: none
  uint64_t seed = 1;
  // "f32" or "bf16" (matrix-product inputs; kernels/gemm.h). Saved with the run: a resume uses
  // the run's own, which keeps it bit-exact.
  std::string precision = "f32";
  bool progress = true;
  // Tokens attend only within their document: "auto" (when the data records document
  // boundaries), "on" or "off". Saved with the run.
  std::string document_mask = "auto";
  // Tokens per chunk (train/chunked.h): each sequence forward and backward a chunk at a time, so
  // activation memory is one chunk's whatever the context; 0: whole sequences. A layout of this
  // run, not saved: a resume may choose another (the arithmetic differs only in summation order).
  int64_t chunk = 0;
};

// Throws Error naming the flag of the first invalid value.
void validate_options(const TrainOptions& options);

// The options a checkpoint records, and reading them back into o (the data directory only when
// o has none); throws Error naming `where` and the field.
nlohmann::json options_json(const TrainOptions& o);
void options_from_json(const nlohmann::json& j, TrainOptions& o, const std::string& where);

}  // namespace polysketch::train
