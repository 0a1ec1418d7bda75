// The training loop: AdamW, warmup + cosine decay, clipping, gradient accumulation, periodic
// validation, progress, metrics as JSON lines, checkpoints, bit-exact resume, Ctrl-C save.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "polysketch/model.h"

namespace polysketch::train {

// Field names follow the `polysketch train` flags; error messages name the flags.
struct TrainOptions {
  std::string data_dir, out_dir, resume;
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
};

struct TrainResult {
  int64_t step = 0;
  double train_loss = 0, val_loss = 0, val_accuracy = 0, unigram_loss = 0;
  std::vector<double> losses;  // training loss of every step run in this call
  std::string checkpoint;
  bool interrupted = false;
  // False on ranks other than 0 (mpirun): they neither save nor validate, so the fields above
  // past `step`, `train_loss` and `losses` are not theirs to report.
  bool reported = true;
};

// Throws Error naming the flag of the first invalid value.
void validate_options(const TrainOptions& options);

// Trains into options.out_dir, which it locks (one trainer per directory). A new run refuses a
// directory that already holds checkpoints; resuming into the checkpoint's own directory
// continues it. SIGINT, SIGTERM and SIGHUP stop training after the current step and save, in a
// program that called watch_stop_signals() first (train/stop_signals.h; the CLI does).
// A diverged step (non-finite loss or gradient) throws Error; nothing non-finite is saved.
TrainResult run_training(const TrainOptions& options);

struct EvalResult {
  double loss = 0;      // mean cross-entropy (nats) over the scored tokens
  double accuracy = 0;  // fraction of scored tokens that are the model's top prediction
  int64_t scored = 0;
};

// On the validation split: batch * batches windows of context+1 tokens evenly spaced over running
// text, or as many whole examples of a synthetic task (scored on their answers only).
EvalResult evaluate(const Model& model, const data::Dataset& data, int64_t context, int64_t batch,
                    int64_t batches);

// Sketch mechanisms: per layer, Model::sketch_error averaged over the batches evaluate() uses.
std::vector<double> sketch_error(const Model& model, const data::Dataset& data, int64_t context,
                                 int64_t batch, int64_t batches);

// Throws Error unless `context` suits the data (a synthetic task fixes it; text needs context+1 tokens).
void check_context(const data::Dataset& data, int64_t context);

// Cross-entropy (nats/token) of the validation tokens under the add-one-smoothed unigram model of
// the training tokens (a synthetic task: its answers only).
double unigram_loss(const data::Dataset& data);

}  // namespace polysketch::train
