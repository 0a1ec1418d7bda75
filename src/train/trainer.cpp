// run_training in its phases: the run is set up (options, resume, data, model, optimizer), then
// each step runs its micro-batches, updates the weights and reports; validation and saving
// happen between steps, and once more at the end.
#include "train/trainer.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <optional>

#include "data/windows.h"
#include "eval/evaluate.h"
#include "kernels/gemm.h"
#include "kernels/rng.h"
#include "train/adamw.h"
#include "train/checkpoint.h"
#include "model/time_chunks.h"
#include "train/chunked.h"
#include "train/distributed.h"
#include "train/run_dir.h"
#include "train/stop_signals.h"

namespace polysketch::train {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

// The batch of training step `step`, micro-batch `micro`: a pure function of (seed, step, micro),
// which is what makes resuming bit-exact without saving a data cursor.
// With `documents`, also the windows' document ids.
void sample_batch(const data::Dataset& data, int64_t context, int64_t batch, uint64_t seed,
                  int64_t step, int64_t micro, std::vector<int32_t>& x, std::vector<int32_t>& y,
                  std::vector<int32_t>* documents) {
  auto rng = kernels::Rng::derive(seed, static_cast<uint64_t>(step), static_cast<uint64_t>(micro) + 1);
  const uint64_t span = data::start_count(data.train, data.example_tokens, context);
  std::vector<uint64_t> starts(static_cast<size_t>(batch));
  for (auto& s : starts) s = rng.below(span);
  data::fill_batch(data.train, data.train_scored, data.example_tokens, context, starts, x, y,
                   &data.train_docs, documents);
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

std::string duration(double s) {
  const auto t = static_cast<int64_t>(s);
  return t >= 3600 ? fmt::format("{}h{:02d}m", t / 3600, t / 60 % 60)
                   : fmt::format("{}m{:02d}s", t / 60, t % 60);
}

// Everything a run is made of before its first step.
struct Setup {
  TrainOptions o;
  bool root = true;
  int64_t ranks = 1, groups = 1, cp = 1;
  std::unique_ptr<RunLock> lock;
  std::unique_ptr<LoadedCheckpoint> ckpt;
  bool same_run = false;  // resuming a checkpoint of o.out_dir itself
  int64_t start_step = 0;
  std::unique_ptr<model::Checkpoint> init;  // --init: the weights this run starts from
  std::string initialized_from;             // recorded in state.json (kept by resumes)
};

// Options, ranks, the run directory's lock and, when resuming, the checkpoint and its options.
Setup open_run(const TrainOptions& in) {
  Setup s;
  s.o = in;
  auto& o = s.o;
  validate_options(o);
  if (o.out_dir.empty() && !o.resume.empty()) o.out_dir = model::run_directory(o.resume);
  if (o.out_dir.empty()) throw Error("--out is required (or --resume, which continues the run it names)");
  if (o.resume.empty() && o.data_dir.empty())
    throw Error("--data is required (a directory made by `polysketch prepare`)");
  // Data parallelism (mpirun): rank 0 alone owns the run directory (lock, metrics, checkpoints,
  // progress); every rank computes its share of each step's micro-batches.
  s.root = World::root();
  s.ranks = World::size();
  World::split_context(static_cast<int>(o.context_parallel));
  s.groups = World::data_groups();
  s.cp = World::context_size();
  // One trainer per run directory; what killed trainers left behind is removed under the lock.
  if (s.root) {
    fs::create_directories(o.out_dir);
    s.lock = std::make_unique<RunLock>(o.out_dir);
    remove_orphans(o.out_dir);
  }
  World::barrier();  // the other ranks read the checkpoint after the orphans are gone
  if (!s.root) o.progress = false;
  if (!o.resume.empty()) {  // model, optimizer and training options come from the checkpoint
    s.ckpt = std::make_unique<LoadedCheckpoint>(load_checkpoint(o.resume, true));
    const auto st_path = s.ckpt->dir + "/state.json";
    options_from_json(s.ckpt->state.contains("options") ? s.ckpt->state.at("options") : nlohmann::json(),
                      o, st_path);
    try {
      validate_options(o);
    } catch (const Error& e) {
      throw Error(fmt::format("{}: invalid training options ({})", st_path, e.what()));
    }
    if (in.steps > 0) o.steps = in.steps;  // e.g. to extend a finished run
    // The saved accumulation is the whole step's (every group's micro-batches): split it anew.
    if (o.accum % s.groups != 0)
      throw Error(fmt::format("the run accumulates {} micro-batches per step, which {} data "
                              "groups cannot share evenly (use a number of groups, ranks / "
                              "--context-parallel, that divides {})", o.accum, s.groups, o.accum));
    o.accum /= s.groups;
    std::error_code ec;
    s.same_run = fs::equivalent(fs::path(s.ckpt->dir).parent_path(), o.out_dir, ec);
    s.start_step = s.ckpt->state.at("step").get<int64_t>();
    if (s.ckpt->state.contains("initialized_from") && s.ckpt->state.at("initialized_from").is_string())
      s.initialized_from = s.ckpt->state.at("initialized_from").get<std::string>();
  } else if (o.steps == 0) {
    o.steps = 1000;
  }
  if (!o.init.empty()) {
    s.init = std::make_unique<model::Checkpoint>(model::read_checkpoint(o.init));
    s.initialized_from = s.init->dir;
  }
  const auto existing = s.root ? list_checkpoints(o.out_dir) : std::vector<std::pair<int64_t, std::string>>{};
  if (!existing.empty() && !s.same_run)
    throw Error(fmt::format("{} already holds checkpoints (newest: {}); continue that run with "
                            "--resume {}, or choose another --out",
                            o.out_dir, existing.back().second, o.out_dir));
  if (s.start_step > o.steps)
    throw Error(fmt::format("the checkpoint is at step {}, past --steps {}", s.start_step, o.steps));
  return s;
}

// The run's model configuration, checked against the data and the machine.
ModelConfig model_config(const Setup& s, const data::Dataset& data) {
  ModelConfig mc = s.ckpt ? s.ckpt->config : s.init ? s.init->config : s.o.model;
  if (s.init) {
    if (s.o.init_context > 0) mc.context = s.o.init_context;
    if (mc.vocab != data.vocab || s.init->tokenizer_bytes != data.tokenizer_bytes)
      throw Error(fmt::format("--init {}: the checkpoint's tokenizer (vocab {}) is not the one {} was "
                              "prepared with (vocab {}); prepare the data with `polysketch prepare "
                              "--tokenizer {}`", s.init->dir, mc.vocab, data.dir, data.vocab, s.init->dir));
  }
  if (!s.ckpt && !s.init) mc.vocab = data.vocab;
  if (mc.vocab != data.vocab)
    throw Error(fmt::format("checkpoint vocab {} does not match the data's {}", mc.vocab, data.vocab));
  data::check_context(data, mc.context);
  mc.validate();
  check_context_parallel(mc, s.cp);
  if (s.o.chunk > 0) {
    if (s.cp > 1) throw Error("--chunk and --context-parallel: choose one (chunks inside each rank's part are not supported)");
    if (const auto problem = model::chunking_problem(mc, mc.context, s.o.chunk, "training"); !problem.empty()) throw Error(problem);
  }
  mc.check_fits_in_memory(s.o.batch * (s.o.chunk > 0 ? std::min(s.o.chunk, mc.context) : mc.context / s.cp),
                          s.o.chunk > 0 ? chunk_state_bytes(mc, s.o.batch, mc.context, s.o.chunk) : 0);
  return mc;
}

// Whether the run masks documents (--document-mask), checked before anything is built. Context
// parallelism does not yet carry document starts across ranks: there `auto` means off and `on`
// is refused (chunks in time, --chunk, do).
bool document_masking(const Setup& s, const data::Dataset& data) {
  if (s.cp > 1) {
    if (s.o.document_mask == "on")
      throw Error("--document-mask on: context parallelism does not support document masking; use "
                  "--document-mask off (or auto)");
    return false;
  }
  return data::document_mask(data, s.o.document_mask, "--document-mask");
}

// The run's compute context. bf16 where it does not pay runs f32 products; every rank does as
// the slowest says (they time on their own), so the ranks agree.
ComputeContext compute_context(const TrainOptions& o) {
  std::string note;
  const auto requested = parse_precision(o.precision);
  ComputeContext ctx = make_compute_context(requested, GemmBackend::automatic, &note);
  const bool bf16_pays = !World::any(ctx.precision != requested);
  if (!bf16_pays) ctx.precision = Precision::f32;
  if (o.progress && !bf16_pays)
    fmt::print(stderr, "{}\n", note.empty() ? "--precision bf16: another rank measured bf16 slower than f32; using f32 products" : note);
  return ctx;
}

// The training loop over a set-up run.
class Loop {
 public:
  Loop(Setup& s, const data::Dataset& data, const ModelConfig& mc, const ComputeContext& compute, bool masked)
      : s_(s), o_(s.o), data_(data), ctx_(mc.context), masked_(masked), model_(mc, compute),
        opt_(model_.params(), {0.9, 0.95, 1e-8, o_.weight_decay}), grads_(model_.zero_grads()),
        global_accum_(o_.accum * s.groups) {
    if (s.init) model::load_weights(model_, s.init->weights, s.init->dir + "/model.safetensors");
    if (s.ckpt) {
      model::load_weights(model_, s.ckpt->weights, s.ckpt->dir + "/model.safetensors");
      load_optimizer(opt_, model_, s.ckpt->optimizer, s.ckpt->dir + "/optimizer_*.safetensors");
      step_ = s.start_step;
      opt_.set_steps(step_);
      if (s.same_run) saved_step_ = step_;
    }
    if (s.root) metrics_ = std::make_unique<MetricsLog>((fs::path(o_.out_dir) / "metrics.jsonl").string(), step_);
    if (s.ranks > 1) overlapped_.emplace(grads_);
    res_.unigram_loss = eval::unigram_loss(data);
    if (o_.progress && o_.chunk > 0)
      fmt::print(stderr, "chunked: {} chunks of {} tokens per sequence, block states kept for the "
                 "recomputation {:.1f} MB\n", (ctx_ + o_.chunk - 1) / o_.chunk, std::min(o_.chunk, ctx_),
                 chunk_state_bytes(mc, o_.batch, ctx_, o_.chunk) / 1e6);
    if (o_.progress && s.ranks > 1)
      fmt::print(stderr, "{} ranks: {} data group(s) of {} (context parallel)\n", s.ranks, s.groups, s.cp);
    if (o_.progress)
      fmt::print(stderr, "model: {} parameters, {} layers, width {}, {} heads, context {}, {}\n"
                 "data: {} train / {} validation tokens{}; unigram baseline: loss {:.3f} (ppl {:.1f})\n",
                 model_.parameter_count(), mc.layers, mc.width, mc.heads, ctx_,
                 mechanism_name(mc.attention.mechanism), data.train.size(), data.val.size(),
                 data.has_documents() ? fmt::format(" in {} / {} documents, document masking {}",
                                                    data.train_docs.size(), data.val_docs.size(),
                                                    masked_ ? "on" : "off")
                                      : "",
                 res_.unigram_loss, std::exp(res_.unigram_loss));
  }

  TrainResult run() {
    // SIGINT, SIGTERM and SIGHUP only raise a flag while training and saving: the loop stops at
    // the end of the current step and the final checkpoint is written before the scope ends.
    StopScope signals;
    sent_before_ = World::payload_bytes();
    chunk_before_ = World::chunk_bytes();
    t0_ = Clock::now();
    first_ = step_;
    while (step_ < o_.steps) {
      const auto ts = Clock::now();
      report(update(micro_batches()), ts);
      if (stop_between_steps()) break;
    }
    res_.step = step_;
    if (!s_.root) {  // rank 0 saves and validates
      res_.reported = false;
      return res_;
    }
    if (saved_step_ != step_) save();
    res_.checkpoint = (fs::path(o_.out_dir) / fmt::format("step-{:08d}", step_)).string();
    // The checkpoint is safe: from here a second Ctrl-C may end the process at once.
    signals.end();
    res_.interrupted = res_.interrupted || stop_signal() != 0;
    log_eval();
    if (o_.progress)
      fmt::print(stderr, "{}checkpoint: {}\n", res_.interrupted ? "interrupted; " : "", res_.checkpoint);
    return res_;
  }

 private:
  // This group's micro-batches of the step, forward and backward, gradients summed over the
  // ranks: global indices group*accum .. group*accum+accum-1, so G groups with --accum A
  // compute the step of one process with --accum G*A. Under context parallelism each rank of
  // the group takes its chunk of every sequence, and its loss is its share of the micro-batch's
  // (the group's shares add up to it). Returns the step's loss.
  double micro_batches() {
    for (auto& g : grads_) std::fill(g.begin(), g.end(), 0.f);
    const int64_t cp = s_.cp;
    double loss = 0;
    for (int64_t a = 0; a < o_.accum; ++a) {
      const int64_t micro = World::data_rank() * o_.accum + a;
      sample_batch(data_, ctx_, o_.batch, o_.seed, step_, micro, x_, y_, masked_ ? &docs_ : nullptr);
      const uint64_t dropout_seed = o_.seed ^ (static_cast<uint64_t>(step_) * 0x9e3779b97f4a7c15ULL + micro);
      if (cp > 1) {
        const int64_t scored = static_cast<int64_t>(y_.size()) - std::count(y_.begin(), y_.end(), kIgnoreTarget);
        take_chunk(x_, o_.batch, ctx_, World::context_rank(), cp, xc_);
        take_chunk(y_, o_.batch, ctx_, World::context_rank(), cp, yc_);
        const ContextChunk chunk{&World::chunk_exchange(), World::context_rank() * (ctx_ / cp), ctx_, scored};
        loss += model_.forward(cache_, xc_.data(), yc_.data(), o_.batch, ctx_ / cp, dropout_seed, &chunk);
      } else if (o_.chunk > 0) {
        loss += chunked_forward_backward(model_, cache_, x_.data(), y_.data(), o_.batch, ctx_, o_.chunk,
                                         dropout_seed, grads_, masked_ ? docs_.data() : nullptr);
        if (overlapped_ && a == o_.accum - 1) overlapped_->ready(grads_, 0, grads_.size());
        continue;  // backward done, chunk by chunk
      } else {
        loss += model_.forward(cache_, x_.data(), y_.data(), o_.batch, ctx_, dropout_seed, nullptr,
                               masked_ ? docs_.data() : nullptr);
      }
      if (overlapped_ && a == o_.accum - 1)  // the gradients are final: sum them as they complete
        model_.backward(cache_, grads_, [&](size_t begin, size_t end) { overlapped_->ready(grads_, begin, end); });
      else
        model_.backward(cache_, grads_);
    }
    if (overlapped_) {
      overlapped_->finish(grads_);
      loss = World::sum(loss);
    }
    return loss / static_cast<double>(global_accum_);
  }

  struct StepStats {
    double loss, lr, grad_norm;
  };
  // Averages, clips and applies the gradients (AdamW), or throws Error if the step diverged.
  StepStats update(double loss) {
    if (global_accum_ > 1)
      for (auto& g : grads_)
        for (float& v : g) v /= static_cast<float>(global_accum_);
    const double norm = clip_grad_norm(grads_, o_.clip);
    if (!std::isfinite(loss) || !std::isfinite(norm))
      throw Error(fmt::format("training diverged at step {}: loss {}, gradient norm {}{} (lower "
                              "--lr?); nothing saved for this run after step {}",
                              step_ + 1, loss, norm, nonfinite_gradients(model_, grads_),
                              saved_step_ < 0 ? first_ : saved_step_));
    const double lr = learning_rate(step_, o_.steps, o_.warmup, o_.lr, o_.min_lr_ratio);
    opt_.step(model_.params(), grads_, lr);
    ++step_;
    res_.losses.push_back(loss);
    res_.train_loss = loss;
    return {loss, lr, norm};
  }

  // The step's metrics record and progress line.
  void report(const StepStats& st, Clock::time_point started) {
    const auto now = Clock::now();
    elapsed_ = std::chrono::duration<double>(now - t0_).count();
    const double step_s = std::chrono::duration<double>(now - started).count();
    const double tok_s = static_cast<double>(o_.batch * global_accum_ * ctx_) / step_s;
    if (metrics_) {
      nlohmann::json record{{"step", step_}, {"loss", st.loss}, {"lr", st.lr}, {"grad_norm", st.grad_norm},
                            {"tokens_per_s", tok_s}, {"elapsed_s", elapsed_}};
      if (s_.ranks > 1) {  // what this rank contributed to the step's collectives
        record["allreduce_bytes"] = World::payload_bytes() - sent_before_;
        sent_before_ = World::payload_bytes();
      }
      if (s_.cp > 1) {  // and passed along its group: the attention block states
        record["context_bytes"] = World::chunk_bytes() - chunk_before_;
        chunk_before_ = World::chunk_bytes();
      }
      metrics_->write(record);
    }
    if (o_.progress && (tty_ || step_ % 10 == 0 || step_ == o_.steps)) {
      const double eta = elapsed_ / static_cast<double>(step_ - first_) * static_cast<double>(o_.steps - step_);
      const int width = 24, filled = static_cast<int>(width * step_ / o_.steps);
      fmt::print(stderr, "{}step {}/{} [{}{}] loss {:.4f} | {:.0f} tok/s | ETA {}{}",
                 tty_ ? "\r" : "", step_, o_.steps, std::string(filled, '#'),
                 std::string(width - filled, '.'), st.loss, tok_s, duration(eta), tty_ ? "   " : "\n");
    }
  }

  // Validation and saving between steps; true when training stops here. Every rank stops at
  // the same step: rank 0's clock decides the time budget, and a signal on any rank stops all
  // (mpirun forwards SIGINT/SIGTERM to every rank).
  bool stop_between_steps() {
    const bool out_of_time = World::any(s_.root && o_.time_budget_s > 0 && elapsed_ >= o_.time_budget_s);
    const bool signalled = World::any(stop_signal() != 0);
    const bool more = step_ < o_.steps;
    if (s_.root && o_.eval_every > 0 && step_ % o_.eval_every == 0 && more && !out_of_time && !signalled) log_eval();
    if (s_.root && o_.checkpoint_every > 0 && step_ % o_.checkpoint_every == 0 && more) save();
    if (signalled) {
      res_.interrupted = true;
      if (o_.progress) fmt::print(stderr, "\nsignal received: saving step {}\n", step_);
      return true;
    }
    if (out_of_time && o_.progress)
      fmt::print(stderr, "\ntime budget of {} reached at step {}\n", duration(o_.time_budget_s), step_);
    return out_of_time;
  }

  void save() {
    auto opts = options_json(o_);
    opts["accum"] = global_accum_;  // the step's, whatever the number of ranks
    nlohmann::json state{{"options", opts}, {"tokens_seen", step_ * o_.batch * global_accum_ * ctx_}};
    if (!s_.initialized_from.empty()) state["initialized_from"] = s_.initialized_from;
    res_.checkpoint = save_checkpoint(o_.out_dir, step_, model_, &opt_, data_.tokenizer_bytes, state);
    prune_checkpoints(o_.out_dir, o_.keep);
    saved_step_ = step_;
  }

  void log_eval() {
    // With --chunk, validated a chunk at a time too (a whole window's logits alone are
    // context x vocab floats: 16 GB at 1M tokens).
    const auto r = eval::evaluate(model_, data_, ctx_, o_.batch, o_.eval_batches, false, masked_, o_.chunk);
    res_.val_loss = r.loss;
    res_.val_accuracy = r.accuracy;
    metrics_->write({{"step", step_}, {"val_loss", r.loss}, {"val_ppl", std::exp(r.loss)},
                    {"val_accuracy", r.accuracy}});
    if (o_.progress)
      fmt::print(stderr, "\nstep {}: validation loss {:.4f}, perplexity {:.2f}, accuracy {:.4f}\n",
                 step_, r.loss, std::exp(r.loss), r.accuracy);
  }

  Setup& s_;
  const TrainOptions& o_;
  const data::Dataset& data_;
  const int64_t ctx_;
  const bool masked_;  // document masking
  Model model_;
  AdamW opt_;
  std::vector<std::vector<float>> grads_;
  TrainCache cache_;
  std::optional<OverlappedSum> overlapped_;  // a flat copy of the gradients: only with ranks to sum over
  std::unique_ptr<MetricsLog> metrics_;
  const int64_t global_accum_;  // micro-batches per step over all groups
  TrainResult res_;
  std::vector<int32_t> x_, y_, xc_, yc_, docs_;
  int64_t step_ = 0, saved_step_ = -1, first_ = 0;
  int64_t sent_before_ = 0, chunk_before_ = 0;
  Clock::time_point t0_;
  double elapsed_ = 0;
  const bool tty_ = isatty(2);
};

}  // namespace

TrainResult run_training(const TrainOptions& options) {
  Setup s = open_run(options);
  const auto data = data::load_dataset(s.o.data_dir);
  const ModelConfig mc = model_config(s, data);
  const bool masked = document_masking(s, data);
  return Loop(s, data, mc, compute_context(s.o), masked).run();
}

}  // namespace polysketch::train
