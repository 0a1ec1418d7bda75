// The text of a growing token sequence, streamed so that what is shown is never broken UTF-8.
//
// SentencePiece's byte fallback has one piece per byte (<0x00> .. <0xFF>); a character outside the
// vocabulary is spelled as 2-4 of them. A sequence that ends inside such a character decodes to
// U+FFFD, and so does a byte piece that starts no valid character. So byte pieces that end the
// sequence without completing a character are held back until they do, and allowed() says which
// token may come next: while a character is incomplete only the byte pieces that continue it;
// otherwise every piece except the bytes no valid UTF-8 text starts with (0x80-0xC1, 0xF5-0xFF).
// Shared by `polysketch generate` and the Python module.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/tokenizer.h"

namespace polysketch::data {

class TextStream {
 public:
  // `ids`: the prompt (shown at once, but for an incomplete trailing character).
  TextStream(const Tokenizer& tokenizer, std::vector<int32_t> ids);

  // Appends a token; returns the text that is now shown and was not before (maybe empty).
  std::string push(int32_t id);
  // What has been shown so far.
  const std::string& shown() const { return shown_; }
  // Per token id: 1 if it may come next (a mask for sampling), else 0.
  const std::vector<uint8_t>& allowed() const { return allowed_; }
  // Bytes held back at the end (an incomplete character).
  int held() const { return static_cast<int>(held_.size()); }

 private:
  void advance(int32_t id);  // the byte state after `id`
  void update_allowed();
  std::string emit();

  const Tokenizer& tokenizer_;
  std::vector<int32_t> ids_;
  std::vector<int16_t> byte_of_;   // per id: the byte a byte piece stands for, else -1
  std::vector<uint8_t> held_;      // the incomplete character's bytes so far
  std::vector<uint8_t> allowed_;
  std::string shown_;
};

}  // namespace polysketch::data
