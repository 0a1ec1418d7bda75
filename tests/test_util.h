// Helpers shared by the data and training tests.
#pragma once

#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

namespace polysketch::test {

// A fresh directory removed at scope exit.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "polysketch-test-XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data());
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string file(const std::string& name) const { return (std::filesystem::path(path_) / name).string(); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Varied English-like lines for tokenizer training.
inline std::vector<std::string> sample_lines(int n) {
  const char* words[] = {"the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "and",
                         "in", "beginning", "God", "created", "heaven", "earth", "light", "was",
                         "good", "night", "day", "waters", "firmament", "said", "let", "there"};
  std::vector<std::string> lines;
  unsigned x = 12345;
  for (int i = 0; i < n; ++i) {
    std::string line;
    for (int w = 0; w < 12; ++w) {
      x = x * 1103515245u + 12345u;
      if (w) line += ' ';
      line += words[(x >> 16) % 25];
    }
    lines.push_back(line);
  }
  return lines;
}

}  // namespace polysketch::test
