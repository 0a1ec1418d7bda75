// The OpenAI-compatible request and response shapes of `polysketch serve`: JSON in, a Job out
// (validated before anything is queued or streamed), and the completion objects and server-sent
// event chunks that OpenAI's clients read.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "data/tokenizer.h"
#include "serve/engine.h"

namespace polysketch::serve {

// An error answered as {"error": {"message", "type", "param", "code"}} with an HTTP status.
struct ApiError {
  int status;
  std::string type, message, param, code;
  nlohmann::json body() const;
};

enum class Endpoint { completions, chat };

struct ApiLimits {
  int64_t max_tokens = 4096;  // cap per request (--max-tokens)
  // Decoding states: a request whose choices' states (base + per token x (prompt + max_tokens))
  // cannot fit in state_budget even alone is refused (400). 0: no budget.
  int64_t state_budget = 0, state_base_bytes = 0, kv_bytes_per_token = 0;
};

// A parsed request: the job to run and how to answer it.
struct Request {
  std::shared_ptr<Job> job;
  bool stream = false, echo = false;
  bool include_usage = false;  // stream_options.include_usage: a last chunk with the usage
  std::string prompt_text;  // for echo
  std::string id, model;    // the response's id and model name
  int64_t created = 0;
};

// Parses and validates a request body; throws ApiError (400) naming the field.
Request parse_request(Endpoint endpoint, const std::string& body, const data::Tokenizer& tokenizer,
                      const ApiLimits& limits, const std::string& model_name);

// The chat transcript the models read (they have no chat template): each message as
// "Role: content\n", then "Assistant:" (docs/SERVE.md).
std::string chat_transcript(const nlohmann::json& messages);

// Token log-probabilities in the endpoint's shape (null when the request did not ask for them):
// completions {tokens, token_logprobs, top_logprobs, text_offset}, chat {content: [{token,
// logprob, bytes, top_logprobs}]}. `pieces`: Tokenizer::piece_texts(); `offset`: where the first
// token's text begins in the choice's text, advanced past the last.
nlohmann::json logprobs_json(Endpoint endpoint, const Request& r, const std::vector<TokenLogprob>& logprobs,
                             const std::vector<std::string>& pieces, int64_t& offset);
// A whole (non-streamed) response from the collected text, finish reasons and logprobs_json of
// every choice.
nlohmann::json completion_response(Endpoint endpoint, const Request& r, const std::vector<std::string>& text,
                                   const std::vector<std::string>& finish, const std::vector<nlohmann::json>& logprobs);
// One streamed chunk: a choice's new text (completions: with the ids of its tokens, and their
// logprobs_json), or its finish reason.
nlohmann::json stream_chunk(Endpoint endpoint, const Request& r, int choice, const std::string& text,
                            const std::string& finish, bool first, nlohmann::json logprobs = nullptr,
                            const std::vector<int32_t>& tokens = {});
nlohmann::json usage(const Request& r);

}  // namespace polysketch::serve
