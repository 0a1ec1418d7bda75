#include "data/corpus.h"

#include <fmt/format.h>

#include <cstdint>
#include <cstdio>
#include <sstream>

#include "polysketch/error.h"
#include "util/atomic_file.h"

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

void check_utf8(const std::string& s, const std::string& where) {
  std::vector<uint8_t> held;  // the current character's bytes
  size_t start = 0;           // its offset
  for (size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<uint8_t>(s[i]);
    if (c == 0) throw Error(fmt::format("{}: binary data (NUL byte at offset {}), expected UTF-8 text", where, i));
    if (held.empty()) start = i;
    bool complete = false;
    if (!utf8_continues(held, c, &complete))
      throw Error(fmt::format("{}: invalid UTF-8 at byte offset {}", where, start));
    held.push_back(c);
    if (complete) held.clear();
  }
  if (!held.empty()) throw Error(fmt::format("{}: invalid UTF-8 at byte offset {}", where, start));
}

std::string kjv_text() {
  FILE* pipe = ::popen("bible 'Gen1:1-Rev22:21' 2>/dev/null", "r");
  if (!pipe) throw Error("cannot run `bible` (install Debian's bible-kjv package)");
  std::string text;
  char buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, pipe)) > 0) text.append(buf, n);
  const int status = ::pclose(pipe);
  if (status != 0 || text.size() < 1000)
    throw Error("the default corpus needs the `bible` command of Debian's bible-kjv package "
                "(apt-get install bible-kjv), or pass --input FILE");
  return text;
}

std::vector<std::string> text_lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") != std::string::npos) lines.push_back(std::move(line));
  }
  return lines;
}

}  // namespace polysketch::data
