// A data directory made by `polysketch prepare`: running text or a synthetic task's examples.
// One owner for the layout.
//  - Text, format 2 (meta.json "format": 2; data/prepare_text.h writes it): train.bin, val.bin
//    (documents one after another, each ended by the tokenizer's end-of-document token),
//    train.docs, val.docs (where each document starts, data/shards.h), tokenizer.model.
//  - Text, format 1 (no "format"): train.bin, val.bin, tokenizer.model; no document boundaries
//    (each split loads as one document).
//  - A synthetic task: train.bin, val.bin, train.scored.bin, val.scored.bin, meta.json with
//    "task" and "example_tokens".
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/synthetic.h"

namespace polysketch::data {

inline constexpr int kTextFormat = 2;  // the newest text layout this code reads and writes

struct Dataset {
  std::string dir;
  int64_t vocab = 0;
  std::string tokenizer_bytes;  // running text only
  std::string task;             // synthetic: the task's name; empty for running text
  int64_t example_tokens = 0;   // synthetic: tokens per example (the context + 1); 0: running text
  std::vector<int32_t> train, val;
  std::vector<uint8_t> train_scored, val_scored;  // synthetic: 1 where a token is an answer
  // Text of format 2: where each document starts in train / val (token offsets, the first 0);
  // empty when no boundaries are recorded.
  std::vector<uint64_t> train_docs, val_docs;
  int32_t end_of_document = -1;  // the token ending each document; -1: none

  bool synthetic() const { return example_tokens > 0; }
  bool has_documents() const { return !train_docs.empty() || !val_docs.empty(); }
};

// Reads and checks every file (sizes, vocabularies, the example layout); throws Error naming the
// file and the problem.
Dataset load_dataset(const std::string& dir);

// Writes a synthetic task's data directory (atomically, file by file).
void write_task_dataset(const std::string& dir, const TaskOptions& options, int64_t train_examples,
                        int64_t val_examples, uint64_t seed);

}  // namespace polysketch::data
