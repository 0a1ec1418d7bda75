// polysketch serve: an OpenAI-compatible HTTP server (cpp-httplib) over the serving engine
// (src/serve/engine.h): completions and chat completions, streamed as server-sent events or
// whole, sessions, tokenize/detokenize, health, models and Prometheus metrics. Loopback by default.
#include <fmt/core.h>
#include <httplib.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <thread>

#include "cli/commands.h"
#include "cli/common.h"
#include "model/checkpoint.h"
#include "serve/api.h"
#include "serve/engine.h"
#include "serve/page.h"
#include "train/stop_signals.h"
#include "util/atomic_file.h"
#include "util/check.h"
#include "util/memory.h"

namespace polysketch::cli {

namespace {
using nlohmann::json;
using serve::ApiError;

struct ServeOptions {
  std::string checkpoint, host = "127.0.0.1", api_key, api_key_file, session_dir;
  int port = 8080, parallel = 16, max_queue = 64;
  int64_t max_tokens = 4096, max_body_kb = 1024, max_sessions = 1024, prefix_stride = 1024;
  double session_mb = 4096, state_mb = -1;
  bool batch_invariant = true;
  double timeout_s = 600;
  Runtime runtime;
};

// Token texts may be a lone byte of a character: shown as U+FFFD rather than failing the dump.
std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

void send_error(httplib::Response& res, const ApiError& e) {
  res.status = e.status;
  res.set_content(dump(e.body()), "application/json");
}

void send_json(httplib::Response& res, const json& j) { res.set_content(dump(j), "application/json"); }

std::string prometheus(const serve::EngineMetrics& m) {
  std::string out;
  auto line = [&](const char* name, const char* type, const char* help, double value) {
    out += fmt::format("# HELP {} {}\n# TYPE {} {}\n{} {}\n", name, help, name, type, name, value);
  };
  line("polysketch_requests_total", "counter", "requests admitted to the queue", double(m.requests));
  line("polysketch_prompt_tokens_total", "counter", "prompt tokens read", double(m.prompt_tokens));
  line("polysketch_cached_tokens_total", "counter", "prompt tokens not read again (session history, cached prefixes)", double(m.cached_tokens));
  line("polysketch_prefix_cache_hits_total", "counter", "prompts that began from a cached prefix", double(m.prefix_hits));
  line("polysketch_prefix_cache_entries", "gauge", "prefix states kept", double(m.prefixes));
  line("polysketch_prefix_cache_bytes", "gauge", "bytes of the prefix states kept", double(m.prefix_bytes));
  line("polysketch_generated_tokens_total", "counter", "tokens sent", double(m.generated_tokens));
  line("polysketch_active_sequences", "gauge", "requests being decoded", double(m.active));
  line("polysketch_queued_requests", "gauge", "requests waiting", double(m.queued));
  line("polysketch_sessions", "gauge", "sessions kept", double(m.sessions));
  line("polysketch_session_state_bytes", "gauge", "bytes of the sessions' decoding states", double(m.state_bytes));
  auto summary = [&](const char* name, const char* help, std::vector<double> x) {
    out += fmt::format("# HELP {} {}\n# TYPE {} summary\n", name, help, name);
    std::sort(x.begin(), x.end());
    for (double q : {0.5, 0.9, 0.99})
      out += fmt::format("{}{{quantile=\"{}\"}} {}\n", name, q,
                         x.empty() ? 0.0 : x[std::min(x.size() - 1, static_cast<size_t>(q * double(x.size())))]);
    double sum = 0;
    for (double v : x) sum += v;
    out += fmt::format("{}_sum {}\n{}_count {}\n", name, sum, name, x.size());
  };
  summary("polysketch_time_to_first_token_seconds", "from queueing to the first token (recent requests)", m.time_to_first_token);
  summary("polysketch_inter_token_seconds", "between a stream's tokens (recent)", m.inter_token);
  return out;
}

// What the completion handlers share.
struct Service {
  serve::Engine& engine;
  const data::Tokenizer& tok;
  serve::ApiLimits limits;
  std::string model_name;
  double timeout_s;
  std::vector<std::string> pieces;  // Tokenizer::piece_texts(), for logprobs
};

// A completion request: validated, queued, then answered whole or streamed.
void complete(serve::Endpoint endpoint, const httplib::Request& req, httplib::Response& res, const Service& service) {
  auto& engine = service.engine;
  const double timeout_s = service.timeout_s;
  serve::Request r;
  try {
    r = serve::parse_request(endpoint, req.body, service.tok, service.limits, service.model_name);
  } catch (const ApiError& e) {
    return send_error(res, e);
  } catch (const Error& e) {
    return send_error(res, {400, "invalid_request_error", e.what(), "", ""});
  }
  if (!engine.submit(r.job)) {
    res.set_header("Retry-After", "1");
    return send_error(res, {503, "server_error", "the server is busy: too many requests are waiting; retry later", "", "queue_full"});
  }
  const int choices = r.job->choices;
  const int64_t first_offset = r.echo ? static_cast<int64_t>(r.prompt_text.size()) : 0;  // of logprobs' text_offset
  if (!r.stream) {
    std::vector<std::string> text(static_cast<size_t>(choices)), finish(text.size());
    std::vector<std::vector<serve::TokenLogprob>> logprobs(text.size());
    int done = 0;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
    serve::Event e;
    while (done < choices) {
      if (!r.job->next_event(e, 0.5)) {
        if (std::chrono::steady_clock::now() < deadline) continue;
        r.job->cancel();
        return send_error(res, {503, "server_error", fmt::format("no answer within --timeout {} s", timeout_s), "", "timeout"});
      }
      if (e.finish_reason == "error") {
        r.job->cancel();
        return send_error(res, {503, "server_error", e.error, "", "generation_failed"});
      }
      text[static_cast<size_t>(e.choice)] += e.text;
      auto& lp = logprobs[static_cast<size_t>(e.choice)];
      lp.insert(lp.end(), e.logprobs.begin(), e.logprobs.end());
      if (e.done) {
        finish[static_cast<size_t>(e.choice)] = e.finish_reason;
        ++done;
      }
    }
    std::vector<json> lp_json;
    for (const auto& lp : logprobs) {
      int64_t offset = first_offset;
      lp_json.push_back(serve::logprobs_json(endpoint, r, lp, service.pieces, offset));
    }
    return send_json(res, serve::completion_response(endpoint, r, text, finish, lp_json));
  }
  // Streamed: one chunk per piece of text, a last one per choice with its finish reason, then
  // [DONE]. A client that goes away cancels the job (its sequence is freed at once).
  struct Progress {
    std::vector<bool> started;
    std::vector<int64_t> offsets;  // of the next token's text (logprobs)
    int done = 0;
  };
  auto progress = std::make_shared<Progress>(Progress{std::vector<bool>(static_cast<size_t>(choices), false),
                                                      std::vector<int64_t>(static_cast<size_t>(choices), first_offset)});
  auto job = r.job;
  const auto* pieces = &service.pieces;  // the service outlives every stream
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [=](size_t, httplib::DataSink& sink) {
        serve::Event e;
        while (!job->next_event(e, 0.25))
          if (!sink.is_writable()) return false;
        auto write = [&](const json& j) {
          const std::string s = "data: " + dump(j) + "\n\n";
          return sink.write(s.data(), s.size());
        };
        const auto c = static_cast<size_t>(e.choice);
        if (e.finish_reason == "error") {
          write(ApiError{503, "server_error", e.error, "", "generation_failed"}.body());
          sink.done();
          return true;
        }
        if (!e.text.empty() || !e.tokens.empty() || !progress->started[c]) {
          json lp = serve::logprobs_json(endpoint, r, e.logprobs, *pieces, progress->offsets[c]);
          if (!write(serve::stream_chunk(endpoint, r, e.choice, e.text, "", !progress->started[c], std::move(lp), e.tokens))) return false;
        }
        progress->started[c] = true;
        if (e.done) {
          if (!write(serve::stream_chunk(endpoint, r, e.choice, "", e.finish_reason, false))) return false;
          if (++progress->done == choices) {
            if (r.include_usage) {
              json last = serve::stream_chunk(endpoint, r, 0, "", "", false);
              last["choices"] = json::array();
              last["usage"] = serve::usage(r);
              write(last);
            }
            const std::string end = "data: [DONE]\n\n";
            sink.write(end.data(), end.size());
            sink.done();
          }
        }
        return true;
      },
      [job](bool success) {
        if (!success) job->cancel();
      });
}

void run_serve(const ServeOptions& o) {
  util::check_range("--port", int64_t{o.port}, 0, 65535);
  util::check_range("--parallel", int64_t{o.parallel}, 1, 4096);
  util::check_range("--max-queue", int64_t{o.max_queue}, 0, 1 << 20);
  util::check_range("--max-tokens", o.max_tokens, 1, int64_t{1} << 30);
  util::check_range("--max-body", o.max_body_kb, 1, int64_t{1} << 22);
  util::check_range("--max-sessions", o.max_sessions, 0, int64_t{1} << 30);
  util::check_range("--session-mb", o.session_mb, 0.0, 1e9);
  if (o.state_mb != -1) util::check_range("--state-mb", o.state_mb, 0.0, 1e9);
  util::check_range("--prefix-stride", o.prefix_stride, 0, int64_t{1} << 30);
  util::check_range("--timeout", o.timeout_s, 1.0, 1e7);
  std::string key = o.api_key;
  if (!o.api_key_file.empty()) {
    key = util::read_file(o.api_key_file);
    while (!key.empty() && (key.back() == '\n' || key.back() == '\r')) key.pop_back();
    if (key.empty()) throw Error(fmt::format("--api-key-file {}: empty", o.api_key_file));
  }
  ComputeContext ctx = apply_runtime(o.runtime).ctx;
  ctx.batch_invariant = o.batch_invariant;
  const auto ck = model::read_checkpoint(o.checkpoint);
  if (ck.tokenizer_bytes.empty())
    throw Error(fmt::format("{} has no tokenizer (a synthetic task's model): there is no text to serve", ck.dir));
  Model model(ck.config, ctx);
  model::load_weights(model, ck.weights, ck.dir + "/model.safetensors");
  model.prepare_decoding();
  const auto tok = data::Tokenizer::from_bytes(ck.tokenizer_bytes, ck.dir + "/tokenizer.model");
  const std::string model_name = std::filesystem::path(ck.dir).parent_path().filename().string() + "/" +
                                 std::filesystem::path(ck.dir).filename().string();
  const double state_mb = o.state_mb >= 0 ? o.state_mb : 0.4 * static_cast<double>(util::physical_memory_bytes()) / (1 << 20);
  if (!o.session_dir.empty()) std::filesystem::create_directories(o.session_dir);
  serve::EngineOptions eo;
  eo.parallel = o.parallel;
  eo.max_queue = o.max_queue;
  eo.max_sessions = o.max_sessions;
  eo.memory_budget = static_cast<int64_t>(o.session_mb * (1 << 20));
  eo.state_budget = static_cast<int64_t>(state_mb * (1 << 20));
  eo.prefix_stride = o.prefix_stride;
  eo.session_dir = o.session_dir;
  eo.model_identity = model.identity();
  serve::Engine engine(model, tok, eo);
  const serve::ApiLimits limits{o.max_tokens, eo.state_budget, engine.state_base_bytes(), engine.kv_bytes_per_token()};
  const Service service{engine, tok, limits, model_name, o.timeout_s, tok.piece_texts()};

  httplib::Server svr;
  const size_t workers = static_cast<size_t>(std::min(o.parallel + o.max_queue + 8, 512));
  svr.new_task_queue = [workers] { return new httplib::ThreadPool(workers); };
  svr.set_payload_max_length(static_cast<size_t>(o.max_body_kb) * 1024);
  svr.set_read_timeout(30);
  svr.set_write_timeout(30);
  svr.set_pre_routing_handler([&](const httplib::Request& req, httplib::Response& res) {
    const bool open = req.path == "/" || req.path == "/health";
    if (key.empty() || open || req.get_header_value("Authorization") == "Bearer " + key)
      return httplib::Server::HandlerResponse::Unhandled;
    send_error(res, {401, "invalid_request_error", "missing or wrong API key (Authorization: Bearer KEY)", "", "invalid_api_key"});
    return httplib::Server::HandlerResponse::Handled;
  });
  svr.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    if (res.status == 404)
      send_error(res, {404, "invalid_request_error", fmt::format("no route {} {}", req.method, req.path), "", "not_found"});
    else if (res.status == 413)
      send_error(res, {413, "invalid_request_error", "the request body is larger than --max-body", "", "payload_too_large"});
    else
      send_error(res, {res.status, "invalid_request_error", fmt::format("HTTP {}", res.status), "", ""});
  });
  svr.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      send_error(res, {400, "invalid_request_error", e.what(), "", ""});
    }
  });
  svr.Get("/", [](const httplib::Request&, httplib::Response& res) { res.set_content(serve::kPage, "text/html; charset=utf-8"); });
  svr.Get("/health", [](const httplib::Request&, httplib::Response& res) { send_json(res, {{"status", "ok"}}); });
  svr.Get("/v1/models", [&](const httplib::Request&, httplib::Response& res) {
    send_json(res, {{"object", "list"},
                    {"data", json::array({{{"id", model_name}, {"object", "model"}, {"created", 0}, {"owned_by", "polysketch"},
                                           {"mechanism", mechanism_name(ck.config.attention.mechanism)},
                                           {"context", ck.config.context}}})}});
  });
  svr.Post("/v1/completions", [&](const httplib::Request& req, httplib::Response& res) {
    complete(serve::Endpoint::completions, req, res, service);
  });
  svr.Post("/v1/chat/completions", [&](const httplib::Request& req, httplib::Response& res) {
    complete(serve::Endpoint::chat, req, res, service);
  });
  svr.Post("/tokenize", [&](const httplib::Request& req, httplib::Response& res) {
    const json j = json::parse(req.body, nullptr, false);
    if (!j.is_object() || !j.contains("content") || !j.at("content").is_string())
      return send_error(res, {400, "invalid_request_error", "expected {\"content\": \"text\"}", "content", "invalid_value"});
    send_json(res, {{"tokens", tok.encode(j.at("content").get<std::string>())}});
  });
  svr.Post("/detokenize", [&](const httplib::Request& req, httplib::Response& res) {
    const json j = json::parse(req.body, nullptr, false);
    std::vector<int32_t> ids;
    bool ok = j.is_object() && j.contains("tokens") && j.at("tokens").is_array();
    for (const auto& t : ok ? j.at("tokens") : json::array()) {
      ok = ok && t.is_number_integer() && t.get<int64_t>() >= 0 && t.get<int64_t>() < tok.vocab_size();
      if (ok) ids.push_back(static_cast<int32_t>(t.get<int64_t>()));
    }
    if (!ok)
      return send_error(res, {400, "invalid_request_error", fmt::format("expected {{\"tokens\": [ids in [0, {})]}}", tok.vocab_size()), "tokens", "invalid_value"});
    send_json(res, {{"content", tok.decode(ids)}});
  });
  auto session_json = [](const serve::SessionInfo& s) {
    return json{{"id", s.id}, {"object", "session"}, {"position", s.position}, {"bytes", s.bytes}};
  };
  svr.Get("/v1/sessions", [&](const httplib::Request&, httplib::Response& res) {
    json data = json::array();
    for (const auto& s : engine.sessions()) data.push_back(session_json(s));
    send_json(res, {{"object", "list"}, {"data", data}});
  });
  auto no_session = [](httplib::Response& res, const std::string& id) {
    send_error(res, {404, "invalid_request_error", fmt::format("no session '{}' (never made, deleted, or evicted)", id), "session", "session_not_found"});
  };
  svr.Get(R"(/v1/sessions/([^/]+))", [&](const httplib::Request& req, httplib::Response& res) {
    const auto s = engine.session(req.matches[1]);
    if (!s) return no_session(res, req.matches[1]);
    send_json(res, session_json(*s));
  });
  auto named = [&](const httplib::Request& req, httplib::Response& res, std::string& to) {
    const json j = json::parse(req.body, nullptr, false);
    if (!j.is_object() || !j.contains("id") || !j.at("id").is_string() || !serve::valid_session_id(j.at("id").get<std::string>())) {
      send_error(res, {400, "invalid_request_error", "expected {\"id\": NEW} (1-64 of letters, digits, '_', '-')", "id", "invalid_value"});
      return false;
    }
    to = j.at("id").get<std::string>();
    return true;
  };
  svr.Post(R"(/v1/sessions/([^/]+)/fork)", [&](const httplib::Request& req, httplib::Response& res) {
    std::string to;
    if (!named(req, res, to)) return;
    if (!engine.fork_session(req.matches[1], to)) return no_session(res, req.matches[1]);
    send_json(res, session_json(*engine.session(to)));
  });
  svr.Post(R"(/v1/sessions/([^/]+)/rollback)", [&](const httplib::Request& req, httplib::Response& res) {
    if (!engine.rollback_session(req.matches[1]))
      return send_error(res, {404, "invalid_request_error", fmt::format("session '{}' has no earlier state to return to", std::string(req.matches[1])), "session", "session_not_found"});
    send_json(res, session_json(*engine.session(req.matches[1])));
  });
  svr.Delete(R"(/v1/sessions/([^/]+))", [&](const httplib::Request& req, httplib::Response& res) {
    if (!engine.erase_session(req.matches[1])) return no_session(res, req.matches[1]);
    send_json(res, {{"id", std::string(req.matches[1])}, {"object", "session"}, {"deleted", true}});
  });
  svr.Get("/metrics", [&](const httplib::Request&, httplib::Response& res) {
    res.set_content(prometheus(engine.metrics()), "text/plain; version=0.0.4");
  });

  // SIGINT / SIGTERM: stop accepting, end the streams, exit 0.
  train::StopScope signals;
  std::atomic<bool> serving{true};
  std::thread watcher([&] {
    while (serving && train::stop_signal() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    engine.stop();
    svr.stop();
  });
  const int port = o.port == 0 ? svr.bind_to_any_port(o.host) : (svr.bind_to_port(o.host, o.port) ? o.port : -1);
  if (port < 0) {
    serving = false;
    watcher.join();
    throw Error(fmt::format("cannot listen on {}:{} (in use, or not an address of this machine)", o.host, o.port));
  }
  fmt::print(stderr, "serving {} ({}, context {}) on http://{}:{}/ ({} sequences at once, {} waiting)\n",
             model_name, mechanism_name(ck.config.attention.mechanism), ck.config.context, o.host, port,
             o.parallel, o.max_queue);
  svr.listen_after_bind();
  serving = false;
  watcher.join();
  fmt::print(stderr, "stopped\n");
}
}  // namespace

