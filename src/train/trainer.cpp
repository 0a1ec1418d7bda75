#include "train/trainer.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <limits>
#include <optional>

#include "kernels/gemm.h"
#include "kernels/rng.h"
#include "model/layers.h"
#include "train/adamw.h"
#include "train/checkpoint.h"
#include "train/distributed.h"
#include "train/run_dir.h"
#include "train/stop_signals.h"
#include "util/atomic_file.h"
#include "util/check.h"

namespace polysketch::train {

namespace fs = std::filesystem;

namespace {

// Fills x (inputs) and y (targets) with `count` sequences of `context` tokens: running text as
// windows starting at starts[i]; a synthetic task's examples (whole, index starts[i]) with
// y = kIgnoreTarget where the token is not an answer.
void fill_batch(const std::vector<int32_t>& tokens, const std::vector<uint8_t>& scored,
                int64_t example_tokens, int64_t context, const std::vector<uint64_t>& starts,
                std::vector<int32_t>& x, std::vector<int32_t>& y) {
  x.resize(starts.size() * static_cast<size_t>(context));
  y.resize(x.size());
  for (size_t b = 0; b < starts.size(); ++b) {
    const uint64_t start = example_tokens > 0 ? starts[b] * static_cast<uint64_t>(example_tokens) : starts[b];
    for (int64_t t = 0; t < context; ++t) {
      x[b * context + t] = tokens[start + t];
      y[b * context + t] = example_tokens > 0 && !scored[start + t + 1] ? kIgnoreTarget
                                                                         : tokens[start + t + 1];
    }
  }
}

// Windows (or examples) that fit: the range starts are drawn from, or spread over.
uint64_t start_count(const std::vector<int32_t>& tokens, int64_t example_tokens, int64_t context) {
  return example_tokens > 0 ? tokens.size() / static_cast<uint64_t>(example_tokens)
                            : tokens.size() - static_cast<uint64_t>(context);
}

// The batch of training step `step`, micro-batch `micro`: a pure function of (seed, step, micro),
// which is what makes resuming bit-exact without saving a data cursor.
void sample_batch(const data::Dataset& data, int64_t context, int64_t batch, uint64_t seed,
                  int64_t step, int64_t micro, std::vector<int32_t>& x, std::vector<int32_t>& y) {
  auto rng = kernels::Rng::derive(seed, static_cast<uint64_t>(step), static_cast<uint64_t>(micro) + 1);
  const uint64_t span = start_count(data.train, data.example_tokens, context);
  std::vector<uint64_t> starts(static_cast<size_t>(batch));
  for (auto& s : starts) s = rng.below(span);
  fill_batch(data.train, data.train_scored, data.example_tokens, context, starts, x, y);
}

// Chunk `c` of `k` of every sequence of x [batch x context] (context parallelism).
void take_chunk(const std::vector<int32_t>& x, int64_t batch, int64_t context, int64_t c, int64_t k,
                std::vector<int32_t>& out) {
  const int64_t len = context / k;
  out.resize(static_cast<size_t>(batch * len));
  for (int64_t b = 0; b < batch; ++b)
    std::copy(x.begin() + b * context + c * len, x.begin() + b * context + (c + 1) * len,
              out.begin() + b * len);
}

// Throws Error unless context parallelism over k ranks suits this model.
void check_context_parallel(const ModelConfig& mc, int64_t k) {
  if (k == 1) return;
  if (mc.context % k != 0)
    throw Error(fmt::format("--context-parallel {}: the context {} does not split into {} chunks",
                            k, mc.context, k));
  if (const auto problem = chunk_layout_problem(mc.attention, mc.context / k); !problem.empty())
    throw Error(fmt::format("--context-parallel {} {}", k, problem));
}

// The step's gradients summed over the ranks while the last backward pass runs: each group of
// tensors the model reports complete is copied into its place in one flat buffer and its
// allreduce started (MPI_Iallreduce); finish() waits and copies the sums back.
class OverlappedSum {
 public:
  explicit OverlappedSum(const std::vector<std::vector<float>>& grads) : offset_(grads.size() + 1, 0) {
    for (size_t i = 0; i < grads.size(); ++i) offset_[i + 1] = offset_[i] + grads[i].size();
    flat_.resize(offset_.back());
  }
  void ready(const std::vector<std::vector<float>>& grads, size_t begin, size_t end) {
    for (size_t i = begin; i < end; ++i) std::copy(grads[i].begin(), grads[i].end(), flat_.begin() + offset_[i]);
    World::start_sum(flat_.data() + offset_[begin], static_cast<int64_t>(offset_[end] - offset_[begin]));
  }
  void finish(std::vector<std::vector<float>>& grads) {
    World::finish_sums();
    for (size_t i = 0; i < grads.size(); ++i)
      std::copy(flat_.begin() + offset_[i], flat_.begin() + offset_[i + 1], grads[i].begin());
  }

