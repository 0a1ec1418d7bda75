// The training loop: AdamW, warmup + cosine decay, clipping, gradient accumulation, periodic
// validation, progress, metrics as JSON lines, checkpoints, bit-exact resume, Ctrl-C save.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "train/options.h"

namespace polysketch::train {

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

// Trains into options.out_dir, which it locks (one trainer per directory). A new run refuses a
// directory that already holds checkpoints; resuming into the checkpoint's own directory
// continues it. SIGINT, SIGTERM and SIGHUP stop training after the current step and save, in a
// program that called watch_stop_signals() first (train/stop_signals.h; the CLI does).
// A diverged step (non-finite loss or gradient) throws Error; nothing non-finite is saved.
TrainResult run_training(const TrainOptions& options);

}  // namespace polysketch::train
