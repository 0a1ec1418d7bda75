// Training and evaluation windows cut from a split of a Dataset: running text as windows of
// context + 1 tokens at any start, a synthetic task as its whole examples.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/dataset.h"

namespace polysketch::data {

// Throws Error unless `context` suits the data (a synthetic task fixes it; text needs context+1
// tokens in each split, or in the validation split only with val_only).
void check_context(const Dataset& data, int64_t context, bool val_only = false);

// Windows (or examples) of `tokens` that fit: the range window starts are drawn from or spread over.
uint64_t start_count(const std::vector<int32_t>& tokens, int64_t example_tokens, int64_t context);

// Fills x (inputs) and y (targets) with starts.size() sequences of `context` tokens: running
// text as windows starting at starts[i]; a synthetic task's examples (whole, index starts[i])
// with y = kIgnoreTarget where the token is not an answer.
// With `documents`, also each window's document ids [starts.size() x context]: 0 for the
// document the window starts in, one more at each document start inside it (`doc_starts`: where
// the split's documents start, Dataset::train_docs / val_docs).
void fill_batch(const std::vector<int32_t>& tokens, const std::vector<uint8_t>& scored,
                int64_t example_tokens, int64_t context, const std::vector<uint64_t>& starts,
                std::vector<int32_t>& x, std::vector<int32_t>& y,
                const std::vector<uint64_t>* doc_starts = nullptr, std::vector<int32_t>* documents = nullptr);

// Whether windows of `data` get document masking: "auto" (when the data records document
// boundaries), "on" (Error without them) or "off" (Error for other values); `flag` names the
// setting in messages.
bool document_mask(const Dataset& data, const std::string& setting, const std::string& flag);

}  // namespace polysketch::data
