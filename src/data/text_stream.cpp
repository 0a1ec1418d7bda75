#include "data/text_stream.h"

#include <utility>

#include "data/corpus.h"

namespace polysketch::data {

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
  // A byte that cannot continue the held ones (a prompt's, or unmasked sampling) ends them: they
  // are shown as the tokenizer decodes them; it may start a character of its own.
  if (b >= 0 && !utf8_continues(held_, static_cast<uint8_t>(b), &complete)) held_.clear();
  if (b < 0 || !utf8_continues(held_, static_cast<uint8_t>(b), &complete)) {
    held_.clear();
    return;
  }
  held_.push_back(static_cast<uint8_t>(b));
  if (complete) held_.clear();
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
