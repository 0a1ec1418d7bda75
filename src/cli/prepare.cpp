// polysketch prepare: text -> sentencepiece tokenizer + train/validation token shards.
#include <fmt/core.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "data/corpus.h"
#include "data/shards.h"
#include "data/tokenizer.h"
#include "polysketch/attention.h"
#include "util/atomic_file.h"
#include "util/check.h"

namespace polysketch::cli {

namespace {
struct PrepareOptions {
  std::vector<std::string> inputs;
  std::string out;
  int vocab_size = 2048;
};

void run(const PrepareOptions& o) {
  util::check_range("--vocab-size", int64_t{o.vocab_size}, 16, int64_t{1} << 20);
  std::string text;
  std::string source;
  if (o.inputs.empty()) {
    text = data::kjv_text();
    source = "King James Bible (Debian bible-kjv)";
  } else {
    for (const auto& path : o.inputs) {
      text += data::read_text_file(path);
      text += "\n";
    }
    source = fmt::format("{} file(s)", o.inputs.size());
  }
  const auto split = data::split_lines(text);
  if (split.train.size() < 10 || split.val.empty())
    throw Error(fmt::format("input too small: {} training and {} validation lines (need at least "
                            "10 and 1; the split puts every 20th block of 50 lines aside)",
                            split.train.size(), split.val.size()));
  fmt::print("corpus: {} ({:.1f} MB), {} train / {} validation lines\n", source,
             text.size() / 1e6, split.train.size(), split.val.size());
  fmt::print("training the tokenizer ({} pieces)...\n", o.vocab_size);
  const auto model = data::Tokenizer::train(split.train, o.vocab_size);
  const auto tok = data::Tokenizer::from_bytes(model, "tokenizer");
  auto encode = [&](const std::vector<std::string>& lines) {
    std::vector<int32_t> ids;
    for (const auto& l : lines) {
      const auto e = tok.encode(l);
      ids.insert(ids.end(), e.begin(), e.end());
    }
    return ids;
  };
  const auto train = encode(split.train), val = encode(split.val);
  std::filesystem::create_directories(o.out);
  const auto dir = std::filesystem::path(o.out);
  util::write_file_atomic((dir / "tokenizer.model").string(), model);
  data::write_shard((dir / "train.bin").string(), tok.vocab_size(), train);
  data::write_shard((dir / "val.bin").string(), tok.vocab_size(), val);
  const nlohmann::json meta{{"source", source}, {"vocab_size", tok.vocab_size()},
                            {"train_tokens", train.size()}, {"val_tokens", val.size()}};
  util::write_file_atomic((dir / "meta.json").string(), meta.dump(2) + "\n");
  fmt::print("wrote {}: {} train tokens, {} validation tokens, vocab {}\n", o.out, train.size(),
             val.size(), tok.vocab_size());
}
}  // namespace

void add_prepare(CLI::App& app) {
  auto o = std::make_shared<PrepareOptions>();
  auto* cmd = app.add_subcommand("prepare", "Train a sentencepiece tokenizer on UTF-8 text and "
                                            "write train/validation token shards");
  cmd->add_option("--input", o->inputs, "UTF-8 text files (default: the King James Bible)");
  cmd->add_option("--out", o->out, "output directory")->required();
  cmd->add_option("--vocab-size", o->vocab_size, "tokenizer vocabulary size")->capture_default_str();
  cmd->callback([o] { run(*o); });
}

}  // namespace polysketch::cli
