#include "serve/engine.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <filesystem>

#include "data/text_stream.h"
#include "kernels/rng.h"

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
  bool done = false;
  Clock::time_point last;
};

struct Engine::Running {
  std::shared_ptr<Job> job;
  std::vector<Sequence> seqs;
  Clock::time_point submitted;
  bool started = false, first = true, released = false;
  std::shared_ptr<DecodeState> session_before;  // the session's state when the job started
  std::vector<Event> ends;  // the choices' last events, sent when the job leaves
};

// A job is over (answered, failed or cancelled): its place counts for new jobs at once, before
// the step that ends it has run.
void Engine::release(Running& r) {
  if (r.released) return;
  r.released = true;
  std::lock_guard lock(mutex_);
  --occupied_;
}

// A kept sequence: its state, the state before its last request (rollback) and its last use.
struct Engine::Session {
  std::shared_ptr<DecodeState> state, previous;
  int64_t used = 0;
};

Engine::Engine(const Model& model, const data::Tokenizer& tokenizer, EngineOptions options)
    : model_(model), tokenizer_(tokenizer), options_(options), thread_([this] { loop(); }) {}

Engine::~Engine() {
  stop();
  if (thread_.joinable()) thread_.join();
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

// Caller holds mutex_. Evicts the least recently used beyond max_sessions (to the directory).
void Engine::keep_session(const std::string& id, std::shared_ptr<DecodeState> state,
                          std::shared_ptr<DecodeState> previous) {
  auto& s = sessions_[id];
  if (!s) s = std::make_unique<Session>();
  s->state = std::move(state);
  s->previous = std::move(previous);
  s->used = ++clock_;
  while (static_cast<int64_t>(sessions_.size()) > options_.max_sessions) {
    const auto lru = std::min_element(sessions_.begin(), sessions_.end(),
                                      [](const auto& a, const auto& b) { return a.second->used < b.second->used; });
    if (!options_.session_dir.empty()) {
      try {
        lru->second->state->save(session_path(lru->first), options_.model_identity);
      } catch (const Error& e) {  // kept in memory rather than lost; said once per failure
        fmt::print(stderr, "session {} not evicted: {}\n", lru->first, e.what());
        break;
      }
    }
    sessions_.erase(lru);
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
  return m;
}

// Reads the job's prompt into its first sequence's state (after the session's history, if it
// names one) and copies the state to its other choices.
void Engine::start(Running& r) {
  auto& job = *r.job;
  std::shared_ptr<DecodeState> state;
  if (!job.session.empty()) {
    std::lock_guard lock(mutex_);
    if (const Session* s = find_session(job.session)) {
      r.session_before = s->state;
      state = std::make_shared<DecodeState>(*s->state);  // the session keeps its own until we finish
      job.cached_tokens = state->position();
    }
  }
  if (!state) state = std::make_shared<DecodeState>(model_.config());
  model::read_prompt(model_, *state, job.prompt);
  for (int c = 0; c < job.choices; ++c) {
    Sequence s{c == 0 ? state : std::make_shared<DecodeState>(*state),
               model::sampling_rng(job.sampling.seed + static_cast<uint64_t>(c)),
               std::nullopt, {}, 0, 0, {}, false, Clock::now()};
    s.text.emplace(tokenizer_, job.prompt);
    r.seqs.push_back(std::move(s));
  }
  job.tokens.assign(static_cast<size_t>(job.choices), {});
  r.started = true;
}

void Engine::loop() {
  std::vector<Running> active;
  const int32_t end_of_document = tokenizer_.end_of_document();
  auto fail = [](Running& r, const std::string& why) {
    for (int c = 0; c < r.job->choices; ++c) r.job->push(Event{c, {}, {}, true, "error", why});
  };
  for (;;) {
    {
      std::unique_lock lock(mutex_);
      wake_.wait_for(lock, std::chrono::milliseconds(active.empty() ? 200 : 0),
                     [&] { return stopping_ || !waiting_.empty(); });
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
      while (static_cast<int>(active.size()) < options_.parallel && !waiting_.empty()) {
        active.emplace_back();
        active.back().job = waiting_.front();
        active.back().submitted = Clock::now();
        waiting_.pop_front();
      }
      metrics_.active = static_cast<int64_t>(active.size());
    }
    if (active.empty()) continue;
    // Prompts of newly admitted jobs, then one token for every running sequence.
    for (auto& r : active) {
      if (r.started || r.job->cancelled) continue;
      try {
        start(r);
        std::lock_guard lock(mutex_);
        metrics_.prompt_tokens += static_cast<int64_t>(r.job->prompt.size());
        metrics_.cached_tokens += r.job->cached_tokens;
      } catch (const Error& e) {
        fail(r, e.what());
        r.job->cancel();
      }
    }
    std::vector<DecodeState*> states;
    std::vector<int32_t> tokens;
    for (auto& r : active) {
      if (!r.started || r.job->cancelled) continue;
      auto& job = *r.job;
      for (size_t c = 0; c < r.seqs.size(); ++c) {
        auto& s = r.seqs[c];
        if (s.done) continue;
        const int32_t id = model::sample(s.state->last_logits(), job.sampling, s.rng, s.text->allowed());
        s.generated += s.text->push(id);
        s.pending.push_back(id);
        job.tokens[c].push_back(id);
        ++s.tokens;
        std::string reason;
        size_t end = s.generated.size();
        if (id == end_of_document) reason = "stop";
        for (const auto& stop : job.stop)
          if (const auto at = s.generated.find(stop, s.shown); at != std::string::npos && at < end) {
            end = at;
            reason = "stop";
          }
        if (reason.empty() && s.tokens >= job.max_tokens) reason = "length";
        if (reason.empty()) end -= stop_prefix(s.generated, job.stop);
        Event e{static_cast<int>(c), s.generated.substr(s.shown, end - s.shown), {}, false, {}, {}};
        if (!e.text.empty() || !reason.empty()) {
          s.shown = end;
          e.tokens = std::move(s.pending);
          s.pending.clear();
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
          r.ends.push_back(Event{static_cast<int>(c), {}, {}, true, reason, {}});
        }
        states.push_back(s.state.get());  // the state takes every token drawn, the last included
        tokens.push_back(id);
      }
    }
    if (!states.empty()) {
      try {
        model_.step(states.data(), tokens.data(), static_cast<int64_t>(states.size()));
      } catch (const Error& e) {
        for (auto& r : active) {
          fail(r, e.what());
          r.job->cancel();
        }
      }
    }
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
