// The serving engine behind `polysketch serve`: continuous batching of many sequences on one
// const model. HTTP threads only submit jobs and read their events; one scheduler thread admits
// waiting jobs (up to `parallel` sequences at once) and advances every running sequence by one
// token per batched Model::step, while a reader thread reads new prompts beside it (running
// streams keep going while a long prompt is read; the two share the threads). Sessions keep a sequence's
// decoding state between requests (its whole history: a fixed size for the sketch mechanisms),
// so a conversation sends only its new turn; the prefix cache keeps the states of recent
// prompts at block boundaries, so a prompt that shares a long beginning skips reading it.
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

// A drawn token's log-probability under the model (log-softmax of its logits, before
// temperature) and the `top` most likely tokens' (requests with logprobs).
struct TokenLogprob {
  int32_t token = 0;
  float logprob = 0;
  std::vector<std::pair<int32_t, float>> top;
};

// What a job's reader receives, in order: text pieces per choice, then one `done` per choice.
struct Event {
  int choice = 0;
  std::string text;                   // new text (never broken UTF-8; stop strings withheld)
  std::vector<int32_t> tokens;        // the tokens that produced it
  std::vector<TokenLogprob> logprobs; // per token, when the job asks for them
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
  int logprobs = -1;                  // >= 0: each token's log-probability and this many top ones
  bool ignore_eos = false;            // the end-of-document token does not end the text (benchmarks)

  // Filled by the engine (read after the job's last event).
  int64_t history_tokens = 0;         // the session's history this job continued
  int64_t cached_tokens = 0;          // tokens not read again: the history, or a cached prefix
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
  // Bytes of kept states (sessions, their rollback states, cached prefixes); beyond, the least
  // recently used goes (a session to the directory, if any).
  int64_t memory_budget = int64_t{4} << 30;
  // Bytes of the running sequences' states, reserved at admission for their longest (KV caches:
  // history + prompt + max_tokens): a job waits in the queue until it fits, and one that cannot
  // fit alone fails with the sizes. 0: no budget.
  int64_t state_budget = 0;
  // Cached prompt prefixes (sketch mechanisms, whose states have a fixed size): the state every
  // `prefix_stride` tokens of a prompt (a multiple of the block size) and at its last block
  // boundary. 0: no prefix cache.
  int64_t prefix_stride = 1024;
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
  int64_t prefix_hits = 0, prefixes = 0, prefix_bytes = 0;
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
  // The session back to its state before its last request (position 0 for a session that request
  // made); false when there is none.
  bool rollback_session(const std::string& id);
  EngineMetrics metrics() const;
  // A decoding state's bytes after `tokens` tokens: base + per token (0 for the sketch mechanisms).
  int64_t state_base_bytes() const { return base_bytes_; }
  int64_t kv_bytes_per_token() const { return token_bytes_; }

 private:
  struct Sequence;
  struct Running;
  void loop();
  void begin(Running& r);
  int64_t state_need(const Job& job) const;
  struct Prompt;
  void read_prompts();
  void start(Running& r);
  void decode(std::vector<Running>& active);
  void release(Running& r);
  struct Session;
  Session* find_session(const std::string& id);  // in memory, else loaded from the directory
  void keep_session(const std::string& id, std::shared_ptr<DecodeState> state,
                    std::shared_ptr<DecodeState> previous);
  std::string session_path(const std::string& id) const;
  void save_sessions();
  struct Prefix;
  std::shared_ptr<const DecodeState> find_prefix(const std::vector<int32_t>& prompt, int64_t& length);
  void keep_prefix(const std::vector<int32_t>& prompt, int64_t length, uint64_t hash, const DecodeState& state);
  void fit_budget();

  const Model& model_;
  const data::Tokenizer& tokenizer_;
  const EngineOptions options_;
  const int64_t block_;       // prompts are read in pieces that end at multiples of it
  const bool fixed_state_;    // sketch mechanisms: a state's size does not grow
  const int64_t stride_;      // between cached prefix states: a multiple of block_ (0: no cache)
  const int64_t base_bytes_, token_bytes_;  // a state's size: base + per token (KV caches)
  int64_t reserved_ = 0;      // state bytes reserved by running jobs
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::shared_ptr<Job>> waiting_;
  std::map<std::string, std::unique_ptr<Session>> sessions_;
  std::map<uint64_t, std::unique_ptr<Prefix>> prefixes_;  // by the hash of their tokens
  // Position 0: what a new session rolls back to (shared: kept states are never written to).
  std::shared_ptr<DecodeState> empty_;
  int64_t clock_ = 0;  // uses, for LRU eviction
  int64_t occupied_ = 0;  // jobs queued or running, not yet over
  bool stopping_ = false;
  EngineMetrics metrics_;
  const int threads_;  // OpenMP threads, shared by the scheduler and the reader when both work
  std::atomic<bool> decoding_{false}, reading_{false};
  int64_t prompts_read_ = 0;  // (mutex_) prompts the reader has finished
  std::mutex reader_mutex_;
  std::condition_variable reader_wake_;
  std::deque<std::shared_ptr<Prompt>> to_read_;
  std::atomic<bool> reader_stop_{false};
  std::thread thread_;  // the scheduler
  std::thread reader_;  // reads prompts
};

}  // namespace polysketch::serve