void add_serve(CLI::App& app) {
  auto o = std::make_shared<ServeOptions>();
  auto* cmd = app.add_subcommand("serve", "Serve a checkpoint over HTTP: OpenAI-compatible completions and chat, "
                                          "sessions, a web page (docs/SERVE.md)");
  cmd->add_option("--checkpoint", o->checkpoint, "a checkpoint, or a run directory (its latest)")->required();
  cmd->add_option("--host", o->host, "address to listen on")->capture_default_str();
  cmd->add_option("--port", o->port, "port (0: any free one, printed)")->capture_default_str();
  cmd->add_option("--parallel", o->parallel, "sequences decoded at once (one batched step)")->capture_default_str();
  cmd->add_option("--max-queue", o->max_queue, "requests waiting beyond those before 503")->capture_default_str();
  auto* key = cmd->add_option("--api-key", o->api_key, "require Authorization: Bearer KEY on the API");
  cmd->add_option("--api-key-file", o->api_key_file, "the key from a file")->excludes(key);
  cmd->add_option("--max-tokens", o->max_tokens, "cap on a request's max_tokens")->capture_default_str();
  cmd->add_option("--max-body", o->max_body_kb, "largest request body, KiB (413 beyond)")->capture_default_str();
  cmd->add_option("--max-sessions", o->max_sessions, "sessions kept in memory (the least recently used "
                                                     "is evicted: to --session-dir, or gone)")->capture_default_str();
  cmd->add_option("--session-mb", o->session_mb, "memory for kept states: sessions (and their rollback "
                                                 "states) and cached prompt prefixes, MiB; beyond, the "
                                                 "least recently used is evicted")->capture_default_str();
  cmd->add_option("--state-mb", o->state_mb, "memory for the running sequences' decoding states, MiB, "
                                             "reserved at admission for each request's longest (KV "
                                             "caches grow with prompt + max_tokens): a request waits "
                                             "until it fits (default: 40% of this machine's memory)");
  cmd->add_option("--prefix-stride", o->prefix_stride, "tokens between the cached prefix states of a prompt "
                                                       "(rounded up to the block; its last block boundary "
                                                       "is kept too; sketch mechanisms; 0: no prefix cache)")->capture_default_str();
  cmd->add_option("--session-dir", o->session_dir, "keep sessions as snapshot files here: evicted ones, "
                                                   "and all when the server stops; a restarted server "
                                                   "(same model) continues them");
  cmd->add_option("--timeout", o->timeout_s, "seconds a whole (non-streamed) request may take")->capture_default_str();
  cmd->add_option("--batch-invariant", o->batch_invariant,
                  "decode with products whose rounding does not depend on the batch: a request gives the "
                  "same tokens alone or among others (false: oneDNN's faster products where it is the "
                  "GEMM backend)")->capture_default_str();
  add_runtime_flags(cmd, o->runtime);
  cmd->callback([o] { run_serve(*o); });
}

}  // namespace polysketch::cli
