// polysketch prepare: text -> sentencepiece tokenizer + train/validation token shards.
#include <fmt/core.h>

#include <filesystem>
#include <optional>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "data/corpus.h"
#include "data/documents.h"
#include "data/dataset.h"
#include "data/shards.h"
#include "data/tokenizer.h"
#include "polysketch/error.h"
#include "util/atomic_file.h"
#include "util/check.h"

namespace polysketch::cli {

namespace {
struct PrepareOptions {
  std::vector<std::string> inputs, globs;
  std::string text_field = "text", tokenizer;
  std::string out, task;
  std::optional<int64_t> vocab_size;  // default: 2048 for text, the task's for --task
  int64_t length = 256, items = 0, examples = 20000, val_examples = 1000;
  uint64_t seed = 1;
};

void run_task(const PrepareOptions& o) {
  data::TaskOptions t;
  try {
    t.task = data::parse_task(o.task);
  } catch (const Error& e) {
    throw Error(fmt::format("--task: {}", e.what()));
  }
  t.length = o.length;
  if (o.vocab_size) {
    util::check_range("--vocab-size", *o.vocab_size, 3, int64_t{1} << 20);
    t.vocab = *o.vocab_size;
  }
  t.items = o.items;
  t = data::resolve_task_options(t);
  util::check_range("--examples", o.examples, 1, int64_t{1} << 32);
  util::check_range("--val-examples", o.val_examples, 1, int64_t{1} << 32);
  const double bytes = 3.0 * static_cast<double>(o.examples + o.val_examples) * static_cast<double>(t.length + 1);
  if (bytes > 8e9)
    throw Error(fmt::format("--examples {} x --length {} would write {:.1f} GB; fewer examples or a "
                            "shorter --length", o.examples, t.length, bytes / 1e9));
  data::write_task_dataset(o.out, t, o.examples, o.val_examples, o.seed);
  fmt::print("wrote {}: {} ({} tokens per example, vocab {}{}), {} train / {} validation examples\n",
             o.out, data::task_name(t.task), t.length + 1, t.vocab,
             t.items ? fmt::format(", {} items", t.items) : "", o.examples, o.val_examples);
}

void run(const PrepareOptions& o) {
  if (!o.task.empty()) return run_task(o);
  const int64_t vocab_size = o.vocab_size.value_or(2048);
  util::check_range("--vocab-size", vocab_size, 16, int64_t{1} << 20);
  std::optional<data::Tokenizer> given;  // --tokenizer: read before the corpus, to fail early
  if (!o.tokenizer.empty()) given.emplace(data::Tokenizer::from_source(o.tokenizer));
  std::string text;
  std::string source;
  if (o.inputs.empty()) {
    text = data::kjv_text();
    source = "King James Bible (Debian bible-kjv)";
  } else {
    data::DocumentReader reader({o.inputs, o.globs, o.text_field});
    data::Document doc;
    int64_t documents = 0;
    while (reader.next(doc)) {
      text += doc.text;
      text += "\n";
      ++documents;
    }
    if (documents == 0)
      throw Error(fmt::format("no text in the input ({} file(s), every one empty)", reader.files().size()));
    source = fmt::format("{} document(s) from {} file(s)", documents, reader.files().size());
  }
  const auto split = data::split_lines(text);
  if (split.train.size() < 10 || split.val.empty())
    throw Error(fmt::format("input too small: {} training and {} validation lines (need at least "
                            "10 and 1; the split puts every 20th block of 50 lines aside)",
                            split.train.size(), split.val.size()));
  fmt::print("corpus: {} ({:.1f} MB), {} train / {} validation lines\n", source,
             text.size() / 1e6, split.train.size(), split.val.size());
  if (!given) fmt::print("training the tokenizer ({} pieces)...\n", vocab_size);
  const auto tok = given ? std::move(*given)
                         : data::Tokenizer::from_bytes(data::Tokenizer::train(split.train, static_cast<int>(vocab_size)),
                                                       "tokenizer");
  const std::string& model = tok.model_bytes();
  const auto train = tok.encode_lines(split.train), val = tok.encode_lines(split.val);
  std::filesystem::create_directories(o.out);
  const auto dir = std::filesystem::path(o.out);
  util::write_file_atomic((dir / "tokenizer.model").string(), model);
  data::write_shard((dir / "train.bin").string(), tok.vocab_size(), train);
  data::write_shard((dir / "val.bin").string(), tok.vocab_size(), val);
  const nlohmann::json meta{{"source", source}, {"vocab_size", tok.vocab_size()},
                            {"tokenizer", o.tokenizer.empty() ? "trained on this corpus" : o.tokenizer},
                            {"train_tokens", train.size()}, {"val_tokens", val.size()}};
  util::write_file_atomic((dir / "meta.json").string(), meta.dump(2) + "\n");
  fmt::print("wrote {}: {} train tokens, {} validation tokens, vocab {}\n", o.out, train.size(),
             val.size(), tok.vocab_size());
}
}  // namespace

void add_prepare(CLI::App& app) {
  auto o = std::make_shared<PrepareOptions>();
  auto* cmd = app.add_subcommand("prepare", "Train a sentencepiece tokenizer on UTF-8 text and "
                                            "write train/validation token shards, or generate a "
                                            "synthetic task's examples (--task)");
  auto* input = cmd->add_option("--input", o->inputs,
                                "UTF-8 text: files and folders (searched recursively); .txt, .md, "
                                ".jsonl (one document per line), each also .gz (default: the King "
                                "James Bible)");
  cmd->add_option("--glob", o->globs, "file-name patterns taken from folders (default: *.txt *.md "
                                      "*.jsonl and their .gz)")->needs(input);
  cmd->add_option("--text-field", o->text_field, ".jsonl: the field holding each record's text")
      ->capture_default_str()->needs(input);
  cmd->add_option("--out", o->out, "output directory")->required();
  auto* tokenizer = cmd->add_option("--tokenizer", o->tokenizer,
                                    "tokenize with this sentencepiece model instead of training one: "
                                    "a tokenizer.model, a data directory or a checkpoint");
  cmd->add_option("--vocab-size", o->vocab_size, "tokenizer vocabulary size (default 2048), or the "
                                                 "task's vocabulary (defaults: selective-copying 18, "
                                                 "induction-heads 16, mqar 256)")->excludes(tokenizer);
  auto* task = cmd->add_option("--task", o->task, "synthetic task instead of text: selective-copying, "
                                                  "induction-heads or mqar (docs/RESULTS.md)")->excludes(input)->excludes(tokenizer);
  auto task_flag = [&](CLI::Option* opt) { opt->capture_default_str()->needs(task); };
  task_flag(cmd->add_option("--length", o->length, "tokens the model reads per example (train with --context equal to it)"));
  cmd->add_option("--items", o->items, "selective-copying: tokens to copy (default 16); mqar: key-value pairs (default 8)")->needs(task);
  task_flag(cmd->add_option("--examples", o->examples, "training examples"));
  task_flag(cmd->add_option("--val-examples", o->val_examples, "validation examples"));
  task_flag(cmd->add_option("--seed", o->seed, "the examples' seed"));
  cmd->callback([o] { run(*o); });
}

}  // namespace polysketch::cli
