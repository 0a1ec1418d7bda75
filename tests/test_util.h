// Helpers shared by the data and training tests.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "polysketch/attention.h"

namespace polysketch::test {

// f() must throw polysketch::Error whose message contains `needle`.
inline void expect_error(const std::function<void()>& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one mentioning '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

// Central differences of scalar f() w.r.t. every entry of x (step 1e-6, double precision).
inline std::vector<double> numeric_grad(std::vector<double>& x, const std::function<double()>& f) {
  const double eps = 1e-6;
  std::vector<double> g(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double keep = x[i];
    x[i] = keep + eps;
    const double up = f();
    x[i] = keep - eps;
    const double down = f();
    x[i] = keep;
    g[i] = (up - down) / (2 * eps);
  }
  return g;
}

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
