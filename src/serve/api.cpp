#include "serve/api.h"

#include <fmt/format.h>

#include <algorithm>
#include <random>
#include <set>

namespace polysketch::serve {

namespace {
using nlohmann::json;

constexpr int64_t kMaxTopLogprobs = 20;

[[noreturn]] void bad(const std::string& param, const std::string& message) {
  throw ApiError{400, "invalid_request_error", message, param, param.empty() ? "invalid_request" : "invalid_value"};
}

const json* field(const json& j, const char* key) {
  const auto it = j.find(key);
  return it == j.end() || it->is_null() ? nullptr : &*it;
}

double number(const json& j, const char* key, double fallback, double lo, double hi) {
  const json* v = field(j, key);
  if (!v) return fallback;
  if (!v->is_number()) bad(key, fmt::format("'{}' must be a number", key));
  const double x = v->get<double>();
  if (!(x >= lo && x <= hi)) bad(key, fmt::format("'{}' must be in [{}, {}], got {}", key, lo, hi, x));
  return x;
}

int64_t integer(const json& j, const char* key, int64_t fallback, int64_t lo, int64_t hi) {
  const json* v = field(j, key);
  if (!v) return fallback;
  if (!v->is_number_integer()) bad(key, fmt::format("'{}' must be an integer", key));
  const int64_t x = v->get<int64_t>();
  if (x < lo || x > hi) bad(key, fmt::format("'{}' must be in [{}, {}], got {}", key, lo, hi, x));
  return x;
}

bool boolean(const json& j, const char* key) {
  const json* v = field(j, key);
  if (!v) return false;
  if (!v->is_boolean()) bad(key, fmt::format("'{}' must be true or false", key));
  return v->get<bool>();
}

std::vector<std::string> stops(const json& j) {
  const json* v = field(j, "stop");
  if (!v) return {};
  std::vector<std::string> out;
  if (v->is_string()) {
    out.push_back(v->get<std::string>());
  } else if (v->is_array() && v->size() <= 4) {
    for (const auto& s : *v) {
      if (!s.is_string()) bad("stop", "'stop' must be a string or a list of up to 4 strings");
      out.push_back(s.get<std::string>());
    }
  } else {
    bad("stop", "'stop' must be a string or a list of up to 4 strings");
  }
  for (const auto& s : out)
    if (s.empty()) bad("stop", "'stop' strings must not be empty");
  return out;
}

// The fields each endpoint takes; any other is refused by name (a typo is not silently ignored).
const std::set<std::string>& known(Endpoint e) {
  static const std::set<std::string> common{"model", "max_tokens", "temperature", "top_p", "top_k",
                                            "seed", "stop", "stream", "n", "session", "user",
                                            "stream_options", "logprobs", "ignore_eos"};
  static std::set<std::string> completions = [] {
    auto s = common;
    s.insert({"prompt", "echo"});
    return s;
  }();
  static std::set<std::string> chat = [] {
    auto s = common;
    s.insert({"messages", "max_completion_tokens", "top_logprobs"});
    return s;
  }();
  return e == Endpoint::chat ? chat : completions;
}

std::vector<int32_t> prompt_tokens(const json& j, const data::Tokenizer& tok, std::string& text) {
  const json* p = field(j, "prompt");
  if (!p) bad("prompt", "'prompt' is required (a string or a list of token ids)");
  if (p->is_string()) {
    text = p->get<std::string>();
    return tok.encode(text);
  }
  if (!p->is_array()) bad("prompt", "'prompt' must be a string or a list of token ids");
  std::vector<int32_t> ids;
  for (const auto& t : *p) {
    if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() >= tok.vocab_size())
      bad("prompt", fmt::format("'prompt' token ids must be integers in [0, {})", tok.vocab_size()));
    ids.push_back(static_cast<int32_t>(t.get<int64_t>()));
  }
  text = tok.decode(ids);
  return ids;
}
}  // namespace

json ApiError::body() const {
  return {{"error", {{"message", message}, {"type", type}, {"param", param.empty() ? json() : json(param)},
                     {"code", code.empty() ? json() : json(code)}}}};
}

