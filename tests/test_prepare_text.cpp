// `polysketch prepare` for text (data/prepare_text.h): documents and their boundaries, the
// hold-out rules, --val-input, determinism across thread counts, the data directory's format
// versions, and errors that leave nothing written.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "data/dataset.h"
#include "data/prepare_text.h"
#include "data/shards.h"
#include "data/tokenizer.h"
#include "test_util.h"
#include "util/atomic_file.h"

namespace polysketch::test {
namespace {

namespace fs = std::filesystem;

// Document d: `lines` lines, each naming the document ("docD lineL ...").
std::string document(int d, int lines) {
  const auto words = sample_lines(lines);
  std::string text;
  for (int l = 0; l < lines; ++l) text += fmt::format("doc{} line{} {}\n", d, l, words[static_cast<size_t>(l)]);
  return text;
}

void write(const std::string& path, const std::string& text) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream(path) << text;
}

data::TextPrepareOptions options(const std::vector<std::string>& inputs) {
  data::TextPrepareOptions o;
  o.input.inputs = inputs;
  o.vocab_size = 300;
  o.threads = 2;
  return o;
}

// The text of each document of a split: its tokens up to (not including) the end token, decoded.
std::vector<std::string> documents(const data::Dataset& d, bool val) {
  const auto tok = data::Tokenizer::from_bytes(d.tokenizer_bytes, "t");
  const auto& tokens = val ? d.val : d.train;
  const auto& starts = val ? d.val_docs : d.train_docs;
  std::vector<std::string> out;
  for (size_t i = 0; i < starts.size(); ++i) {
    const size_t end = i + 1 < starts.size() ? starts[i + 1] : tokens.size();
    EXPECT_EQ(tokens[end - 1], d.end_of_document);
    for (size_t t = starts[i]; t + 1 < end; ++t) EXPECT_NE(tokens[t], d.end_of_document);
    out.push_back(tok.decode(std::vector<int32_t>(tokens.begin() + static_cast<int64_t>(starts[i]),
                                                  tokens.begin() + static_cast<int64_t>(end) - 1)));
  }
  return out;
}

TEST(PrepareText, HoldsOutWholeDocumentsSpreadEvenly) {
  TempDir dir;
  for (int d = 0; d < 40; ++d) write(dir.file(fmt::format("in/{:02}.txt", d)), document(d, 30));
  const auto r = data::prepare_text(options({dir.file("in")}), dir.file("out"));
  EXPECT_EQ(r.documents, 40);
  EXPECT_EQ(r.val_documents, 2);  // documents 19 and 39 (a fraction 0.05)
  const auto d = data::load_dataset(dir.file("out"));
  ASSERT_TRUE(d.has_documents());
  EXPECT_GE(d.end_of_document, 0);
  const auto val = documents(d, true), train = documents(d, false);
  ASSERT_EQ(val.size(), 2u);
  EXPECT_EQ(val[0].rfind("doc19 line0 ", 0), 0u) << val[0];
  EXPECT_NE(val[0].find("doc19 line29 "), std::string::npos);
  EXPECT_EQ(val[0].find("doc18"), std::string::npos);
  EXPECT_EQ(val[1].rfind("doc39 line0 ", 0), 0u);
  ASSERT_EQ(train.size(), 38u);
  EXPECT_EQ(train[19].rfind("doc20 line0 ", 0), 0u);
  // Lines are encoded one by one: the text comes back with one space between lines.
  std::string expect;
  for (int l = 0; l < 30; ++l) {
    if (l) expect += ' ';
    expect += fmt::format("doc0 line{} {}", l, sample_lines(30)[static_cast<size_t>(l)]);
  }
  EXPECT_EQ(train[0], expect);
  const auto meta = nlohmann::json::parse(util::read_file(dir.file("out/meta.json")));
  EXPECT_EQ(meta.at("format"), data::kTextFormat);
  EXPECT_EQ(meta.at("held_out").size(), 2u);
  EXPECT_NE(meta.at("held_out")[0].get<std::string>().find("19.txt"), std::string::npos);
}

TEST(PrepareText, OneDocumentHoldsOutContiguousSpans) {
  TempDir dir;
  write(dir.file("book.txt"), document(0, 400));  // a 400-line file (~40 KB) works
  auto o = options({dir.file("book.txt")});
  const auto r = data::prepare_text(o, dir.file("out"));
  EXPECT_EQ(r.documents, 1);
  const auto d = data::load_dataset(dir.file("out"));
  const auto val = documents(d, true), train = documents(d, false);
  // One span per 16 KB held out, at most 4: ~2 KB held out -> one span, the last 5% of lines.
  ASSERT_EQ(val.size(), 1u);
  EXPECT_EQ(val[0].rfind("doc0 line380 ", 0), 0u) << val[0].substr(0, 40);
  EXPECT_NE(val[0].find("doc0 line399 "), std::string::npos);
  ASSERT_EQ(train.size(), 1u);
  EXPECT_NE(train[0].find("doc0 line379 "), std::string::npos);
  EXPECT_EQ(train[0].find("doc0 line380 "), std::string::npos);

  // A long document: 4 spans, one at the end of each quarter, together 5%.
  write(dir.file("long.txt"), document(1, 20000));
  const auto r2 = data::prepare_text(options({dir.file("long.txt")}), dir.file("out2"));
  const auto d2 = data::load_dataset(dir.file("out2"));
  EXPECT_EQ(d2.val_docs.size(), 4u);
  EXPECT_EQ(d2.train_docs.size(), 4u);
  const double share = double(r2.val_tokens) / double(r2.val_tokens + r2.train_tokens);
  EXPECT_NEAR(share, 0.05, 0.005);
}

TEST(PrepareText, ValInputAndTokenizerAndDeterminism) {
  TempDir dir;
  for (int d = 0; d < 5; ++d) write(dir.file(fmt::format("in/{}.md", d)), document(d, 40));
  write(dir.file("val/a.txt"), document(100, 20));
  auto o = options({dir.file("in")});
  o.val_input.inputs = {dir.file("val")};
  const auto r = data::prepare_text(o, dir.file("a"));
  EXPECT_EQ(r.train_documents, 5);
  EXPECT_EQ(r.val_documents, 1);
  const auto d = data::load_dataset(dir.file("a"));
  EXPECT_EQ(documents(d, true)[0].rfind("doc100 line0 ", 0), 0u);
  // One thread or two, trained tokenizer or the same one given: the same bytes.
  o.threads = 1;
  data::prepare_text(o, dir.file("b"));
  o.tokenizer = dir.file("a");
  data::prepare_text(o, dir.file("c"));
  for (const char* f : {"train.bin", "val.bin", "train.docs", "val.docs", "tokenizer.model"}) {
    EXPECT_EQ(util::read_file(dir.file(fmt::format("a/{}", f))), util::read_file(dir.file(fmt::format("b/{}", f)))) << f;
    EXPECT_EQ(util::read_file(dir.file(fmt::format("a/{}", f))), util::read_file(dir.file(fmt::format("c/{}", f)))) << f;
  }
}

TEST(PrepareText, ErrorsWriteNothing) {
  TempDir dir;
  for (int d = 0; d < 3; ++d) write(dir.file(fmt::format("in/{}.txt", d)), document(d, 60));
  data::prepare_text(options({dir.file("in")}), dir.file("tok"));
  write(dir.file("one.txt"), "a single line\n");
  auto o = options({dir.file("one.txt")});
  o.tokenizer = dir.file("tok");
  expect_error([&] { data::prepare_text(o, dir.file("out")); }, "no validation text");
  EXPECT_FALSE(fs::exists(dir.file("out/meta.json")));
  EXPECT_FALSE(fs::exists(dir.file("out/train.bin")));
  o = options({dir.file("one.txt")});
  o.val_fraction = 0.7;
  expect_error([&] { data::prepare_text(o, dir.file("out")); }, "--val-fraction");
  o = options({dir.file("missing")});
  expect_error([&] { data::prepare_text(o, dir.file("out")); }, "missing");
  o = options({dir.file("one.txt")});
  o.val_input.inputs = {dir.file("one.txt")};
  o.tokenizer = dir.file("nowhere");
  expect_error([&] { data::prepare_text(o, dir.file("out")); }, "nowhere");
  EXPECT_TRUE(!fs::exists(dir.file("out")) || fs::is_empty(dir.file("out")));
}

TEST(PrepareText, FormatVersions) {
  TempDir dir;
  for (int d = 0; d < 3; ++d) write(dir.file(fmt::format("in/{}.txt", d)), document(d, 60));
  data::prepare_text(options({dir.file("in")}), dir.file("out"));
  auto meta = nlohmann::json::parse(util::read_file(dir.file("out/meta.json")));
  // Format 1 (no "format": made before documents were recorded) loads without boundaries.
  auto old = meta;
  old.erase("format");
  util::write_file_atomic(dir.file("out/meta.json"), old.dump());
  EXPECT_FALSE(data::load_dataset(dir.file("out")).has_documents());
  fs::remove(dir.file("out/meta.json"));
  EXPECT_FALSE(data::load_dataset(dir.file("out")).has_documents());
  // A newer format is refused by name.
  auto newer = meta;
  newer["format"] = 3;
  util::write_file_atomic(dir.file("out/meta.json"), newer.dump());
  expect_error([&] { data::load_dataset(dir.file("out")); }, "data format 3");
  // Document starts that do not belong to the shard are refused.
  util::write_file_atomic(dir.file("out/meta.json"), meta.dump());
  EXPECT_TRUE(data::load_dataset(dir.file("out")).has_documents());
  data::write_document_starts(dir.file("out/val.docs"), {0, 5}, 7);
  expect_error([&] { data::load_dataset(dir.file("out")); }, "do not belong together");
  const auto val_tokens = data::read_shard(dir.file("out/val.bin")).size();
  data::write_document_starts(dir.file("out/val.docs"), {0, val_tokens}, val_tokens);
  expect_error([&] { data::load_dataset(dir.file("out")); }, "strictly increasing");
  fs::remove(dir.file("out/val.docs"));
  expect_error([&] { data::load_dataset(dir.file("out")); }, "val.docs");
}

}  // namespace
}  // namespace polysketch::test
