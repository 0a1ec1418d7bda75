#include "data/text_stream.h"

#include <utility>

namespace polysketch::data {

namespace {
// The length of the character a lead byte starts (0: not a lead byte of valid UTF-8).
int utf8_length(uint8_t lead) {
  if (lead < 0x80) return 1;
  if (lead >= 0xC2 && lead <= 0xDF) return 2;
  if (lead >= 0xE0 && lead <= 0xEF) return 3;
  if (lead >= 0xF0 && lead <= 0xF4) return 4;
  return 0;
}
}  // namespace

bool utf8_continues(const std::vector<uint8_t>& prefix, uint8_t next, bool* complete) {
  int length = 0;
  if (prefix.empty()) {
    length = utf8_length(next);
    if (length == 0) return false;
  } else {
    length = utf8_length(prefix[0]);
    uint8_t lo = 0x80, hi = 0xBF;
    if (prefix.size() == 1) {  // the second byte: no overlong forms, surrogates or > U+10FFFF
      if (prefix[0] == 0xE0) lo = 0xA0;
      if (prefix[0] == 0xED) hi = 0x9F;
      if (prefix[0] == 0xF0) lo = 0x90;
      if (prefix[0] == 0xF4) hi = 0x8F;
    }
    if (next < lo || next > hi) return false;
  }
  *complete = static_cast<int>(prefix.size()) + 1 == length;
  return true;
}

TextStream::TextStream(const Tokenizer& tokenizer, std::vector<int32_t> ids)
    : tokenizer_(tokenizer), ids_(std::move(ids)), byte_of_(tokenizer.byte_pieces()) {
  allowed_.assign(byte_of_.size(), 1);
  for (int32_t id : ids_) advance(id);
  update_allowed();
  emit();
}

void TextStream::advance(int32_t id) {
  const int b = id >= 0 && static_cast<size_t>(id) < byte_of_.size() ? byte_of_[id] : -1;
  bool complete = false;
  if (b >= 0 && !utf8_continues(held_, static_cast<uint8_t>(b), &complete)) held_.clear();
  // A byte that cannot continue the held ones (a prompt's, or unmasked sampling) ends them: they
  // are shown as the tokenizer decodes them; it may start a character of its own.
  if (b >= 0 && utf8_continues(held_, static_cast<uint8_t>(b), &complete)) {
    held_.push_back(static_cast<uint8_t>(b));
    if (complete) held_.clear();
  } else {
    held_.clear();
  }
}

void TextStream::update_allowed() {
  for (size_t id = 0; id < byte_of_.size(); ++id) {
    bool complete = false;
    allowed_[id] = byte_of_[id] >= 0 ? utf8_continues(held_, static_cast<uint8_t>(byte_of_[id]), &complete)
                                     : held_.empty();
  }
}

std::string TextStream::emit() {
  const std::vector<int32_t> ready(ids_.begin(), ids_.end() - static_cast<std::ptrdiff_t>(held_.size()));
  const std::string text = tokenizer_.decode(ready);  // whole: pieces may merge across tokens
  if (text.size() <= shown_.size() || text.compare(0, shown_.size(), shown_) != 0) return {};
  std::string fresh = text.substr(shown_.size());
  shown_ = text;
  return fresh;
}

std::string TextStream::push(int32_t id) {
  ids_.push_back(id);
  const size_t held_before = held_.size();
  advance(id);
  update_allowed();
  if (!held_.empty() && held_.size() == held_before + 1) return {};  // still incomplete
  return emit();
}

}  // namespace polysketch::data