 private:
  std::vector<size_t> offset_;
  std::vector<float> flat_;
};

// ", non-finite gradients in: a, b, ..." naming the tensors (at most 5), for the divergence error.
std::string nonfinite_gradients(const Model& model, const std::vector<std::vector<float>>& grads) {
  const auto params = model.params();
  std::vector<std::string> names;
  for (size_t i = 0; i < grads.size(); ++i)
    if (!std::all_of(grads[i].begin(), grads[i].end(), [](float x) { return std::isfinite(x); }))
      names.push_back(params[i]->name);
  if (names.empty()) return "";
  std::string list;
  for (size_t i = 0; i < std::min<size_t>(names.size(), 5); ++i) list += (i ? ", " : "") + names[i];
  return fmt::format(", non-finite gradients in {} tensor(s): {}{}", names.size(), list,
                     names.size() > 5 ? ", ..." : "");
}

nlohmann::json options_json(const TrainOptions& o) {
  return {{"batch", o.batch}, {"accum", o.accum}, {"steps", o.steps}, {"warmup", o.warmup},
          {"lr", o.lr}, {"min_lr_ratio", o.min_lr_ratio}, {"clip", o.clip},
          {"weight_decay", o.weight_decay}, {"seed", o.seed}, {"data_dir", o.data_dir},
          {"precision", o.precision}};
}

void options_from_json(const nlohmann::json& j, TrainOptions& o, const std::string& where) {
  auto integer = [&](const char* key, int64_t& field) {
    if (!j.contains(key) || !j.at(key).is_number_integer())
      throw Error(fmt::format("{}: options.{} must be an integer", where, key));
    field = j.at(key).get<int64_t>();
  };
  auto real = [&](const char* key, double& field) {
    if (!j.contains(key) || !j.at(key).is_number())
      throw Error(fmt::format("{}: options.{} must be a number", where, key));
    field = j.at(key).get<double>();
  };
  if (!j.is_object()) throw Error(fmt::format("{}: missing training options", where));
  integer("batch", o.batch);
  integer("accum", o.accum);
  integer("steps", o.steps);
  integer("warmup", o.warmup);
  real("lr", o.lr);
  real("min_lr_ratio", o.min_lr_ratio);
  real("clip", o.clip);
  real("weight_decay", o.weight_decay);
  if (!j.contains("seed") || !j.at("seed").is_number_unsigned())
    throw Error(fmt::format("{}: options.seed must be a non-negative integer", where));
  o.seed = j.at("seed").get<uint64_t>();
  if (j.contains("precision")) {  // runs saved before bf16 existed trained in f32
    if (!j.at("precision").is_string())
      throw Error(fmt::format("{}: options.precision must be a string", where));
    o.precision = j.at("precision").get<std::string>();
  } else {
    o.precision = "f32";
  }
  if (o.data_dir.empty()) {
    if (!j.contains("data_dir") || !j.at("data_dir").is_string())
      throw Error(fmt::format("{}: options.data_dir must be a string", where));
    o.data_dir = j.at("data_dir").get<std::string>();
  }
}

std::string duration(double s) {
  const auto t = static_cast<int64_t>(s);
  return t >= 3600 ? fmt::format("{}h{:02d}m", t / 3600, t / 60 % 60)
                   : fmt::format("{}m{:02d}s", t / 60, t % 60);
}

}  // namespace

void check_context(const data::Dataset& data, int64_t context) {
  if (data.synthetic() && context != data.example_tokens - 1)
    throw Error(fmt::format("{} holds {} examples of {} tokens: --context must be {}, not {}",
                            data.dir, data.task, data.example_tokens, data.example_tokens - 1, context));
  for (const auto* split : {&data.train, &data.val})
    if (static_cast<int64_t>(split->size()) < context + 1)
      throw Error(fmt::format("{}: a split has {} tokens, fewer than context+1 = {}", data.dir,
                              split->size(), context + 1));
}

namespace {
// The evaluation windows (or examples), batch by batch: body(x, y, rows).
template <typename F>
void for_each_eval_batch(const data::Dataset& data, int64_t context, int64_t batch, int64_t batches,
                         F&& body) {
  check_context(data, context);
  const int64_t available = static_cast<int64_t>(start_count(data.val, data.example_tokens, context));
  const int64_t windows = std::min(std::max<int64_t>(1, batch * batches),
                                   data.synthetic() ? available : std::numeric_limits<int64_t>::max());
  const int64_t last = available - 1;  // the last start that fits
  std::vector<int32_t> x, y;
  for (int64_t done = 0; done < windows;) {
    const int64_t b = std::min(batch, windows - done);
    std::vector<uint64_t> starts(static_cast<size_t>(b));
    for (int64_t i = 0; i < b; ++i)
      starts[i] = windows == 1 ? 0 : static_cast<uint64_t>((done + i) * last / (windows - 1));
    fill_batch(data.val, data.val_scored, data.example_tokens, context, starts, x, y);
    body(x, y, b);
    done += b;
  }
}
}  // namespace

EvalResult evaluate(const Model& model, const data::Dataset& data, int64_t context, int64_t batch,
                    int64_t batches) {
  const int64_t v = model.config().vocab;
  double loss = 0;
  int64_t scored = 0, correct = 0;
  Workspace ws;
  for_each_eval_batch(data, context, batch, batches, [&](const auto& x, const auto& y, int64_t b) {
    const auto logits = model.logits(x.data(), b, context, &ws);
    const int64_t n = b * context;
    const int64_t s = n - std::count(y.begin(), y.end(), kIgnoreTarget);
    loss += model::cross_entropy(logits.data(), y.data(), n, v, static_cast<float*>(nullptr)) *
            static_cast<double>(s);
    for (int64_t i = 0; i < n; ++i) {
      if (y[i] == kIgnoreTarget) continue;
      const float* row = logits.data() + i * v;
      correct += std::max_element(row, row + v) - row == y[i];
    }
    scored += s;
  });
  return {loss / static_cast<double>(scored), static_cast<double>(correct) / static_cast<double>(scored), scored};
}

std::vector<double> sketch_error(const Model& model, const data::Dataset& data, int64_t context,
                                 int64_t batch, int64_t batches) {
  std::vector<double> mean(static_cast<size_t>(model.config().layers), 0.0);
  int64_t count = 0;
  Workspace ws;
  for_each_eval_batch(data, context, batch, batches, [&](const auto& x, const auto&, int64_t b) {
    const auto e = model.sketch_error(x.data(), b, context, &ws);
    for (size_t l = 0; l < mean.size(); ++l) mean[l] += e[l];
    ++count;
  });
  for (auto& m : mean) m /= static_cast<double>(count);
  return mean;
}

double unigram_loss(const data::Dataset& data) {
  // Over the scored tokens only (all of running text; a synthetic task's answers).
  auto counted = [&](const std::vector<uint8_t>& scored, size_t i) { return !data.synthetic() || scored[i]; };
  std::vector<double> count(static_cast<size_t>(data.vocab), 1.0);
  double total = static_cast<double>(data.vocab);
  for (size_t i = 0; i < data.train.size(); ++i)
    if (counted(data.train_scored, i)) {
      count[data.train[i]] += 1;
      total += 1;
    }
  double loss = 0, n = 0;
  for (size_t i = 0; i < data.val.size(); ++i)
    if (counted(data.val_scored, i)) {
      loss -= std::log(count[data.val[i]] / total);
      n += 1;
    }
  return loss / n;
}

void validate_options(const TrainOptions& o) {
  util::check_range("--batch", o.batch, 1, int64_t{1} << 20);
  util::check_range("--accum", o.accum, 1, int64_t{1} << 20);
  if (o.steps != 0) util::check_range("--steps", o.steps, 1, int64_t{1} << 40);
  util::check_range("--warmup", o.warmup, 0, int64_t{1} << 40);
  util::check_positive("--lr", o.lr, 10.0);
  util::check_range("--min-lr-ratio", o.min_lr_ratio, 0.0, 1.0);
  util::check_range("--clip", o.clip, 0.0, 1e12);
  util::check_range("--weight-decay", o.weight_decay, 0.0, 10.0);
  util::check_range("--eval-every", o.eval_every, 0, int64_t{1} << 40);
  util::check_range("--eval-batches", o.eval_batches, 1, int64_t{1} << 20);
  util::check_range("--checkpoint-every", o.checkpoint_every, 0, int64_t{1} << 40);
  util::check_range("--keep", o.keep, 0, int64_t{1} << 20);
  util::check_range("--context-parallel", o.context_parallel, 1, int64_t{1} << 20);
  util::check_range("--time-budget (seconds)", o.time_budget_s, 0.0, 1e9);
  try {
    kernels::parse_precision(o.precision);
  } catch (const Error& e) {
    throw Error(fmt::format("--precision: {}", e.what()));
  }
}

TrainResult run_training(const TrainOptions& opts_in) {
  TrainOptions o = opts_in;
  validate_options(o);
  if (o.out_dir.empty()) throw Error("--out is required");
  if (o.resume.empty() && o.data_dir.empty())
    throw Error("--data is required (a directory made by `polysketch prepare`)");
  // Data parallelism (mpirun): rank 0 alone owns the run directory (lock, metrics, checkpoints,
  // progress); every rank computes its share of each step's micro-batches.
  const bool root = World::root();
  const int64_t ranks = World::size();
  World::split_context(static_cast<int>(o.context_parallel));
  const int64_t groups = World::data_groups(), cp = World::context_size();
  // One trainer per run directory; what killed trainers left behind is removed under the lock.
  std::unique_ptr<RunLock> lock;
  if (root) {
    fs::create_directories(o.out_dir);
    lock = std::make_unique<RunLock>(o.out_dir);
    remove_orphans(o.out_dir);
  }
  World::barrier();  // the other ranks read the checkpoint after the orphans are gone
  if (!root) o.progress = false;
  // Resume: model, optimizer and training options come from the checkpoint.
  std::unique_ptr<LoadedCheckpoint> ckpt;
  bool same_run = false;  // resuming a checkpoint of o.out_dir itself
  if (!o.resume.empty()) {
    ckpt = std::make_unique<LoadedCheckpoint>(load_checkpoint(o.resume, true));
    const auto st_path = ckpt->dir + "/state.json";
    options_from_json(ckpt->state.contains("options") ? ckpt->state.at("options") : nlohmann::json(),
                      o, st_path);
    try {
      validate_options(o);
    } catch (const Error& e) {
      throw Error(fmt::format("{}: invalid training options ({})", st_path, e.what()));
    }
    if (opts_in.steps > 0) o.steps = opts_in.steps;  // e.g. to extend a finished run
    // The saved accumulation is the whole step's (every group's micro-batches): split it anew.
    if (o.accum % groups != 0)
      throw Error(fmt::format("the run accumulates {} micro-batches per step, which {} data "
                              "groups cannot share evenly (use a number of groups, ranks / "
                              "--context-parallel, that divides {})", o.accum, groups, o.accum));
    o.accum /= groups;
    std::error_code ec;
    same_run = fs::equivalent(fs::path(ckpt->dir).parent_path(), o.out_dir, ec);
  } else if (o.steps == 0) {
    o.steps = 1000;
  }
  const auto existing = root ? list_checkpoints(o.out_dir) : std::vector<std::pair<int64_t, std::string>>{};
  if (!existing.empty() && !same_run)
    throw Error(fmt::format("{} already holds checkpoints (newest: {}); continue that run with "
                            "--resume {}, or choose another --out",
                            o.out_dir, existing.back().second, o.out_dir));
  const int64_t start_step = ckpt ? ckpt->state.at("step").get<int64_t>() : 0;
  if (start_step > o.steps)
    throw Error(fmt::format("the checkpoint is at step {}, past --steps {}", start_step, o.steps));
  const auto data = data::load_dataset(o.data_dir);
  ModelConfig mc = ckpt ? ckpt->config : o.model;
  if (!ckpt) mc.vocab = data.vocab;
  if (mc.vocab != data.vocab)
    throw Error(fmt::format("checkpoint vocab {} does not match the data's {}", mc.vocab, data.vocab));
  const int64_t ctx = mc.context;
  check_context(data, ctx);
  mc.validate();
  check_context_parallel(mc, cp);
  mc.check_fits_in_memory(o.batch * ctx / cp);
  // bf16 where it does not pay runs f32 products; every rank does as the slowest says (they time
  // on their own), so the ranks agree.
  std::string note;
  const auto requested = kernels::parse_precision(o.precision);
  const bool bf16_pays = !World::any(kernels::effective_precision(requested, &note) != requested);
  kernels::set_precision(bf16_pays ? requested : kernels::Precision::f32);
  if (o.progress && !bf16_pays)
    fmt::print(stderr, "{}\n", note.empty() ? "--precision bf16: another rank measured bf16 slower than f32; using f32 products" : note);
  Model model(mc);
  AdamW opt(model.params(), {0.9, 0.95, 1e-8, o.weight_decay});
  int64_t step = 0, saved_step = -1;
  if (ckpt) {
    model::load_weights(model, ckpt->weights, ckpt->dir + "/model.safetensors");
    load_optimizer(opt, model, ckpt->optimizer, ckpt->dir + "/optimizer_*.safetensors");
    step = start_step;
    opt.set_steps(step);
    if (same_run) saved_step = step;
  }
  std::unique_ptr<MetricsLog> metrics;
  if (root) metrics = std::make_unique<MetricsLog>((fs::path(o.out_dir) / "metrics.jsonl").string(), step);
  const int64_t global_accum = o.accum * groups;  // micro-batches per step over all groups
  TrainResult res;
  res.unigram_loss = unigram_loss(data);
  if (o.progress && ranks > 1)
    fmt::print(stderr, "{} ranks: {} data group(s) of {} (context parallel)\n", ranks, groups, cp);
  if (o.progress)
    fmt::print(stderr, "model: {} parameters, {} layers, width {}, {} heads, context {}, {}\n"
               "data: {} train / {} validation tokens; unigram baseline: loss {:.3f} (ppl {:.1f})\n",
               model.parameter_count(), mc.layers, mc.width, mc.heads, ctx,
               mechanism_name(mc.attention.mechanism), data.train.size(), data.val.size(),
               res.unigram_loss, std::exp(res.unigram_loss));

  auto state_json = [&] {
    auto opts = options_json(o);
    opts["accum"] = global_accum;  // the step's, whatever the number of ranks
    return nlohmann::json{{"options", opts}, {"tokens_seen", step * o.batch * global_accum * ctx}};
  };
  auto save = [&] {
    res.checkpoint = save_checkpoint(o.out_dir, step, model, &opt, data.tokenizer_bytes, state_json());
    prune_checkpoints(o.out_dir, o.keep);
    saved_step = step;
  };
  auto log_eval = [&] {
    const auto r = evaluate(model, data, ctx, o.batch, o.eval_batches);
    res.val_loss = r.loss;
    res.val_accuracy = r.accuracy;
    metrics->write({{"step", step}, {"val_loss", r.loss}, {"val_ppl", std::exp(r.loss)},
                   {"val_accuracy", r.accuracy}});
    if (o.progress)
      fmt::print(stderr, "\nstep {}: validation loss {:.4f}, perplexity {:.2f}, accuracy {:.4f}\n",
                 step, r.loss, std::exp(r.loss), r.accuracy);
  };

  // SIGINT, SIGTERM and SIGHUP only raise a flag while training and saving: the loop stops at
  // the end of the current step and the final checkpoint is written before the scope ends.
  StopScope signals;
  const bool tty = isatty(2);
  auto grads = model.zero_grads();
  TrainCache cache;
  std::vector<int32_t> x, y, xc, yc;
  std::optional<OverlappedSum> overlapped;  // a flat copy of the gradients: only with ranks to sum over
  if (ranks > 1) overlapped.emplace(grads);
  int64_t sent_before = World::payload_bytes(), chunk_before = World::chunk_bytes();
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t first = step;
  while (step < o.steps) {
    const auto ts = std::chrono::steady_clock::now();
    for (auto& g : grads) std::fill(g.begin(), g.end(), 0.f);
    double loss = 0;
    // This group's micro-batches: global indices group*accum .. group*accum+accum-1, so G
    // groups with --accum A compute the step of one process with --accum G*A. Under context
    // parallelism each rank of the group takes its chunk of every sequence, and its loss is its
    // share of the micro-batch's (the group's shares add up to it).
    for (int64_t a = 0; a < o.accum; ++a) {
      const int64_t micro = World::data_rank() * o.accum + a;
      sample_batch(data, ctx, o.batch, o.seed, step, micro, x, y);
      const uint64_t dropout_seed = o.seed ^ (static_cast<uint64_t>(step) * 0x9e3779b97f4a7c15ULL + micro);
      if (cp > 1) {
        const int64_t scored = static_cast<int64_t>(y.size()) - std::count(y.begin(), y.end(), kIgnoreTarget);
        take_chunk(x, o.batch, ctx, World::context_rank(), cp, xc);
        take_chunk(y, o.batch, ctx, World::context_rank(), cp, yc);
        const ContextChunk chunk{&World::chunk_exchange(), World::context_rank() * (ctx / cp), ctx, scored};
        loss += model.forward(cache, xc.data(), yc.data(), o.batch, ctx / cp, dropout_seed, &chunk);
      } else {
        loss += model.forward(cache, x.data(), y.data(), o.batch, ctx, dropout_seed);
      }
      if (ranks > 1 && a == o.accum - 1)  // the gradients are final: sum them as they complete
        model.backward(cache, grads, [&](size_t begin, size_t end) { overlapped->ready(grads, begin, end); });
      else
        model.backward(cache, grads);
    }
    if (ranks > 1) {
      overlapped->finish(grads);
      loss = World::sum(loss);
    }
    loss /= static_cast<double>(global_accum);
    if (global_accum > 1)
      for (auto& g : grads)
        for (float& v : g) v /= static_cast<float>(global_accum);
    const double norm = clip_grad_norm(grads, o.clip);
    if (!std::isfinite(loss) || !std::isfinite(norm))
      throw Error(fmt::format("training diverged at step {}: loss {}, gradient norm {}{} (lower "
                              "--lr?); nothing saved for this run after step {}",
                              step + 1, loss, norm, nonfinite_gradients(model, grads),
                              saved_step < 0 ? first : saved_step));
    const double lr = learning_rate(step, o.steps, o.warmup, o.lr, o.min_lr_ratio);
    opt.step(model.params(), grads, lr);
    ++step;
    res.losses.push_back(loss);
    res.train_loss = loss;
    const auto now = std::chrono::steady_clock::now();
    const double elapsed = std::chrono::duration<double>(now - t0).count();
    const double step_s = std::chrono::duration<double>(now - ts).count();
    const double tok_s = static_cast<double>(o.batch * global_accum * ctx) / step_s;
    if (metrics) {
      nlohmann::json record{{"step", step}, {"loss", loss}, {"lr", lr}, {"grad_norm", norm},
                            {"tokens_per_s", tok_s}, {"elapsed_s", elapsed}};
      if (ranks > 1) {  // what this rank contributed to the step's collectives
        record["allreduce_bytes"] = World::payload_bytes() - sent_before;
        sent_before = World::payload_bytes();
      }
      if (cp > 1) {  // and passed along its group: the attention block states
        record["context_bytes"] = World::chunk_bytes() - chunk_before;
        chunk_before = World::chunk_bytes();
      }
      metrics->write(record);
    }
    if (o.progress && (tty || step % 10 == 0 || step == o.steps)) {
      const double eta = elapsed / static_cast<double>(step - first) * static_cast<double>(o.steps - step);
      const int width = 24, filled = static_cast<int>(width * step / o.steps);
      fmt::print(stderr, "{}step {}/{} [{}{}] loss {:.4f} | {:.0f} tok/s | ETA {}{}",
                 tty ? "\r" : "", step, o.steps, std::string(filled, '#'),
                 std::string(width - filled, '.'), loss, tok_s, duration(eta), tty ? "   " : "\n");
    }
    // Every rank stops at the same step: rank 0's clock decides the time budget, and a signal
    // on any rank stops all (mpirun forwards SIGINT/SIGTERM to every rank).
    const bool out_of_time = World::any(root && o.time_budget_s > 0 && elapsed >= o.time_budget_s);
    const bool signalled = World::any(stop_signal() != 0);
    if (root && o.eval_every > 0 && step % o.eval_every == 0 && step < o.steps && !out_of_time && !signalled) log_eval();
    if (root && o.checkpoint_every > 0 && step % o.checkpoint_every == 0 && step < o.steps) save();
    if (signalled) {
      res.interrupted = true;
      if (o.progress) fmt::print(stderr, "\nsignal received: saving step {}\n", step);
      break;
    }
    if (out_of_time) {
      if (o.progress) fmt::print(stderr, "\ntime budget of {} reached at step {}\n", duration(o.time_budget_s), step);
      break;
    }
  }
  res.step = step;
  if (!root) {  // rank 0 saves and validates
    res.reported = false;
    return res;
  }
  if (saved_step != step) save();
  res.checkpoint = (fs::path(o.out_dir) / fmt::format("step-{:08d}", step)).string();
  // The checkpoint is safe: from here a second Ctrl-C may end the process at once.
  signals.end();
  res.interrupted = res.interrupted || stop_signal() != 0;
  log_eval();
  if (o.progress)
    fmt::print(stderr, "{}checkpoint: {}\n", res.interrupted ? "interrupted; " : "", res.checkpoint);
  return res;
}

}  // namespace polysketch::train
