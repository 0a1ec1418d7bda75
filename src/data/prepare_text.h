// `polysketch prepare` for text: documents in (data/documents.h), a data directory out
// (data/dataset.h, format 2): tokenizer.model, train.bin / val.bin with every document followed
// by the end-of-document token, train.docs / val.docs (where each document starts), meta.json
// (what was read, what was held out). Streams: memory holds one batch of documents, whatever the
// corpus size; tokenizes on all threads; deterministic.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/documents.h"

namespace polysketch::data {

struct TextPrepareOptions {
  DocumentSource input;      // no inputs: the King James Bible (Debian's bible-kjv), one document
  DocumentSource val_input;  // inputs given: these are the validation documents, all of `input` trains
  // Otherwise this fraction of the documents is held out, whole and spread evenly (document i when
  // floor((i+1) f) > floor(i f)); a corpus of fewer than 1/f documents instead holds out f of each
  // document's lines as up to 4 contiguous spans (one per quarter).
  double val_fraction = 0.05;
  std::string tokenizer;        // an existing sentencepiece model (Tokenizer::from_source); empty: train one
  int64_t vocab_size = 2048;    // of a trained tokenizer
  double tokenizer_sample_mb = 64;  // a trained tokenizer reads at most about this much training text
  int threads = 0;              // 0: all cores
  bool progress = false;        // a progress line on stderr (MB/s, ETA)
};

struct TextPrepareReport {
  std::string source;  // what was read, in words
  int64_t documents = 0, train_documents = 0, val_documents = 0;
  uint64_t text_bytes = 0, train_tokens = 0, val_tokens = 0;
  int64_t vocab = 0;
  double tokenize_seconds = 0;  // the tokenizing pass alone (reading, encoding, writing)
};

// Validates the options, reads the corpus, writes `out_dir` (each file atomically, meta.json
// last). Throws Error naming the flag, file or line at fault; on error nothing is left half-written.
TextPrepareReport prepare_text(const TextPrepareOptions& options, const std::string& out_dir);

}  // namespace polysketch::data
