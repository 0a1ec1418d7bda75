// polysketch prepare: text -> sentencepiece tokenizer + train/validation token shards.
#include <fmt/core.h>

#include <optional>

#include "cli/commands.h"
#include "data/prepare_text.h"
#include "data/dataset.h"
#include "polysketch/error.h"
#include "util/check.h"

namespace polysketch::cli {

namespace {
struct PrepareOptions {
  std::vector<std::string> inputs, globs;
  std::vector<std::string> val_inputs;
  double val_fraction = 0.05, tokenizer_sample_mb = 64;
  int threads = 0;
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
  data::TextPrepareOptions t;
  t.input = {o.inputs, o.globs, o.text_field};
  t.val_input = {o.val_inputs, o.globs, o.text_field};
  t.val_fraction = o.val_fraction;
  t.tokenizer = o.tokenizer;
  t.vocab_size = o.vocab_size.value_or(2048);
  t.tokenizer_sample_mb = o.tokenizer_sample_mb;
  t.threads = o.threads;
  t.progress = true;
  const auto r = data::prepare_text(t, o.out);
  fmt::print("corpus: {} document(s) from {}, {:.1f} MB of text\n", r.documents, r.source, r.text_bytes / 1e6);
  fmt::print("tokenized in {:.1f} s ({:.1f} MB/s)\n", r.tokenize_seconds,
             r.tokenize_seconds > 0 ? r.text_bytes / 1e6 / r.tokenize_seconds : 0.0);
  fmt::print("wrote {}: {} train tokens in {} document(s), {} validation tokens in {} document(s), vocab {}\n",
             o.out, r.train_tokens, r.train_documents, r.val_tokens, r.val_documents, r.vocab);
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
  auto* val_input = cmd->add_option("--val-input", o->val_inputs,
                                    "validation documents (files and folders, read as --input is); "
                                    "without it, --val-fraction of the documents is held out");
  auto* val_fraction = cmd->add_option("--val-fraction", o->val_fraction,
                  "fraction of the documents held out whole for validation, spread evenly; with fewer "
                  "than 1/fraction documents, that fraction of each document's lines in up to 4 "
                  "contiguous spans")->capture_default_str()->excludes(val_input);
  cmd->add_option("--tokenizer-sample-mb", o->tokenizer_sample_mb,
                  "a trained tokenizer learns from a deterministic sample of about this many MB of "
                  "training text")->capture_default_str();
  cmd->add_option("--threads", o->threads, "threads tokenizing (0: all cores)")->capture_default_str();
  cmd->add_option("--out", o->out, "output directory")->required();
  auto* tokenizer = cmd->add_option("--tokenizer", o->tokenizer,
                                    "tokenize with this sentencepiece model instead of training one: "
                                    "a tokenizer.model, a data directory or a checkpoint");
  cmd->add_option("--vocab-size", o->vocab_size, "tokenizer vocabulary size (default 2048), or the "
                                                 "task's vocabulary (defaults: selective-copying 18, "
                                                 "induction-heads 16, mqar 256)")->excludes(tokenizer);
  auto* task = cmd->add_option("--task", o->task, "synthetic task instead of text: selective-copying, "
                                                  "induction-heads or mqar (docs/RESULTS.md)")->excludes(input)->excludes(tokenizer)->excludes(val_input)->excludes(val_fraction);
  auto task_flag = [&](CLI::Option* opt) { opt->capture_default_str()->needs(task); };
  task_flag(cmd->add_option("--length", o->length, "tokens the model reads per example (train with --context equal to it)"));
  cmd->add_option("--items", o->items, "selective-copying: tokens to copy (default 16); mqar: key-value pairs (default 8)")->needs(task);
  task_flag(cmd->add_option("--examples", o->examples, "training examples"));
  task_flag(cmd->add_option("--val-examples", o->val_examples, "validation examples"));
  task_flag(cmd->add_option("--seed", o->seed, "the examples' seed"));
  cmd->callback([o] { run(*o); });
}

}  // namespace polysketch::cli
