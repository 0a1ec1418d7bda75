#include "data/corpus.h"

#include <fmt/format.h>

#include <cstdio>
#include <sstream>

#include "polysketch/error.h"
#include "util/atomic_file.h"

namespace polysketch::data {

void check_utf8(const std::string& s, const std::string& where) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c == 0) throw Error(fmt::format("{}: binary data (NUL byte at offset {}), expected UTF-8 text", where, i));
    size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
    if (len == 0 || i + len > s.size())
      throw Error(fmt::format("{}: invalid UTF-8 at byte offset {}", where, i));
    for (size_t k = 1; k < len; ++k)
      if ((static_cast<unsigned char>(s[i + k]) >> 6) != 0x2)
        throw Error(fmt::format("{}: invalid UTF-8 at byte offset {}", where, i));
    i += len;
  }
}

std::string read_text_file(const std::string& path) {
  std::string text = util::read_file(path);
  check_utf8(text, path);
  if (text.find_first_not_of(" \t\r\n") == std::string::npos)
    throw Error(fmt::format("{}: empty input (no text)", path));
  return text;
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

Split split_lines(const std::string& text) {
  Split s;
  std::istringstream in(text);
  std::string line;
  int64_t index = 0;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    ((index / 50) % 20 == 19 ? s.val : s.train).push_back(line);
    ++index;
  }
  return s;
}

}  // namespace polysketch::data
