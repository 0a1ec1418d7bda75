// The serving engine behind `polysketch serve`: continuous batching of many sequences on one
// const model. HTTP threads only submit jobs and read their events; one scheduler thread admits
// waiting jobs (up to `parallel` sequences at once), reads their prompts, and advances every
// running sequence by one token per batched Model::step. Sessions keep a sequence's decoding state
// between requests (its whole history: a fixed size for the sketch mechanisms), so a
// conversation sends only its new turn.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "data/tokenizer.h"
#include "model/generator.h"
#include "polysketch/model.h"

namespace polysketch::serve {

// What a job's reader receives, in order: text pieces per choice, then one `done` per choice.
struct Event {
  int choice = 0;
  std::string text;                   // new text (never broken UTF-8; stop strings withheld)
  std::vector<int32_t> tokens;        // the tokens that produced it
  bool done = false;
  std::string finish_reason;          // done: "stop" (end of document or a stop string), "length", "error"
  std::string error;                  // finish_reason "error": why
};

// One request: its prompt (tokens after the session's history, if any) and how to sample.
struct Job {
  std::vector<int32_t> prompt;
  model::SamplingOptions sampling;
  int64_t max_tokens = 16;
  int choices = 1;                    // n: the prompt is read once and the state copied
  std::vector<std::string> stop;      // stop strings (not part of the returned text)
  std::string session;                // continue this session and keep the state after ("": none)

  // Filled by the engine.
  int64_t cached_tokens = 0;          // history reused from the session
  std::vector<std::vector<int32_t>> tokens;  // per choice: the tokens drawn (engine thread, until done)
  int64_t completion_tokens = 0;

  // Read by the HTTP thread: blocks until an event or the timeout; false on timeout.
  bool next_event(Event& e, double timeout_s);
  void cancel() { cancelled = true; }
  std::atomic<bool> cancelled{false};

 private:
  friend class Engine;
  void push(Event e);
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<Event> events_;
};

struct EngineOptions {
  int parallel = 16;     // sequences decoded at once
  int max_queue = 64;    // jobs waiting beyond those
  int64_t max_sessions = 1024;  // in memory; beyond, the least recently used is evicted
  // Sessions as snapshot files ID.state (written atomically): evicted sessions go there, and
  // every session when the engine stops; a session not in memory is loaded from there. Empty:
  // evicted sessions are gone.
  std::string session_dir;
  std::string model_identity;  // Model::identity(): what a snapshot is tied to
};

// Session ids: 1-64 characters of [A-Za-z0-9_-] (they name files); every session call refuses
// others (as not found).
bool valid_session_id(const std::string& id);

struct SessionInfo {
  std::string id;
  int64_t position = 0, bytes = 0;
};

struct EngineMetrics {
  int64_t requests = 0, prompt_tokens = 0, generated_tokens = 0, cached_tokens = 0;
  int64_t active = 0, queued = 0, sessions = 0, state_bytes = 0;
  std::vector<double> time_to_first_token, inter_token;  // recent samples, seconds
};

class Engine {
 public:
  Engine(const Model& model, const data::Tokenizer& tokenizer, EngineOptions options);
  ~Engine();  // stops the scheduler; running jobs end with finish_reason "error"
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Queues a job; false (nothing queued) when every sequence slot is busy and `max_queue` jobs
  // already wait.
  bool submit(const std::shared_ptr<Job>& job);
  // Stops admitting; running and queued jobs end (finish_reason "error", "server stopping").
  void stop();

  // Sessions in memory and, with a session directory, on disk. Throws Error for a corrupt file.
  std::vector<SessionInfo> sessions() const;
  std::optional<SessionInfo> session(const std::string& id);
  bool erase_session(const std::string& id);
  // A copy of session `from` named `to` (replacing any); false when `from` does not exist.
  bool fork_session(const std::string& from, const std::string& to);
  // The session back to its state before its last request; false when there is none.
  bool rollback_session(const std::string& id);
  EngineMetrics metrics() const;

 private:
  struct Sequence;
  struct Running;
  void loop();
  void start(Running& r);
  void release(Running& r);
  struct Session;
  Session* find_session(const std::string& id);  // in memory, else loaded from the directory
  void keep_session(const std::string& id, std::shared_ptr<DecodeState> state,
                    std::shared_ptr<DecodeState> previous);
  std::string session_path(const std::string& id) const;
  void save_sessions();

  const Model& model_;
  const data::Tokenizer& tokenizer_;
  const EngineOptions options_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::shared_ptr<Job>> waiting_;
  std::map<std::string, std::unique_ptr<Session>> sessions_;
  int64_t clock_ = 0;  // uses, for LRU eviction
  int64_t occupied_ = 0;  // jobs queued or running, not yet over
  bool stopping_ = false;
  EngineMetrics metrics_;
  std::thread thread_;
};

}  // namespace polysketch::serve
