// polysketch train / eval: thin wrappers over train::run_training and eval::evaluate.
#include <fmt/core.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/common.h"
#include "attention/mechanism.h"
#include "data/corpus.h"
#include "data/dataset.h"
#include "data/documents.h"
#include "data/tokenizer.h"
#include "data/windows.h"
#include "eval/evaluate.h"
#include "train/checkpoint.h"
#include "train/trainer.h"
#include "util/atomic_file.h"
#include "util/check.h"

namespace polysketch::cli {

namespace {

struct TrainCli {
  train::TrainOptions o;
  std::string config_file, mechanism = "polysketch-learned-local";
  double time_budget_min = 0;
  int threads = 0;
};

void run_train(TrainCli& c) {
  util::check_range("--time-budget", c.time_budget_min, 0.0, 1e7);
  c.o.time_budget_s = c.time_budget_min * 60;
  train::validate_options(c.o);
  apply_runtime({c.threads, "f32"});  // the run's precision is set by run_training (it is saved)
  if (!c.config_file.empty()) {
    c.o.model = ModelConfig::from_json(util::read_file(c.config_file), c.config_file);
  } else {
    c.o.model.attention.mechanism = mechanism_flag(c.mechanism);
    c.o.model.seed = c.o.seed;  // --seed: initialisation and sketches too, not only data order
    c.o.model.vocab = 1;        // taken from the data; validated here for every other field
    check_model_flags(c.o.model);
  }
  const auto r = train::run_training(c.o);
  if (!r.reported) return;  // only rank 0 reports
  fmt::print("step {}: train loss {:.4f}, validation loss {:.4f} (perplexity {:.2f}, accuracy "
             "{:.4f}); unigram baseline loss {:.4f} (perplexity {:.2f})\n",
             r.step, r.train_loss, r.val_loss, std::exp(r.val_loss), r.val_accuracy,
             r.unigram_loss, std::exp(r.unigram_loss));
  fmt::print("checkpoint: {}\n", r.checkpoint);
}

struct EvalCli {
  std::string checkpoint, data;
  std::vector<std::string> inputs;  // raw text instead of a data directory
  std::vector<int64_t> contexts;
  int64_t batch = 8, batches = 16;
  bool sketch_error = false, json = false;
  Runtime runtime;
};

// `eval --input`: the documents of the inputs, tokenized as prepare tokenizes with the
// checkpoint's own tokenizer, as the validation split (there is no training split).
data::Dataset text_dataset(const std::vector<std::string>& inputs, const model::Checkpoint& ck) {
  if (ck.tokenizer_bytes.empty())
    throw Error(fmt::format("{}: no tokenizer (a synthetic task's model): evaluate it with --data", ck.dir));
  const auto tok = data::Tokenizer::from_bytes(ck.tokenizer_bytes, ck.dir + "/tokenizer.model");
  data::Dataset d;
  d.dir = "--input";
  d.vocab = tok.vocab_size();
  data::DocumentReader reader({inputs, {}, "text"});
  data::Document doc;
  while (reader.next(doc)) {
    const auto ids = tok.encode_lines(data::text_lines(doc.text));
    d.val.insert(d.val.end(), ids.begin(), ids.end());
  }
  return d;
}

void run_eval(const EvalCli& e) {
  if (e.inputs.empty() == e.data.empty()) throw Error("eval needs --data DIR or --input FILE... (one of them)");
  util::check_range("--batch", e.batch, 1, int64_t{1} << 20);
  util::check_range("--batches", e.batches, 1, int64_t{1} << 20);
  for (int64_t ctx : e.contexts) util::check_range("--context", ctx, 1, int64_t{1} << 30);
  const ComputeContext ctx = apply_runtime(e.runtime).ctx;
  const auto ck = model::read_checkpoint(e.checkpoint);
  if (e.sketch_error && !attention::uses_sketch(ck.config.attention.mechanism))
    throw Error(fmt::format("--sketch-error needs a sketch mechanism; this checkpoint's {} is exact",
                            mechanism_name(ck.config.attention.mechanism)));
  const auto data = e.inputs.empty() ? data::load_dataset(e.data) : text_dataset(e.inputs, ck);
  if (data.vocab != ck.config.vocab)
    throw Error(fmt::format("{}: vocab {} does not match the checkpoint's {}", e.data, data.vocab,
                            ck.config.vocab));
  auto contexts = e.contexts.empty() ? std::vector<int64_t>{ck.config.context} : e.contexts;
  for (int64_t ctx : contexts) data::check_context(data, ctx, /*val_only=*/!e.inputs.empty());
  Model model(ck.config, ctx);
  model::load_weights(model, ck.weights, ck.dir + "/model.safetensors");
  for (int64_t ctx : contexts) {
    const auto r = eval::evaluate(model, data, ctx, e.batch, e.batches);
    if (!std::isfinite(r.loss))
      throw Error(fmt::format("context {}: validation loss is {} (the model's outputs overflow)", ctx, r.loss));
    const auto err = e.sketch_error ? eval::sketch_error(model, data, ctx, e.batch, e.batches)
                                    : std::vector<double>{};
    if (e.json) {
      nlohmann::json j{{"context", ctx}, {"loss", r.loss}, {"perplexity", std::exp(r.loss)},
                       {"accuracy", r.accuracy}, {"scored", r.scored}};
      if (e.sketch_error) j["sketch_error"] = err;
      fmt::print("{}\n", j.dump());
      continue;
    }
    fmt::print("context {}: validation loss {:.4f}, perplexity {:.2f}, {} accuracy {:.4f} ({} tokens)\n",
               ctx, r.loss, std::exp(r.loss), data.synthetic() ? "answer" : "next-token", r.accuracy,
               r.scored);
    if (e.sketch_error) {
      std::string layers;
      for (double x : err) layers += fmt::format(" {:.4f}", x);
      fmt::print("context {}: sketch error per layer (||o - o_exact|| / ||o_exact|| against exact "
                 "degree-{} attention):{}\n", ctx, ck.config.attention.p, layers);
    }
  }
}

}  // namespace

void add_train(CLI::App& app) {
  auto c = std::make_shared<TrainCli>();
  auto& o = c->o;
  auto& m = o.model;
  // The default model is the quickstart's: small enough to train well in minutes on 2 cores.
  m.layers = 4;
  m.width = 256;
  m.heads = 4;
  m.context = 256;
  m.attention.r = 32;
  m.attention.block = 64;
  auto* cmd = app.add_subcommand("train", "Train a PolySketchFormer language model");
  cmd->add_option("--data", o.data_dir, "directory made by `polysketch prepare` (when resuming: the run's own by default)");
  cmd->add_option("--out", o.out_dir, "run directory (step-N/ + latest + metrics.jsonl); locked while training")->required();
  auto* resume = cmd->add_option("--resume", o.resume, "continue bit-exactly from this checkpoint (or its run directory)");
  auto* config = cmd->add_option("--config", c->config_file, "model config.json (instead of the model flags)");
  // Model flags conflict with --config (which names the model) and --resume (the checkpoint's
  // model is used); training options conflict with --resume. Nothing is ignored silently.
  auto model_flag = [&](CLI::Option* opt) { opt->capture_default_str()->excludes(config)->excludes(resume); };
  auto run_flag = [&](CLI::Option* opt) { opt->capture_default_str()->excludes(resume); };
  model_flag(cmd->add_option("--mechanism", c->mechanism, "attention mechanism"));
  model_flag(cmd->add_option("--layers", m.layers));
  model_flag(cmd->add_option("--width", m.width));
  model_flag(cmd->add_option("--heads", m.heads));
  model_flag(cmd->add_option("--context", m.context));
  model_flag(cmd->add_option("--r", m.attention.r, "sketch size"));
  model_flag(cmd->add_option("--block", m.attention.block, "block size b"));
  model_flag(cmd->add_option("--p", m.attention.p, "polynomial degree"));
  model_flag(cmd->add_option("--dropout", m.dropout));
  run_flag(cmd->add_option("--batch", o.batch, "sequences per micro-batch"));
  run_flag(cmd->add_option("--accum", o.accum, "micro-batches per step"));
  cmd->add_option("--steps", o.steps, "optimizer steps (default 1000; when resuming: the original run's, or more to extend it)")->check(CLI::Range(int64_t{1}, int64_t{1} << 40));
  run_flag(cmd->add_option("--warmup", o.warmup));
  run_flag(cmd->add_option("--lr", o.lr, "peak learning rate"));
  run_flag(cmd->add_option("--min-lr-ratio", o.min_lr_ratio));
  run_flag(cmd->add_option("--clip", o.clip, "max gradient norm (0: off)"));
  run_flag(cmd->add_option("--weight-decay", o.weight_decay));
  run_flag(cmd->add_option("--precision", o.precision, "f32, or bf16: matrix-product inputs rounded to bfloat16, float32 accumulation (saved with the run)"));
  run_flag(cmd->add_option("--seed", o.seed, "data order, dropout, and (without --config) parameter initialisation and sketches"));
  cmd->add_option("--eval-every", o.eval_every, "steps between validations (0: only at the end)")->capture_default_str();
  cmd->add_option("--eval-batches", o.eval_batches)->capture_default_str();
  cmd->add_option("--checkpoint-every", o.checkpoint_every, "steps between checkpoints (0: only at the end)")->capture_default_str();
  cmd->add_option("--keep", o.keep, "checkpoints kept (0: all)")->capture_default_str();
  cmd->add_option("--context-parallel", o.context_parallel, "ranks per sequence under mpirun: each holds a contiguous chunk (sketch mechanisms)")->capture_default_str();
  cmd->add_option("--time-budget", c->time_budget_min, "stop (and save) after this many minutes (0: none)")->capture_default_str();
  cmd->add_option("--threads", c->threads, "0: all cores")->capture_default_str();
  cmd->callback([c] { run_train(*c); });

  auto e = std::make_shared<EvalCli>();
  auto* ev = app.add_subcommand("eval", "Validation loss and perplexity of a checkpoint");
  ev->add_option("--checkpoint", e->checkpoint)->required();
  auto* data_dir = ev->add_option("--data", e->data, "directory made by `polysketch prepare` (its validation split)");
  ev->add_option("--input", e->inputs, "or raw text: files and folders as `prepare --input` reads "
                                       "them, tokenized with the checkpoint's tokenizer")->excludes(data_dir);
  ev->add_option("--context", e->contexts, "context lengths (default: the model's)")->delimiter(',');
  ev->add_option("--batch", e->batch)->capture_default_str();
  ev->add_option("--batches", e->batches)->capture_default_str();
  ev->add_flag("--json", e->json, "one JSON object per context (loss, perplexity, accuracy, scored, sketch_error)");
  ev->add_flag("--sketch-error", e->sketch_error, "also report each layer's attention error against "
                                                  "exact polynomial attention (sketch mechanisms; quadratic)");
  add_runtime_flags(ev, e->runtime);
  ev->callback([e] { run_eval(*e); });
}

}  // namespace polysketch::cli
