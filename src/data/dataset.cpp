#include "data/dataset.h"

#include <fmt/core.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "data/shards.h"
#include "data/tokenizer.h"
#include "polysketch/error.h"
#include "util/atomic_file.h"

namespace polysketch::data {

namespace fs = std::filesystem;

namespace {
std::string path_in(const std::string& dir, const char* name) { return (fs::path(dir) / name).string(); }

// The scored-position mask of a split: a shard of 0/1 values, one per token.
std::vector<uint8_t> read_scored(const std::string& path, const std::vector<int32_t>& tokens,
                                 int64_t example_tokens) {
  const auto mask = read_shard(path, 2);
  if (mask.size() != tokens.size())
    throw Error(fmt::format("{}: {} entries for {} tokens", path, mask.size(), tokens.size()));
  std::vector<uint8_t> scored(mask.begin(), mask.end());
  for (size_t e = 0; e < scored.size(); e += static_cast<size_t>(example_tokens)) {
    int64_t answers = 0;
    for (int64_t t = 1; t < example_tokens; ++t) answers += scored[e + t];
    if (answers == 0 || scored[e])
      throw Error(fmt::format("{}: example {} has {} (the first token of an example cannot be "
                              "one, and every example needs one)",
                              path, e / example_tokens,
                              scored[e] ? "its first token scored" : "no scored token"));
  }
  return scored;
}
}  // namespace

Dataset load_dataset(const std::string& dir) {
  Dataset d;
  d.dir = dir;
  if (!fs::is_directory(dir))
    throw Error(fmt::format("{} is not a directory (make one with `polysketch prepare --out {}`)", dir, dir));
  const auto meta_path = path_in(dir, "meta.json");
  nlohmann::json meta;
  if (fs::exists(meta_path)) {
    meta = nlohmann::json::parse(util::read_file(meta_path), nullptr, false);
    if (meta.is_discarded() || !meta.is_object()) throw Error(fmt::format("{}: not a JSON object", meta_path));
  }
  const auto train_path = path_in(dir, "train.bin");
  d.train = read_shard(train_path, -1, &d.vocab);
  d.val = read_shard(path_in(dir, "val.bin"), d.vocab);
  if (!meta.contains("task")) {
    const auto tok_path = path_in(dir, "tokenizer.model");
    const auto tok = Tokenizer::from_file(tok_path);
    if (d.vocab != tok.vocab_size())
      throw Error(fmt::format("{}: vocab {} does not match the tokenizer's {} ({})", train_path,
                              d.vocab, tok.vocab_size(), tok_path));
    d.tokenizer_bytes = tok.model_bytes();
    if (!meta.contains("format")) return d;  // format 1: no document boundaries
    if (!meta.at("format").is_number_integer() || meta.at("format").get<int64_t>() < 1 ||
        meta.at("format").get<int64_t>() > kTextFormat)
      throw Error(fmt::format("{}: data format {} is not one this polysketch reads (1 to {}; "
                              "prepare it again, or use a newer polysketch)",
                              meta_path, meta.at("format").dump(), kTextFormat));
    if (meta.at("format").get<int64_t>() == 1) return d;
    d.train_docs = read_document_starts(path_in(dir, "train.docs"), d.train.size());
    d.val_docs = read_document_starts(path_in(dir, "val.docs"), d.val.size());
    d.end_of_document = tok.end_of_document();
    return d;
  }
  if (!meta.at("task").is_string() || !meta.contains("example_tokens") ||
      !meta.at("example_tokens").is_number_integer())
    throw Error(fmt::format("{}: a synthetic task needs \"task\" (a string) and \"example_tokens\" "
                            "(an integer)", meta_path));
  d.task = meta.at("task").get<std::string>();
  d.example_tokens = meta.at("example_tokens").get<int64_t>();
  if (d.example_tokens < 2 || d.example_tokens > (int64_t{1} << 30))
    throw Error(fmt::format("{}: example_tokens {} is out of range", meta_path, d.example_tokens));
  for (const auto* split : {&d.train, &d.val})
    if (split->empty() || split->size() % static_cast<size_t>(d.example_tokens) != 0)
      throw Error(fmt::format("{}: {} tokens are not whole examples of {} tokens", dir,
                              split->size(), d.example_tokens));
  d.train_scored = read_scored(path_in(dir, "train.scored.bin"), d.train, d.example_tokens);
  d.val_scored = read_scored(path_in(dir, "val.scored.bin"), d.val, d.example_tokens);
  return d;
}

void write_task_dataset(const std::string& dir, const TaskOptions& options, int64_t train_examples,
                        int64_t val_examples, uint64_t seed) {
  const auto o = resolve_task_options(options);
  // Different seeds for the two splits: no validation example is a training example's twin
  // (beyond chance).
  const auto train = generate_task(o, train_examples, seed);
  const auto val = generate_task(o, val_examples, seed ^ 0x76616c6964617465ULL);
  fs::create_directories(dir);
  auto mask = [](const std::vector<uint8_t>& s) { return std::vector<int32_t>(s.begin(), s.end()); };
  write_shard(path_in(dir, "train.bin"), o.vocab, train.tokens);
  write_shard(path_in(dir, "val.bin"), o.vocab, val.tokens);
  write_shard(path_in(dir, "train.scored.bin"), 2, mask(train.scored));
  write_shard(path_in(dir, "val.scored.bin"), 2, mask(val.scored));
  const nlohmann::json meta{{"task", task_name(o.task)}, {"length", o.length},
                            {"vocab_size", o.vocab}, {"items", o.items},
                            {"example_tokens", train.example_tokens},
                            {"train_examples", train_examples}, {"val_examples", val_examples},
                            {"seed", seed}};
  // meta.json last: a directory without it is not mistaken for a finished task directory.
  util::write_file_atomic(path_in(dir, "meta.json"), meta.dump(2) + "\n");
}

}  // namespace polysketch::data