std::string chat_transcript(const json& messages) {
  if (!messages.is_array() || messages.empty()) bad("messages", "'messages' must be a non-empty list");
  std::string text;
  for (const auto& m : messages) {
    if (!m.is_object() || !m.contains("role") || !m.at("role").is_string() || !m.contains("content") ||
        !m.at("content").is_string())
      bad("messages", "each message must be an object with string 'role' and 'content'");
    std::string role = m.at("role").get<std::string>();
    if (role != "system" && role != "user" && role != "assistant")
      bad("messages", fmt::format("message role must be system, user or assistant, got '{}'", role));
    role[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(role[0])));
    text += fmt::format("{}: {}\n", role, m.at("content").get<std::string>());
  }
  return text + "Assistant:";
}

Request parse_request(Endpoint endpoint, const std::string& body, const data::Tokenizer& tokenizer,
                      const ApiLimits& limits, const std::string& model_name) {
  const json j = json::parse(body, nullptr, false);
  if (j.is_discarded() || !j.is_object()) bad("", "the request body must be a JSON object");
  for (const auto& [key, value] : j.items())
    if (!known(endpoint).count(key)) bad(key, fmt::format("unknown field '{}'", key));
  Request r;
  r.job = std::make_shared<Job>();
  auto& job = *r.job;
  // logprobs: completions take the number of top tokens; chat takes true and top_logprobs.
  if (endpoint == Endpoint::chat) {
    if (boolean(j, "logprobs")) job.logprobs = static_cast<int>(integer(j, "top_logprobs", 0, 0, kMaxTopLogprobs));
    else if (field(j, "top_logprobs")) bad("top_logprobs", "'top_logprobs' needs 'logprobs': true");
  } else if (const json* lp = field(j, "logprobs"); lp && !(lp->is_boolean() && !lp->get<bool>())) {
    job.logprobs = static_cast<int>(integer(j, "logprobs", 0, 0, kMaxTopLogprobs));
  }
  if (endpoint == Endpoint::chat) {
    const json* m = field(j, "messages");
    if (!m) bad("messages", "'messages' is required");
    r.prompt_text = chat_transcript(*m);
    job.prompt = tokenizer.encode(r.prompt_text);
  } else {
    job.prompt = prompt_tokens(j, tokenizer, r.prompt_text);
    r.echo = boolean(j, "echo");
  }
  const char* max_key = endpoint == Endpoint::chat && field(j, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
  job.max_tokens = integer(j, max_key, endpoint == Endpoint::chat ? std::min<int64_t>(256, limits.max_tokens) : 16,
                           1, limits.max_tokens);
  job.sampling.temperature = number(j, "temperature", 1.0, 0.0, 100.0);
  job.sampling.top_p = number(j, "top_p", 1.0, 1e-9, 1.0);
  job.sampling.top_k = integer(j, "top_k", 0, 0, tokenizer.vocab_size());
  job.sampling.seed = field(j, "seed") ? static_cast<uint64_t>(integer(j, "seed", 0, 0, INT64_MAX))
                                       : std::random_device{}();
  job.choices = static_cast<int>(integer(j, "n", 1, 1, 16));
  job.stop = stops(j);
  job.ignore_eos = boolean(j, "ignore_eos");
  if (const json* s = field(j, "session")) {
    if (!s->is_string() || !valid_session_id(s->get<std::string>()))
      bad("session", "'session' must be 1-64 characters of letters, digits, '_' and '-'");
    if (job.choices > 1) bad("n", "a request with a 'session' takes n = 1");
    job.session = s->get<std::string>();
  }
  r.stream = boolean(j, "stream");
  if (const json* so = field(j, "stream_options")) {
    if (!so->is_object()) bad("stream_options", "'stream_options' must be an object");
    r.include_usage = boolean(*so, "include_usage");
  }
  const int64_t tokens = static_cast<int64_t>(job.prompt.size()) + job.max_tokens;
  const int64_t need = job.choices * (limits.state_base_bytes + limits.kv_bytes_per_token * tokens);
  if (limits.state_budget > 0 && need > limits.state_budget)
    bad("max_tokens", fmt::format("the prompt ({} tokens) and max_tokens ({}) need {:.0f} MiB of decoding state "
                                  "({} x {} tokens of KV cache), more than this server's --state-mb of {:.0f} MiB",
                                  job.prompt.size(), job.max_tokens, static_cast<double>(need) / (1 << 20),
                                  job.choices, tokens, static_cast<double>(limits.state_budget) / (1 << 20)));
  r.model = field(j, "model") && j.at("model").is_string() ? j.at("model").get<std::string>() : model_name;
  r.id = fmt::format("{}-{:016x}", endpoint == Endpoint::chat ? "chatcmpl" : "cmpl",
                     std::random_device{}() * 0x100000000ULL + std::random_device{}());
  r.created = static_cast<int64_t>(std::time(nullptr));
  return r;
}

json usage(const Request& r) {
  const auto& job = *r.job;
  const int64_t prompt = static_cast<int64_t>(job.prompt.size()) + job.history_tokens;
  return {{"prompt_tokens", prompt}, {"completion_tokens", job.completion_tokens},
          {"total_tokens", prompt + job.completion_tokens},
          {"prompt_tokens_details", {{"cached_tokens", job.cached_tokens}}}};
}

json logprobs_json(Endpoint endpoint, const Request& r, const std::vector<TokenLogprob>& lps,
                   const std::vector<std::string>& pieces, int64_t& offset) {
  if (r.job->logprobs < 0) return nullptr;
  auto piece = [&](int32_t id) -> const std::string& { return pieces.at(static_cast<size_t>(id)); };
  if (endpoint == Endpoint::chat) {
    auto entry = [&](int32_t id, float lp) {
      const std::string& t = piece(id);
      json bytes = json::array();
      for (const unsigned char b : t) bytes.push_back(b);
      return json{{"token", t}, {"logprob", lp}, {"bytes", bytes}};
    };
    json content = json::array();
    for (const auto& lp : lps) {
      json e = entry(lp.token, lp.logprob);
      e["top_logprobs"] = json::array();
      for (const auto& [id, v] : lp.top) e["top_logprobs"].push_back(entry(id, v));
      content.push_back(std::move(e));
    }
    return {{"content", content}};
  }
  json tokens = json::array(), token_logprobs = json::array(), top = json::array(), offsets = json::array();
  for (const auto& lp : lps) {
    tokens.push_back(piece(lp.token));
    token_logprobs.push_back(lp.logprob);
    json t = json::object();
    for (const auto& [id, v] : lp.top) t[piece(id)] = v;
    top.push_back(std::move(t));
    offsets.push_back(offset);
    offset += static_cast<int64_t>(piece(lp.token).size());
  }
  return {{"tokens", tokens}, {"token_logprobs", token_logprobs}, {"top_logprobs", top}, {"text_offset", offsets}};
}

json completion_response(Endpoint endpoint, const Request& r, const std::vector<std::string>& text,
                         const std::vector<std::string>& finish, const std::vector<json>& logprobs) {
  json choices = json::array();
  for (size_t c = 0; c < text.size(); ++c) {
    if (endpoint == Endpoint::chat) {
      choices.push_back({{"index", c}, {"message", {{"role", "assistant"}, {"content", text[c]}}},
                         {"finish_reason", finish[c]}, {"logprobs", logprobs[c]}});
    } else {
      choices.push_back({{"index", c}, {"text", (r.echo ? r.prompt_text : "") + text[c]},
                         {"finish_reason", finish[c]}, {"logprobs", logprobs[c]}, {"tokens", r.job->tokens[c]}});
    }
  }
  return {{"id", r.id}, {"object", endpoint == Endpoint::chat ? "chat.completion" : "text_completion"},
          {"created", r.created}, {"model", r.model}, {"choices", choices}, {"usage", usage(r)}};
}

json stream_chunk(Endpoint endpoint, const Request& r, int choice, const std::string& text,
                  const std::string& finish, bool first, json logprobs, const std::vector<int32_t>& tokens) {
  json c{{"index", choice}, {"finish_reason", finish.empty() ? json() : json(finish)}, {"logprobs", std::move(logprobs)}};
  if (endpoint == Endpoint::chat) {
    json delta = json::object();
    if (first) delta["role"] = "assistant";
    if (!text.empty()) delta["content"] = text;
    c["delta"] = delta;
  } else {
    c["text"] = (first && r.echo ? r.prompt_text : "") + text;
    c["tokens"] = tokens;
  }
  return {{"id", r.id}, {"object", endpoint == Endpoint::chat ? "chat.completion.chunk" : "text_completion"},
          {"created", r.created}, {"model", r.model}, {"choices", json::array({c})}};
}

}  // namespace polysketch::serve
