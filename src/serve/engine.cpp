#include "serve/engine.h"

#include <fmt/format.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <numeric>

#include "attention/mechanism.h"
#include "data/text_stream.h"
#include "kernels/rng.h"
#include "kernels/vec.h"

namespace polysketch::serve {

namespace {
using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Keeps the last samples of a latency (a window for the metrics' quantiles).
void record(std::vector<double>& samples, double x) {
  constexpr size_t kWindow = 4096;
  if (samples.size() == kWindow) samples.erase(samples.begin(), samples.begin() + kWindow / 2);
  samples.push_back(x);
}

// The length of the longest end of `text` that begins one of the stop strings: text that may
// still turn into a stop string, so it is not shown yet.
size_t stop_prefix(const std::string& text, const std::vector<std::string>& stops) {
  size_t keep = 0;
  for (const auto& s : stops)
    for (size_t k = std::min(s.size() - 1, text.size()); k > keep; --k)
      if (text.compare(text.size() - k, k, s, 0, k) == 0) {
        keep = k;
        break;
      }
  return keep;
}
// FNV-1a over token ids: the prefix cache's key.
constexpr uint64_t kHashBasis = 1469598103934665603ULL;
uint64_t hash_tokens(const int32_t* tokens, int64_t n, uint64_t h) {
  for (int64_t i = 0; i < n; ++i) h = (h ^ static_cast<uint32_t>(tokens[i])) * 1099511628211ULL;
  return h;
}

TokenLogprob token_logprob(const std::vector<float>& logits, int32_t id, int top) {
  const double lse = kernels::log_sum_exp(static_cast<int64_t>(logits.size()), logits.data());
  TokenLogprob t{id, static_cast<float>(logits[static_cast<size_t>(id)] - lse), {}};
  std::vector<int32_t> ids(logits.size());
  std::iota(ids.begin(), ids.end(), 0);
  const auto k = std::min(ids.size(), static_cast<size_t>(top));
  std::partial_sort(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(k), ids.end(), [&](int32_t a, int32_t b) {
    return logits[static_cast<size_t>(a)] > logits[static_cast<size_t>(b)] ||
           (logits[static_cast<size_t>(a)] == logits[static_cast<size_t>(b)] && a < b);
  });
  for (size_t i = 0; i < k; ++i) t.top.emplace_back(ids[i], static_cast<float>(logits[static_cast<size_t>(ids[i])] - lse));
  return t;
}
}  // namespace

bool valid_session_id(const std::string& id) {
  return !id.empty() && id.size() <= 64 && std::all_of(id.begin(), id.end(), [](char c) {
           return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
         });
}

bool Job::next_event(Event& e, double timeout_s) {
  std::unique_lock lock(mutex_);
  if (!cv_.wait_for(lock, std::chrono::duration<double>(timeout_s), [&] { return !events_.empty(); })) return false;
  e = std::move(events_.front());
  events_.pop_front();
  return true;
}

void Job::push(Event e) {
  {
    std::lock_guard lock(mutex_);
    events_.push_back(std::move(e));
  }
  cv_.notify_all();
}

// One choice of a running job: its state, its sampler and its text.
struct Engine::Sequence {
  std::shared_ptr<DecodeState> state;
  kernels::Rng rng;
  std::optional<data::TextStream> text;
  std::string generated;  // the text so far (from text.push)
  size_t shown = 0;       // of it, sent
  int64_t tokens = 0;
  std::vector<int32_t> pending;  // tokens of text not sent yet
  std::vector<TokenLogprob> pending_logprobs;
  bool done = false;
  Clock::time_point last;
};

// A prompt being read (by the reader thread): the state, the tokens going into it, how many are in.
struct Engine::Prompt {
  std::shared_ptr<Job> job;
  std::shared_ptr<DecodeState> state;
  std::vector<int32_t> input;
  int64_t read = 0;
  bool cacheable = false;       // the state began empty: its prefixes may be cached
  uint64_t hash = kHashBasis;   // of input[0, read), when cacheable
  std::string error;            // why reading failed
  std::atomic<bool> done{false};
};

struct Engine::Running {
  std::shared_ptr<Job> job;
  std::vector<Sequence> seqs;
  Clock::time_point submitted;
  bool begun = false, started = false, first = true, released = false;
  int64_t reserved = 0;  // state bytes reserved for it (released with it)
  std::shared_ptr<Prompt> prompt;  // until the prompt is read
  std::shared_ptr<DecodeState> session_before;  // the session's state when the job started
  std::vector<Event> ends;  // the choices' last events, sent when the job leaves
};

// A cached prompt prefix: its tokens (a hash match is checked against them) and its state.
struct Engine::Prefix {
  std::vector<int32_t> tokens;
  std::shared_ptr<const DecodeState> state;
  int64_t used = 0;
};

// A job is over (answered, failed or cancelled): its place counts for new jobs at once, before
// the step that ends it has run.
void Engine::release(Running& r) {
  if (r.released) return;
  r.released = true;
  std::lock_guard lock(mutex_);
  --occupied_;
  reserved_ -= r.reserved;
}

// A kept sequence: its state, the state before its last request (rollback) and its last use.
struct Engine::Session {
  std::shared_ptr<DecodeState> state, previous;
  int64_t used = 0;
};

Engine::Engine(const Model& model, const data::Tokenizer& tokenizer, EngineOptions options)
    : model_(model),
      tokenizer_(tokenizer),
      options_(options),
      block_(model.config().attention.block),
      fixed_state_(attention::uses_sketch(model.config().attention.mechanism)),
      stride_((options.prefix_stride + block_ - 1) / block_ * block_),
      base_bytes_(DecodeState(model.config()).bytes()),
      token_bytes_(fixed_state_ ? 0 : 2 * static_cast<int64_t>(sizeof(float)) * model.config().layers * model.config().width),
      threads_(omp_get_max_threads()),
      thread_([this] { loop(); }),
      reader_([this] { read_prompts(); }) {}

Engine::~Engine() {
  stop();
  if (thread_.joinable()) thread_.join();
  {
    std::lock_guard lock(reader_mutex_);
    reader_stop_ = true;
  }
  reader_wake_.notify_all();
  if (reader_.joinable()) reader_.join();
  save_sessions();
}

std::string Engine::session_path(const std::string& id) const {
  return (std::filesystem::path(options_.session_dir) / (id + ".state")).string();
}

// Caller holds mutex_.
Engine::Session* Engine::find_session(const std::string& id) {
  if (!valid_session_id(id)) return nullptr;
  if (const auto it = sessions_.find(id); it != sessions_.end()) {
    it->second->used = ++clock_;
    return it->second.get();
  }
  std::error_code ec;
  if (options_.session_dir.empty() || !std::filesystem::exists(session_path(id), ec)) return nullptr;
  auto state = std::make_shared<DecodeState>(
      DecodeState::load(session_path(id), model_.config(), options_.model_identity));
  keep_session(id, std::move(state), nullptr);
  return sessions_.at(id).get();
}

// Caller holds mutex_.
void Engine::keep_session(const std::string& id, std::shared_ptr<DecodeState> state,
                          std::shared_ptr<DecodeState> previous) {
  auto& s = sessions_[id];
  if (!s) s = std::make_unique<Session>();
  s->state = std::move(state);
  s->previous = std::move(previous);
  s->used = ++clock_;
  fit_budget();
}

// Caller holds mutex_. The longest cached prefix of `prompt` (at a block boundary), or null.
std::shared_ptr<const DecodeState> Engine::find_prefix(const std::vector<int32_t>& prompt, int64_t& length) {
  if (prefixes_.empty()) return nullptr;
  std::vector<uint64_t> hashes;  // of prompt[0, (i + 1) b)
  uint64_t h = kHashBasis;
  for (int64_t end = block_; end <= static_cast<int64_t>(prompt.size()); end += block_)
    hashes.push_back(h = hash_tokens(prompt.data() + end - block_, block_, h));
  for (size_t i = hashes.size(); i-- > 0;) {
    const auto it = prefixes_.find(hashes[i]);
    const auto n = static_cast<std::ptrdiff_t>(i + 1) * block_;
    if (it == prefixes_.end() || !std::equal(prompt.begin(), prompt.begin() + n, it->second->tokens.begin(), it->second->tokens.end()))
      continue;
    it->second->used = ++clock_;
    ++metrics_.prefix_hits;
    length = n;
    return it->second->state;
  }
  return nullptr;
}

// Caller holds mutex_.
void Engine::keep_prefix(const std::vector<int32_t>& prompt, int64_t length, uint64_t hash, const DecodeState& state) {
  auto& p = prefixes_[hash];
  if (!p) {
    if (state.bytes() > options_.memory_budget / 4) {  // not worth evicting most of what is kept
      prefixes_.erase(hash);
      return;
    }
    p = std::make_unique<Prefix>(Prefix{{prompt.begin(), prompt.begin() + length}, std::make_shared<const DecodeState>(state), 0});
  }
  p->used = ++clock_;
  fit_budget();
}

// Caller holds mutex_. Evicts the least recently used sessions and prefixes until at most
// max_sessions sessions and memory_budget bytes are kept; an evicted session goes to the
// directory (if any).
void Engine::fit_budget() {
  for (;;) {
    int64_t bytes = 0, session_used = INT64_MAX, prefix_used = INT64_MAX;
    const std::string* session = nullptr;  // the least recently used of each kind
    std::optional<uint64_t> prefix;
    for (const auto& [id, s] : sessions_) {
      bytes += s->state->bytes() + (s->previous && s->previous != s->state && s->previous != empty_ ? s->previous->bytes() : 0);
      if (s->used < session_used) {
        session_used = s->used;
        session = &id;
      }
    }
    for (const auto& [h, p] : prefixes_) {
      bytes += p->state->bytes();
      if (p->used < prefix_used) {
        prefix_used = p->used;
        prefix = h;
      }
    }
    const bool too_many = static_cast<int64_t>(sessions_.size()) > options_.max_sessions;
    if (!too_many && bytes <= options_.memory_budget) return;
    if (!too_many && prefix_used < session_used) {
      prefixes_.erase(*prefix);
      continue;
    }
    if (!options_.session_dir.empty()) {
      try {
        sessions_.at(*session)->state->save(session_path(*session), options_.model_identity);
      } catch (const Error& e) {  // kept in memory rather than lost; said once per failure
        fmt::print(stderr, "session {} not evicted: {}\n", *session, e.what());
        return;
      }
    }
    sessions_.erase(*session);
  }
}

void Engine::save_sessions() {
  std::lock_guard lock(mutex_);
  if (options_.session_dir.empty()) return;
  for (const auto& [id, s] : sessions_) s->state->save(session_path(id), options_.model_identity);
}

bool Engine::submit(const std::shared_ptr<Job>& job) {
  {
    std::lock_guard lock(mutex_);
    // Room: a free sequence slot, or a place in the queue.
    if (stopping_ || occupied_ >= options_.parallel + options_.max_queue) return false;
    ++occupied_;
    waiting_.push_back(job);
    ++metrics_.requests;
  }
  wake_.notify_all();
  return true;
}

void Engine::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
}

std::vector<SessionInfo> Engine::sessions() const {
  std::lock_guard lock(mutex_);
  std::map<std::string, SessionInfo> out;
  std::error_code ec;
  if (!options_.session_dir.empty())
    for (const auto& f : std::filesystem::directory_iterator(options_.session_dir, ec))
      if (f.path().extension() == ".state") {
        const std::string id = f.path().stem().string();
        out[id] = {id, -1, static_cast<int64_t>(f.file_size(ec))};  // on disk: position unread
      }
  for (const auto& [id, s] : sessions_) out[id] = {id, s->state->position(), s->state->bytes()};
  std::vector<SessionInfo> list;
  for (auto& [id, info] : out) list.push_back(info);
  return list;
}

std::optional<SessionInfo> Engine::session(const std::string& id) {
  std::lock_guard lock(mutex_);
  const Session* s = find_session(id);
  if (!s) return std::nullopt;
  return SessionInfo{id, s->state->position(), s->state->bytes()};
}

bool Engine::erase_session(const std::string& id) {
  if (!valid_session_id(id)) return false;
  std::lock_guard lock(mutex_);
  std::error_code ec;
  const bool on_disk = !options_.session_dir.empty() && std::filesystem::remove(session_path(id), ec);
  return sessions_.erase(id) > 0 || on_disk;
}

bool Engine::fork_session(const std::string& from, const std::string& to) {
  if (!valid_session_id(to)) return false;
  std::lock_guard lock(mutex_);
  const Session* s = find_session(from);
  if (!s) return false;
  keep_session(to, std::make_shared<DecodeState>(*s->state), nullptr);
  return true;
}

bool Engine::rollback_session(const std::string& id) {
  std::lock_guard lock(mutex_);
  Session* s = find_session(id);
  if (!s || !s->previous) return false;
  s->state = std::move(s->previous);
  return true;
}

EngineMetrics Engine::metrics() const {
  std::lock_guard lock(mutex_);
  auto m = metrics_;
  m.queued = static_cast<int64_t>(waiting_.size());
  m.sessions = static_cast<int64_t>(sessions_.size());
  for (const auto& [id, s] : sessions_) m.state_bytes += s->state->bytes();
  m.prefixes = static_cast<int64_t>(prefixes_.size());
  for (const auto& [h, p] : prefixes_) m.prefix_bytes += p->state->bytes();
  return m;
}

// Bytes a job's states may reach (its history as far as known when asked).
int64_t Engine::state_need(const Job& job) const {
  const auto tokens = job.history_tokens + static_cast<int64_t>(job.prompt.size()) + job.max_tokens;
  return job.choices * (base_bytes_ + token_bytes_ * tokens);
}

// A newly admitted job's starting state, for the reader: its session's (a copy: the session keeps
// its own until the job ends), else the longest cached prefix of its prompt, else an empty one.
void Engine::begin(Running& r) {
  auto& job = *r.job;
  r.begun = true;
  r.prompt = std::make_shared<Prompt>();
  auto& p = *r.prompt;
  p.job = r.job;
  if (!job.session.empty()) {
    std::lock_guard lock(mutex_);
    if (const Session* s = find_session(job.session)) {
      r.session_before = s->state;
      p.state = std::make_shared<DecodeState>(*s->state);
      job.history_tokens = job.cached_tokens = p.state->position();
    } else {  // a new session: its rollback goes back to the start
      if (!empty_) empty_ = std::make_shared<DecodeState>(model_.config());
      r.session_before = empty_;
    }
  }
  if (p.state) {
    p.input = model::prompt_input(*p.state, job.prompt);
    const int64_t need = state_need(job);
    {
      std::lock_guard lock(mutex_);  // the history is known now
      reserved_ += need - r.reserved;
      r.reserved = need;
    }
    if (options_.state_budget > 0 && need > options_.state_budget)
      throw Error(fmt::format("session '{}' ({} tokens) with this prompt and max_tokens needs {:.0f} MiB of KV "
                              "cache, more than the server's --state-mb of {:.0f} MiB", job.session,
                              job.history_tokens, static_cast<double>(need) / (1 << 20),
                              static_cast<double>(options_.state_budget) / (1 << 20)));
    return;
  }
  p.state = std::make_shared<DecodeState>(model_.config());
  p.input = model::prompt_input(*p.state, job.prompt);
  p.cacheable = fixed_state_ && stride_ > 0;
  if (!p.cacheable) return;
  std::shared_ptr<const DecodeState> hit;
  {
    std::lock_guard lock(mutex_);
    hit = find_prefix(p.input, p.read);
  }
  if (!hit) return;
  *p.state = DecodeState(*hit);
  p.hash = hash_tokens(p.input.data(), p.read, kHashBasis);
  job.cached_tokens = p.read;
}

// The reader thread: prompts in order of admission, a piece at a time, each ending at a multiple
// of the block size for a sketch state (the same arithmetic whether a prompt is read alone, beside
// decoding or from a cached prefix); a KV cache takes a prompt at once. Prefix states are kept every
// stride_ tokens and at a prompt's last block boundary. While sequences are being decoded the
// threads are shared between the two.
void Engine::read_prompts() {
  for (;;) {
    std::shared_ptr<Prompt> p;
    {
      std::unique_lock lock(reader_mutex_);
      reader_wake_.wait(lock, [&] { return reader_stop_ || !to_read_.empty(); });
      if (reader_stop_) return;
      p = std::move(to_read_.front());
      to_read_.pop_front();
    }
    reading_ = true;
    try {
      const auto n = static_cast<int64_t>(p->input.size());
      while (p->read < n && !p->job->cancelled && !reader_stop_) {
        omp_set_num_threads(decoding_ ? std::max(1, threads_ / 2) : threads_);
        const int64_t len = fixed_state_ ? std::min(n - p->read, block_ - p->state->position() % block_) : n - p->read;
        model_.prefill(*p->state, p->input.data() + p->read, len);
        if (p->cacheable) p->hash = hash_tokens(p->input.data() + p->read, len, p->hash);
        p->read += len;
        if (p->cacheable && p->read % block_ == 0 && (p->read % stride_ == 0 || p->read == n / block_ * block_)) {
          std::lock_guard lock(mutex_);
          keep_prefix(p->input, p->read, p->hash, *p->state);
        }
      }
    } catch (const Error& e) {
      p->error = e.what();
    }
    reading_ = false;
    p->done = true;
    {
      std::lock_guard lock(mutex_);
      ++prompts_read_;
    }
    wake_.notify_all();
  }
}

// The prompt is in: the job's choices start from copies of its state.
void Engine::start(Running& r) {
  auto& job = *r.job;
  for (int c = 0; c < job.choices; ++c) {
    Sequence s{c == 0 ? r.prompt->state : std::make_shared<DecodeState>(*r.prompt->state),
               model::sampling_rng(job.sampling.seed + static_cast<uint64_t>(c)),
               std::nullopt, {}, 0, 0, {}, {}, false, Clock::now()};
    s.text.emplace(tokenizer_, job.prompt);
    r.seqs.push_back(std::move(s));
  }
  r.prompt.reset();
  job.tokens.assign(static_cast<size_t>(job.choices), {});
  r.started = true;
  std::lock_guard lock(mutex_);
  metrics_.prompt_tokens += static_cast<int64_t>(job.prompt.size());
  metrics_.cached_tokens += job.cached_tokens;
}

// One token for every running sequence: drawn from its last logits, sent (as far as stop strings
// allow), then all states advanced by one batched step.
void Engine::decode(std::vector<Running>& active) {
  const int32_t end_of_document = tokenizer_.end_of_document();
  std::vector<DecodeState*> states;
  std::vector<int32_t> tokens;
  for (auto& r : active) {
    if (!r.started || r.job->cancelled) continue;
    auto& job = *r.job;
    for (size_t c = 0; c < r.seqs.size(); ++c) {
      auto& s = r.seqs[c];
      if (s.done) continue;
      const auto& logits = s.state->last_logits();
      const int32_t id = model::sample(logits, job.sampling, s.rng, s.text->allowed());
      if (job.logprobs >= 0) s.pending_logprobs.push_back(token_logprob(logits, id, job.logprobs));
      s.generated += s.text->push(id);
      s.pending.push_back(id);
      job.tokens[c].push_back(id);
      ++s.tokens;
      std::string reason;
      size_t end = s.generated.size();
      if (id == end_of_document && !job.ignore_eos) reason = "stop";
      for (const auto& stop : job.stop)
        if (const auto at = s.generated.find(stop, s.shown); at != std::string::npos && at < end) {
          end = at;
          reason = "stop";
        }
      if (reason.empty() && s.tokens >= job.max_tokens) reason = "length";
      if (reason.empty()) end -= stop_prefix(s.generated, job.stop);
      Event e{static_cast<int>(c), s.generated.substr(s.shown, end - s.shown), {}, {}, false, {}, {}};
      if (!e.text.empty() || !reason.empty()) {
        s.shown = end;
        e.tokens = std::move(s.pending);
        e.logprobs = std::move(s.pending_logprobs);
        s.pending.clear();
        s.pending_logprobs.clear();
        {
          std::lock_guard lock(mutex_);
          if (r.first) {
            record(metrics_.time_to_first_token, since(r.submitted));
            r.first = false;
          } else {
            record(metrics_.inter_token, since(s.last));
          }
          metrics_.generated_tokens += static_cast<int64_t>(e.tokens.size());
        }
        s.last = Clock::now();
        job.push(std::move(e));
      }
      if (!reason.empty()) {  // said after the step, once the session holds the last token
        s.done = true;
        job.completion_tokens += s.tokens;
        r.ends.push_back(Event{static_cast<int>(c), {}, {}, {}, true, reason, {}});
      }
      states.push_back(s.state.get());  // the state takes every token drawn, the last included
      tokens.push_back(id);
    }
  }
  if (states.empty()) return;
  try {
    model_.step(states.data(), tokens.data(), static_cast<int64_t>(states.size()));
  } catch (const Error& e) {
    for (auto& r : active) {
      for (int c = 0; c < r.job->choices; ++c) r.job->push(Event{c, {}, {}, {}, true, "error", e.what()});
      r.job->cancel();
    }
  }
}

void Engine::loop() {
  std::vector<Running> active;
  int64_t prompts_seen = 0;
  auto decoding = [&] { return std::any_of(active.begin(), active.end(), [](const Running& r) { return r.started && !r.job->cancelled; }); };
  auto fail = [](Running& r, const std::string& why) {
    for (int c = 0; c < r.job->choices; ++c) r.job->push(Event{c, {}, {}, {}, true, "error", why});
  };
  for (;;) {
    {
      std::unique_lock lock(mutex_);
      // Sleep unless sequences are being decoded, until there is something to do.
      wake_.wait_for(lock, std::chrono::milliseconds(decoding() ? 0 : 200), [&] {
        return stopping_ || prompts_read_ != prompts_seen ||
               (!waiting_.empty() && static_cast<int>(active.size()) < options_.parallel) ||
               std::any_of(active.begin(), active.end(), [](const Running& r) { return !r.begun || r.job->cancelled; });
      });
      prompts_seen = prompts_read_;
      if (stopping_) {
        for (auto& r : active) fail(r, "server stopping");
        for (auto& j : waiting_) {
          Running r;
          r.job = j;
          fail(r, "server stopping");
        }
        waiting_.clear();
        return;
      }
      // Admission, in order: a free slot, and room for the job's states (else it waits for
      // running jobs to end; one that cannot fit even alone is let in to fail with the sizes).
      while (static_cast<int>(active.size()) < options_.parallel && !waiting_.empty()) {
        const int64_t need = state_need(*waiting_.front());
        if (options_.state_budget > 0 && reserved_ + need > options_.state_budget && reserved_ > 0) break;
        active.emplace_back();
        active.back().job = waiting_.front();
        active.back().submitted = Clock::now();
        active.back().reserved = need;
        reserved_ += need;
        waiting_.pop_front();
      }
      metrics_.active = static_cast<int64_t>(active.size());
    }
    if (active.empty()) continue;
    // New jobs go to the reader; read prompts start their sequences.
    for (auto& r : active) {
      if (r.started || r.job->cancelled) continue;
      try {
        if (!r.begun) {
          begin(r);
          {
            std::lock_guard lock(reader_mutex_);
            to_read_.push_back(r.prompt);
          }
          reader_wake_.notify_one();
        }
        if (!r.prompt->done) continue;
        if (!r.prompt->error.empty()) throw Error(r.prompt->error);
        start(r);
      } catch (const Error& e) {
        fail(r, e.what());
        r.job->cancel();
      }
    }
    decoding_ = decoding();
    omp_set_num_threads(reading_ ? std::max(1, threads_ - threads_ / 2) : threads_);
    decode(active);
    // Jobs that are over leave; a session keeps the state it reached.
    std::erase_if(active, [&](Running& r) {
      const bool over = r.job->cancelled ||
                        (r.started && std::all_of(r.seqs.begin(), r.seqs.end(), [](const Sequence& s) { return s.done; }));
      if (!over) return false;
      release(r);
      {
        std::lock_guard lock(mutex_);
        if (!r.job->cancelled && !r.job->session.empty() && r.seqs.size() == 1)
          keep_session(r.job->session, r.seqs[0].state, r.session_before);
      }
      for (auto& e : r.ends) r.job->push(std::move(e));
      return true;
    });
    std::lock_guard lock(mutex_);
    metrics_.active = static_cast<int64_t>(active.size());
  }
}

}  // namespace polysketch::serve
