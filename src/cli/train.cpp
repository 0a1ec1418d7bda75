// polysketch train: a thin wrapper over train::run_training.
#include <fmt/core.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/common.h"
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
  CLI::Option* context = nullptr;
};

void run_train(TrainCli& c) {
  util::check_range("--time-budget", c.time_budget_min, 0.0, 1e7);
  c.o.time_budget_s = c.time_budget_min * 60;
  if (!c.o.init.empty() && c.context->count() > 0) c.o.init_context = c.o.model.context;
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
  cmd->add_option("--out", o.out_dir, "run directory (step-N/ + latest + metrics.jsonl); locked while training "
                                      "(with --resume: the resumed run's by default)");
  auto* resume = cmd->add_option("--resume", o.resume, "continue bit-exactly from this checkpoint (or its run directory)");
  auto* config = cmd->add_option("--config", c->config_file, "model config.json (instead of the model flags)");
  auto* init = cmd->add_option("--init", o.init, "fine-tune: start from this checkpoint's (or run's) weights "
                                                 "and model, with a new optimizer, schedule and data "
                                                 "(--context may change)")
                   ->excludes(resume)->excludes(config);
  // Model flags conflict with --config (which names the model) and --resume (the checkpoint's
  // model is used); training options conflict with --resume. Nothing is ignored silently.
  auto model_flag = [&](CLI::Option* opt) { opt->capture_default_str()->excludes(config)->excludes(resume)->excludes(init); };
  auto run_flag = [&](CLI::Option* opt) { opt->capture_default_str()->excludes(resume); };
  model_flag(cmd->add_option("--mechanism", c->mechanism, "attention mechanism"));
  model_flag(cmd->add_option("--layers", m.layers));
  model_flag(cmd->add_option("--width", m.width));
  model_flag(cmd->add_option("--heads", m.heads));
  c->context = cmd->add_option("--context", m.context, "tokens per sequence (with --init: a new context)");
  c->context->capture_default_str()->excludes(config)->excludes(resume);
  model_flag(cmd->add_option("--r", m.attention.r, "sketch size"));
  model_flag(cmd->add_option("--block", m.attention.block, "block size b"));
  model_flag(cmd->add_option("--p", m.attention.p, "polynomial degree"));
  model_flag(cmd->add_option("--hidden-mult", m.attention.hidden_mult,
                             "learned sketch: hidden width of its network = hidden-mult x r"));
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
  run_flag(cmd->add_option("--document-mask", o.document_mask,
                           "auto, on or off: tokens attend only within their document (auto: when the "
                           "data records document boundaries; saved with the run)"));
  run_flag(cmd->add_option("--seed", o.seed, "data order, dropout, and (without --config) parameter initialisation and sketches"));
  cmd->add_option("--eval-every", o.eval_every, "steps between validations (0: only at the end)")->capture_default_str();
  cmd->add_option("--eval-batches", o.eval_batches)->capture_default_str();
  cmd->add_option("--checkpoint-every", o.checkpoint_every, "steps between checkpoints (0: only at the end)")->capture_default_str();
  cmd->add_option("--keep", o.keep, "checkpoints kept (0: all)")->capture_default_str();
  cmd->add_option("--chunk", o.chunk, "tokens per chunk: each sequence is trained a chunk at a time "
                                     "(activation memory independent of the context; sketch "
                                     "mechanisms, a multiple of --block; 0: whole sequences)")->capture_default_str();
  cmd->add_option("--context-parallel", o.context_parallel, "ranks per sequence under mpirun: each holds a contiguous chunk (sketch mechanisms)")->capture_default_str();
  cmd->add_option("--time-budget", c->time_budget_min, "stop (and save) after this many minutes (0: none)")->capture_default_str();
  cmd->add_option("--threads", c->threads, "0: all cores")->capture_default_str();
  cmd->callback([c] { run_train(*c); });
}

}  // namespace polysketch::cli
