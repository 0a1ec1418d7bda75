// Evaluation of a model on a Dataset's validation split (`polysketch eval`, and the trainer's
// periodic validation).
#pragma once

#include <cstdint>
#include <vector>

#include "data/dataset.h"
#include "polysketch/model.h"

namespace polysketch::eval {

// Positions [begin, end) of the windows: their mean loss and how many tokens it averages.
struct PositionBucket {
  int64_t begin, end;
  double loss = 0;
  int64_t scored = 0;
};

struct EvalResult {
  double loss = 0;      // mean cross-entropy (nats) over the scored tokens
  double accuracy = 0;  // fraction of scored tokens that are the model's top prediction
  int64_t scored = 0;
  // With by_position: the loss in buckets of positions [0, 64), [64, 256), [256, 1024), ... (each
  // 4x the last), the last one ending at the context.
  std::vector<PositionBucket> by_position;
};

// batch * batches windows of context+1 tokens evenly spaced over the running text, or as many
// whole examples of a synthetic task (scored on their answers only). With `documents` (data with
// document boundaries), tokens attend only within their document, and by_position counts
// positions from each token's document start. With `chunk` (sketch mechanisms, whole blocks;
// with or without documents), each window is scored a chunk at a time with the block states
// passed from chunk to chunk: the same result up to summation order, in memory independent of
// the context.
EvalResult evaluate(const Model& model, const data::Dataset& data, int64_t context, int64_t batch,
                    int64_t batches, bool by_position = false, bool documents = false, int64_t chunk = 0);

// Sketch mechanisms: per layer, Model::sketch_error averaged over the batches evaluate() uses.
std::vector<double> sketch_error(const Model& model, const data::Dataset& data, int64_t context,
                                 int64_t batch, int64_t batches);

// Cross-entropy (nats/token) of the validation tokens under the add-one-smoothed unigram model of
// the training tokens (a synthetic task: its answers only).
double unigram_loss(const data::Dataset& data);

}  // namespace polysketch::eval
