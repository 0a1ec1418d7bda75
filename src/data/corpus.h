// Raw text in (data/documents.h reads the inputs): UTF-8 validation, the default corpus (King James Bible from Debian's bible-kjv),
// and the text's lines.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace polysketch::data {

// Throws Error naming `where` for binary data (NUL bytes) or invalid UTF-8 (with the byte offset).
void check_utf8(const std::string& text, const std::string& where);
// The UTF-8 rules, one byte at a time (check_utf8 and data::TextStream use them): for `prefix` (a
// valid, incomplete character, or empty), whether `next` keeps it valid (no overlong forms,
// surrogates or code points past U+10FFFF), and if so whether the character is then complete.
bool utf8_continues(const std::vector<uint8_t>& prefix, uint8_t next, bool* complete);

// The whole King James Bible, printed by the `bible` command of Debian's bible-kjv package.
std::string kjv_text();

// The non-empty lines of `text`, in order.
std::vector<std::string> text_lines(const std::string& text);

}  // namespace polysketch::data
