// A data directory made by `polysketch prepare`: running text (train.bin, val.bin,
// tokenizer.model) or a synthetic task's examples (train.bin, val.bin, train.scored.bin,
// val.scored.bin, meta.json with "task" and "example_tokens"). One owner for the layout.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/synthetic.h"

namespace polysketch::data {

struct Dataset {
  std::string dir;
  int64_t vocab = 0;
  std::string tokenizer_bytes;  // running text only
  std::string task;             // synthetic: the task's name; empty for running text
  int64_t example_tokens = 0;   // synthetic: tokens per example (the context + 1); 0: running text
  std::vector<int32_t> train, val;
  std::vector<uint8_t> train_scored, val_scored;  // synthetic: 1 where a token is an answer

  bool synthetic() const { return example_tokens > 0; }
};

// Reads and checks every file (sizes, vocabularies, the example layout); throws Error naming the
// file and the problem.
Dataset load_dataset(const std::string& dir);

// Writes a synthetic task's data directory (atomically, file by file).
void write_task_dataset(const std::string& dir, const TaskOptions& options, int64_t train_examples,
                        int64_t val_examples, uint64_t seed);

}  // namespace polysketch::data
