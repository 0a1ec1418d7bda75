#include "data/windows.h"

#include <fmt/format.h>

#include <algorithm>

#include "polysketch/model.h"

namespace polysketch::data {

void check_context(const Dataset& data, int64_t context, bool val_only) {
  if (data.synthetic() && context != data.example_tokens - 1)
    throw Error(fmt::format("{} holds {} examples of {} tokens: --context must be {}, not {}",
                            data.dir, data.task, data.example_tokens, data.example_tokens - 1, context));
  for (const auto* split : {&data.train, &data.val})
    if ((!val_only || split == &data.val) && static_cast<int64_t>(split->size()) < context + 1)
      throw Error(fmt::format("{}: {} has {} tokens, fewer than context+1 = {}", data.dir,
                              split == &data.val ? "the validation text" : "the training split",
                              split->size(), context + 1));
}

bool document_mask(const Dataset& data, const std::string& setting, const std::string& flag) {
  if (setting == "off") return false;
  if (setting == "auto") return data.has_documents();
  if (setting != "on") throw Error(fmt::format("{} must be auto, on or off, got '{}'", flag, setting));
  if (!data.has_documents())
    throw Error(fmt::format("{} on: {} records no document boundaries ({}); prepare it again with "
                            "this polysketch, or {} off", flag, data.dir,
                            data.synthetic() ? "a synthetic task" : "made before they were recorded", flag));
  return true;
}

uint64_t start_count(const std::vector<int32_t>& tokens, int64_t example_tokens, int64_t context) {
  return example_tokens > 0 ? tokens.size() / static_cast<uint64_t>(example_tokens)
                            : tokens.size() - static_cast<uint64_t>(context);
}

void fill_batch(const std::vector<int32_t>& tokens, const std::vector<uint8_t>& scored,
                int64_t example_tokens, int64_t context, const std::vector<uint64_t>& starts,
                std::vector<int32_t>& x, std::vector<int32_t>& y,
                const std::vector<uint64_t>* doc_starts, std::vector<int32_t>* documents) {
  x.resize(starts.size() * static_cast<size_t>(context));
  y.resize(x.size());
  if (documents) {
    documents->resize(x.size());
    for (size_t b = 0; b < starts.size(); ++b) {
      auto next = std::upper_bound(doc_starts->begin(), doc_starts->end(), starts[b]);
      int32_t id = 0;
      for (int64_t t = 0; t < context; ++t) {
        if (next != doc_starts->end() && *next == starts[b] + static_cast<uint64_t>(t)) {
          ++id;
          ++next;
        }
        (*documents)[b * context + t] = id;
      }
    }
  }
  for (size_t b = 0; b < starts.size(); ++b) {
    const uint64_t start = example_tokens > 0 ? starts[b] * static_cast<uint64_t>(example_tokens) : starts[b];
    for (int64_t t = 0; t < context; ++t) {
      x[b * context + t] = tokens[start + t];
      y[b * context + t] = example_tokens > 0 && !scored[start + t + 1] ? kIgnoreTarget
                                                                         : tokens[start + t + 1];
    }
  }
}

}  // namespace polysketch::data
