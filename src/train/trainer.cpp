#include "train/trainer.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>

#include "data/shards.h"
#include "data/tokenizer.h"
#include "kernels/rng.h"
#include "train/adamw.h"
#include "train/checkpoint.h"
#include "util/atomic_file.h"

namespace polysketch::train {

namespace fs = std::filesystem;

namespace {

std::atomic<bool> g_interrupted{false};
extern "C" void on_sigint(int) { g_interrupted = true; }

// Fills batch windows for training step `step`, micro-batch `micro`: a pure function of
// (seed, step, micro), which is what makes resuming bit-exact without saving a data cursor.
void sample_batch(const std::vector<int32_t>& data, int64_t context, int64_t batch, uint64_t seed,
                  int64_t step, int64_t micro, std::vector<int32_t>& x, std::vector<int32_t>& y) {
  auto rng = kernels::Rng::derive(seed, static_cast<uint64_t>(step), static_cast<uint64_t>(micro) + 1);
  const uint64_t span = data.size() - static_cast<uint64_t>(context);
  x.resize(static_cast<size_t>(batch * context));
  y.resize(x.size());
  for (int64_t b = 0; b < batch; ++b) {
    const uint64_t start = rng.below(span);
    for (int64_t t = 0; t < context; ++t) {
      x[b * context + t] = data[start + t];
      y[b * context + t] = data[start + t + 1];
    }
  }
}

nlohmann::json options_json(const TrainOptions& o) {
  return {{"batch", o.batch}, {"accum", o.accum}, {"steps", o.steps}, {"warmup", o.warmup},
          {"lr", o.lr}, {"min_lr_ratio", o.min_lr_ratio}, {"clip", o.clip},
          {"weight_decay", o.weight_decay}, {"seed", o.seed}, {"data_dir", o.data_dir}};
}

void options_from_json(const nlohmann::json& j, TrainOptions& o) {
  j.at("batch").get_to(o.batch);
  j.at("accum").get_to(o.accum);
  j.at("steps").get_to(o.steps);
  j.at("warmup").get_to(o.warmup);
  j.at("lr").get_to(o.lr);
  j.at("min_lr_ratio").get_to(o.min_lr_ratio);
  j.at("clip").get_to(o.clip);
  j.at("weight_decay").get_to(o.weight_decay);
  j.at("seed").get_to(o.seed);
}

std::string duration(double s) {
  const auto t = static_cast<int64_t>(s);
  return t >= 3600 ? fmt::format("{}h{:02d}m", t / 3600, t / 60 % 60)
                   : fmt::format("{}m{:02d}s", t / 60, t % 60);
}

void prune_checkpoints(const std::string& root, int64_t keep) {
  if (keep < 1) return;
  std::vector<fs::path> dirs;
  for (const auto& e : fs::directory_iterator(root))
    if (e.is_directory() && e.path().filename().string().rfind("step-", 0) == 0) dirs.push_back(e.path());
  std::sort(dirs.begin(), dirs.end());
  for (size_t i = 0; i + static_cast<size_t>(keep) < dirs.size(); ++i) fs::remove_all(dirs[i]);
}

}  // namespace

double evaluate(Model& model, const std::vector<int32_t>& tokens, int64_t context, int64_t batch,
                int64_t batches) {
  if (static_cast<int64_t>(tokens.size()) < context + 1)
    throw Error(fmt::format("evaluation data has {} tokens, fewer than context+1 = {}",
                            tokens.size(), context + 1));
  const int64_t windows = std::max<int64_t>(1, batch * batches);
  const int64_t last = static_cast<int64_t>(tokens.size()) - context - 1;
  std::vector<int32_t> x, y;
  double total = 0;
  int64_t done = 0;
  while (done < windows) {
    const int64_t b = std::min(batch, windows - done);
    x.resize(static_cast<size_t>(b * context));
    y.resize(x.size());
    for (int64_t i = 0; i < b; ++i) {
      const int64_t start = windows == 1 ? 0 : (done + i) * last / (windows - 1);
      for (int64_t t = 0; t < context; ++t) {
        x[i * context + t] = tokens[start + t];
        y[i * context + t] = tokens[start + t + 1];
      }
    }
    total += model.forward(x.data(), y.data(), b, context, false) * static_cast<double>(b);
    done += b;
  }
  return total / static_cast<double>(windows);
}

double unigram_loss(const std::vector<int32_t>& train, const std::vector<int32_t>& eval, int64_t vocab) {
  std::vector<double> count(static_cast<size_t>(vocab), 1.0);
  for (int32_t t : train) count[t] += 1;
  const double total = static_cast<double>(train.size() + vocab);
  double loss = 0;
  for (int32_t t : eval) loss -= std::log(count[t] / total);
  return loss / static_cast<double>(eval.size());
}

TrainResult run_training(const TrainOptions& opts_in) {
  TrainOptions o = opts_in;
  if (o.out_dir.empty()) throw Error("--out is required");
  // Resume: model, optimizer and training options come from the checkpoint.
  std::unique_ptr<LoadedCheckpoint> ckpt;
  if (!o.resume.empty()) {
    ckpt = std::make_unique<LoadedCheckpoint>(load_checkpoint(o.resume, true));
    try {
      options_from_json(ckpt->state.at("options"), o);
      if (o.data_dir.empty()) ckpt->state.at("options").at("data_dir").get_to(o.data_dir);
    } catch (const nlohmann::json::exception& e) {
      throw Error(fmt::format("{}/state.json: missing or invalid training options ({})", ckpt->dir, e.what()));
    }
    if (opts_in.steps > 0) o.steps = opts_in.steps;  // e.g. to extend a finished run
  } else if (o.steps == 0) {
    o.steps = 1000;
  }
  if (o.batch < 1 || o.accum < 1 || o.steps < 1)
    throw Error(fmt::format("--batch, --accum and --steps must be >= 1 (got {}, {}, {})", o.batch,
                            o.accum, o.steps));
  if (o.lr <= 0) throw Error(fmt::format("--lr must be > 0, got {}", o.lr));
  if (o.data_dir.empty()) throw Error("--data is required (a directory made by `polysketch prepare`)");
  const auto tok_path = (fs::path(o.data_dir) / "tokenizer.model").string();
  const auto tokenizer = data::Tokenizer::from_file(tok_path);
  int64_t vocab = 0;
  const auto train_tokens = data::read_shard((fs::path(o.data_dir) / "train.bin").string(), -1, &vocab);
  const auto val_tokens = data::read_shard((fs::path(o.data_dir) / "val.bin").string(), vocab);
  if (vocab != tokenizer.vocab_size())
    throw Error(fmt::format("{}: vocab {} does not match the shards' {}", tok_path,
                            tokenizer.vocab_size(), vocab));

  ModelConfig mc = ckpt ? ckpt->config : o.model;
  if (!ckpt) mc.vocab = vocab;
  if (mc.vocab != vocab)
    throw Error(fmt::format("checkpoint vocab {} does not match the data's {}", mc.vocab, vocab));
  const int64_t ctx = mc.context;
  if (static_cast<int64_t>(train_tokens.size()) < ctx + 1)
    throw Error(fmt::format("training data has {} tokens, fewer than context+1 = {}",
                            train_tokens.size(), ctx + 1));
  Model model(mc);
  AdamW opt(model.params(), {0.9, 0.95, 1e-8, o.weight_decay});
  int64_t step = 0;
  if (ckpt) {
    load_weights(model, ckpt->weights, ckpt->dir + "/model.safetensors");
    load_optimizer(opt, model, ckpt->optimizer, ckpt->dir + "/optimizer_*.safetensors");
    step = ckpt->state.at("step").get<int64_t>();
    opt.set_steps(ckpt->state.at("adam_steps").get<int64_t>());
  }
  fs::create_directories(o.out_dir);
  std::ofstream metrics(fs::path(o.out_dir) / "metrics.jsonl", std::ios::app);
  TrainResult res;
  res.unigram_loss = unigram_loss(train_tokens, val_tokens, vocab);
  if (o.progress)
    fmt::print(stderr, "model: {} parameters, {} layers, width {}, {} heads, context {}, {}\n"
               "data: {} train / {} validation tokens; unigram baseline: loss {:.3f} (ppl {:.1f})\n",
               model.parameter_count(), mc.layers, mc.width, mc.heads, ctx,
               mechanism_name(mc.attention.mechanism), train_tokens.size(), val_tokens.size(),
               res.unigram_loss, std::exp(res.unigram_loss));

  auto state_json = [&] {
    return nlohmann::json{{"options", options_json(o)}, {"tokens_seen", step * o.batch * o.accum * ctx}};
  };
  auto save = [&] {
    res.checkpoint = save_checkpoint(o.out_dir, step, model, &opt, tokenizer.model_bytes(), state_json());
    prune_checkpoints(o.out_dir, o.keep);
  };
  auto log_eval = [&] {
    res.val_loss = evaluate(model, val_tokens, ctx, o.batch, o.eval_batches);
    metrics << nlohmann::json{{"step", step}, {"val_loss", res.val_loss},
                              {"val_ppl", std::exp(res.val_loss)}}.dump() << "\n";
    metrics.flush();
    if (o.progress)
      fmt::print(stderr, "\nstep {}: validation loss {:.4f}, perplexity {:.2f}\n", step,
                 res.val_loss, std::exp(res.val_loss));
  };

  g_interrupted = false;
  auto old_handler = std::signal(SIGINT, on_sigint);
  const bool tty = isatty(2);
  auto grads = model.zero_grads();
  std::vector<int32_t> x, y;
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t first = step;
  while (step < o.steps) {
    const auto ts = std::chrono::steady_clock::now();
    for (auto& g : grads) std::fill(g.begin(), g.end(), 0.f);
    double loss = 0;
    for (int64_t a = 0; a < o.accum; ++a) {
      sample_batch(train_tokens, ctx, o.batch, o.seed, step, a, x, y);
      loss += model.forward(x.data(), y.data(), o.batch, ctx, true,
                            o.seed ^ (static_cast<uint64_t>(step) * 0x9e3779b97f4a7c15ULL + a));
      model.backward(grads);
    }
    loss /= static_cast<double>(o.accum);
    if (o.accum > 1)
      for (auto& g : grads)
        for (float& v : g) v /= static_cast<float>(o.accum);
    if (!std::isfinite(loss)) throw Error(fmt::format("training diverged: loss {} at step {} (lower --lr?)", loss, step));
    const double norm = clip_grad_norm(grads, o.clip);
    const double lr = learning_rate(step, o.steps, o.warmup, o.lr, o.min_lr_ratio);
    opt.step(model.params(), grads, lr);
    ++step;
    res.losses.push_back(loss);
    res.train_loss = loss;
    const auto now = std::chrono::steady_clock::now();
    const double elapsed = std::chrono::duration<double>(now - t0).count();
    const double step_s = std::chrono::duration<double>(now - ts).count();
    const double tok_s = static_cast<double>(o.batch * o.accum * ctx) / step_s;
    metrics << nlohmann::json{{"step", step}, {"loss", loss}, {"lr", lr}, {"grad_norm", norm},
                              {"tokens_per_s", tok_s}, {"elapsed_s", elapsed}}.dump() << "\n";
    if (o.progress && (tty || step % 10 == 0 || step == o.steps)) {
      const double eta = elapsed / static_cast<double>(step - first) * static_cast<double>(o.steps - step);
      const int width = 24, filled = static_cast<int>(width * step / o.steps);
      fmt::print(stderr, "{}step {}/{} [{}{}] loss {:.4f} | {:.0f} tok/s | ETA {}{}",
                 tty ? "\r" : "", step, o.steps, std::string(filled, '#'),
                 std::string(width - filled, '.'), loss, tok_s, duration(eta), tty ? "   " : "\n");
    }
    const bool out_of_time = o.time_budget_s > 0 && elapsed >= o.time_budget_s;
    if (o.eval_every > 0 && step % o.eval_every == 0 && step < o.steps && !out_of_time) log_eval();
    if (o.checkpoint_every > 0 && step % o.checkpoint_every == 0 && step < o.steps) save();
    if (g_interrupted) {
      res.interrupted = true;
      break;
    }
    if (out_of_time) {
      if (o.progress) fmt::print(stderr, "\ntime budget of {} reached at step {}\n", duration(o.time_budget_s), step);
      break;
    }
  }
  std::signal(SIGINT, old_handler);
  res.step = step;
  log_eval();
  save();
  if (o.progress)
    fmt::print(stderr, "{}checkpoint: {}\n", res.interrupted ? "interrupted; " : "", res.checkpoint);
  return res;
}

}  // namespace polysketch::train
