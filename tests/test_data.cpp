// Tokenizer, token shards and corpus handling: round trips and every corrupt-file class.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "data/corpus.h"
#include "data/shards.h"
#include "data/tokenizer.h"
#include "polysketch/attention.h"
#include "test_util.h"
#include "util/atomic_file.h"

namespace polysketch::test {
namespace {

namespace fs = std::filesystem;

TEST(Tokenizer, TrainsAndRoundTrips) {
  const auto lines = sample_lines(400);
  const auto model = data::Tokenizer::train(lines, 300);
  const auto tok = data::Tokenizer::from_bytes(model, "t");
  EXPECT_EQ(tok.vocab_size(), 300);
  for (const std::string text : {"the quick brown fox", "In the beginning", "unseen: Ωμέγα 😀"}) {
    const auto ids = tok.encode(text);
    EXPECT_FALSE(ids.empty());
    EXPECT_EQ(tok.decode(ids), text);
  }
  EXPECT_THROW(data::Tokenizer::from_bytes("not a model", "bad.model"), Error);
}

TEST(Shards, RoundTripBothWidths) {
  TempDir dir;
  for (int64_t vocab : {300, 100000}) {
    const std::vector<int32_t> tokens{0, 5, static_cast<int32_t>(vocab - 1), 7};
    const auto path = dir.file("s.bin");
    data::write_shard(path, vocab, tokens);
    int64_t v = 0;
    EXPECT_EQ(data::read_shard(path, vocab, &v), tokens);
    EXPECT_EQ(v, vocab);
  }
}

TEST(Shards, RejectsCorruptFiles) {
  TempDir dir;
  const auto path = dir.file("s.bin");
  data::write_shard(path, 300, {1, 2, 3, 4});
  const std::string good = util::read_file(path);
  auto with = [&](std::string bytes) {
    util::write_file_atomic(path, bytes);
    return [path] { data::read_shard(path, 300); };
  };
  std::string bad = good;
  bad[0] = 'X';
  expect_error(with(bad), "wrong magic");
  expect_error(with(good.substr(0, good.size() - 1)), "size mismatch");
  expect_error(with(good.substr(0, 10)), "truncated");
  bad = good;
  bad[8] = 9;
  expect_error(with(bad), "version");
  bad = good;
  bad[32] = static_cast<char>(0xff);
  bad[33] = static_cast<char>(0xff);
  expect_error(with(bad), "outside the vocabulary");
  util::write_file_atomic(path, good);
  expect_error([&] { data::read_shard(path, 512); }, "does not match");
  expect_error([&] { data::read_shard(dir.file("missing.bin")); }, "missing.bin");
  expect_error([&] { data::write_shard(path, 10, {11}); }, "outside vocabulary");
}

}  // namespace
}  // namespace polysketch::test
