#!/usr/bin/env python3
"""polysketch serve, end to end over loopback (bounded: a tiny model, a few hundred tokens, every
call with a timeout). Usage: serve_test.py POLYSKETCH_BINARY

Checks every endpoint, streaming against whole responses, greedy determinism alone and among
concurrent requests, sessions (continued over 3 requests = one request over the whole text,
cached_tokens, list/get/delete), n samples, stop strings, cancellation, the error table, the API
key, the queue limit (503 + Retry-After), metrics, and a clean exit on SIGTERM."""
import json
import os
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_harness import Server as _Server, check, failures, metric, tiny_model  # noqa: E402

BIN = sys.argv[1]
TMP = tempfile.mkdtemp()


def Server(*flags):
    return _Server(BIN, f"{TMP}/run", *flags)


tiny_model(BIN, TMP)

s = Server("--parallel", "8")
greedy = {"prompt": "And God said", "max_tokens": 24, "temperature": 0}

# Discovery and tokens
status, body = s.get("/health")
check(status == 200 and json.loads(body)["status"] == "ok", "health")
status, body = s.get("/v1/models")
check(status == 200 and json.loads(body)["data"][0]["object"] == "model", "models")
status, page = s.get("/")
check(status == 200 and "<title>polysketch serve</title>" in page, "web page")
st, tok, _ = s.post("/tokenize", {"content": "In the beginning God created"})
check(st == 200 and all(isinstance(t, int) for t in tok["tokens"]), "tokenize")
st, detok, _ = s.post("/detokenize", {"tokens": tok["tokens"]})
check(st == 200 and detok["content"] == "In the beginning God created", "detokenize round trip")

# Whole against streamed, and the response shapes
st, whole, _ = s.post("/v1/completions", greedy)
check(st == 200 and whole["object"] == "text_completion", "completion object")
choice = whole["choices"][0]
check(choice["finish_reason"] in ("length", "stop") and len(choice["tokens"]) <= 24, "finish reason, tokens")
check(whole["usage"]["completion_tokens"] == len(choice["tokens"]), "usage completion tokens")
check(whole["usage"]["prompt_tokens"] == len(tok["tokens"]) - 1 or whole["usage"]["prompt_tokens"] > 0, "usage prompt tokens")
events = s.stream("/v1/completions", greedy)
check("".join(e["choices"][0]["text"] for e in events) == choice["text"], "streamed text = whole text")
check(sum((e["choices"][0]["tokens"] for e in events), []) == choice["tokens"], "streamed tokens = whole tokens")
check(events[-1]["choices"][0]["finish_reason"] == choice["finish_reason"], "streamed finish reason")
check(all(e["id"] == events[0]["id"] for e in events), "one id per stream")
ue = s.stream("/v1/completions", {**greedy, "stream_options": {"include_usage": True}})
check(ue[-1]["choices"] == [] and ue[-1]["usage"]["completion_tokens"] == len(choice["tokens"]), "stream usage chunk")
chat = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Who made light?"}],
        "max_tokens": 10, "temperature": 0}
st, cw, _ = s.post("/v1/chat/completions", chat)
check(st == 200 and cw["object"] == "chat.completion" and cw["choices"][0]["message"]["role"] == "assistant", "chat")
ce = s.stream("/v1/chat/completions", chat)
check(ce[0]["object"] == "chat.completion.chunk" and ce[0]["choices"][0]["delta"].get("role") == "assistant", "chat stream role")
check("".join(e["choices"][0]["delta"].get("content", "") for e in ce) == cw["choices"][0]["message"]["content"],
      "chat stream = chat")
st, echo, _ = s.post("/v1/completions", {**greedy, "echo": True})
check(echo["choices"][0]["text"] == "And God said" + choice["text"], "echo")

# Determinism among concurrent requests (greedy: batched steps change nothing) and with a seed
results = [None] * 8
def worker(i):
    results[i] = s.post("/v1/completions", greedy if i % 2 == 0 else {**greedy, "temperature": 0.9, "seed": 5})[1]
threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join(120)
check(all(r["choices"][0]["text"] == choice["text"] for r in results[0::2]), "greedy text alone = among 8 concurrent")
st, seeded, _ = s.post("/v1/completions", {**greedy, "temperature": 0.9, "seed": 5})
check(all(r["choices"][0]["tokens"] == seeded["choices"][0]["tokens"] for r in results[1::2]),
      "seeded text alone = among concurrent")

# ignore_eos: the output runs to max_tokens even where the end-of-document token is drawn
st, long_run, _ = s.post("/v1/completions", {"prompt": "x", "max_tokens": 300, "temperature": 1.5, "seed": 1, "ignore_eos": True})
check(long_run["choices"][0]["finish_reason"] == "length" and len(long_run["choices"][0]["tokens"]) == 300
      and 1 in long_run["choices"][0]["tokens"], "ignore_eos: past the end-of-document token (id 1)")

# n samples, stop strings
st, three, _ = s.post("/v1/completions", {**greedy, "n": 3})
check([c["index"] for c in three["choices"]] == [0, 1, 2] and len({c["text"] for c in three["choices"]}) == 1,
      "n = 3 greedy samples are equal")
st, three, _ = s.post("/v1/completions", {**greedy, "n": 3, "temperature": 1.5, "seed": 2})
check(len(three["choices"]) == 3 and three["usage"]["completion_tokens"] == sum(len(c["tokens"]) for c in three["choices"]),
      "n = 3 usage")
text = choice["text"]
if len(text) > 6:
    cut = text[3:6]
    st, stopped, _ = s.post("/v1/completions", {**greedy, "stop": [cut, "\u00a7never"]})
    check(stopped["choices"][0]["finish_reason"] == "stop" and stopped["choices"][0]["text"] == text[:text.index(cut)],
          f"stop string {cut!r}")
    ev = s.stream("/v1/completions", {**greedy, "stop": cut})
    check("".join(e["choices"][0]["text"] for e in ev) == text[:text.index(cut)], "streamed stop string")

# logprobs: per token, the drawn token's and the top ones (greedy: the drawn one is the best)
st, lp, _ = s.post("/v1/completions", {**greedy, "logprobs": 3})
L = lp["choices"][0]["logprobs"]
check(lp["choices"][0]["tokens"] == choice["tokens"], "logprobs change nothing drawn")
check(len(L["tokens"]) == len(L["token_logprobs"]) == len(L["top_logprobs"]) == len(choice["tokens"]), "logprobs per token")
check(all(x <= 0 for x in L["token_logprobs"]), "log-probabilities are <= 0")
check(all(1 <= len(t) <= 3 and abs(max(t.values()) - x) < 1e-6 for t, x in zip(L["top_logprobs"], L["token_logprobs"])),
      "greedy: the drawn token has the top log-probability")
ev = s.stream("/v1/completions", {**greedy, "logprobs": 3})
streamed = [x for e in ev for x in (e["choices"][0]["logprobs"] or {"token_logprobs": []})["token_logprobs"]]
check(streamed == L["token_logprobs"], "streamed logprobs = whole")
st, cl, _ = s.post("/v1/chat/completions", {**chat, "logprobs": True, "top_logprobs": 2})
content = cl["choices"][0]["logprobs"]["content"]
check(len(content) == cl["usage"]["completion_tokens"] and all(len(c["top_logprobs"]) == 2 and
      isinstance(c["bytes"], list) for c in content), "chat logprobs")
check(s.post("/v1/completions", greedy)[1]["choices"][0]["logprobs"] is None, "no logprobs unless asked")

# Prefix cache: a prompt read again starts from its last block boundary's state, and draws
# exactly what the cold request drew (same log-probabilities: the same arithmetic)
long_prompt = {"prompt": "In the beginning God created the heaven and the earth. " * 8, "max_tokens": 8,
               "temperature": 0, "logprobs": 1}
hits_before = metric(s, "polysketch_prefix_cache_hits_total")
st, cold, _ = s.post("/v1/completions", long_prompt)
st, warm, _ = s.post("/v1/completions", long_prompt)
n_prompt = cold["usage"]["prompt_tokens"]
check(cold["usage"]["prompt_tokens_details"]["cached_tokens"] == 0, "cold request: nothing cached")
check(warm["usage"]["prompt_tokens_details"]["cached_tokens"] == n_prompt // 16 * 16 and warm["usage"]["prompt_tokens"] == n_prompt,
      f"prefix hit at the last block boundary: {warm['usage']}")
check(warm["choices"][0]["logprobs"]["token_logprobs"] == cold["choices"][0]["logprobs"]["token_logprobs"],
      "prefix hit = cold request, exactly")
st, other, _ = s.post("/v1/completions", {**long_prompt, "prompt": long_prompt["prompt"] + "And God saw the light."})
check(other["usage"]["prompt_tokens_details"]["cached_tokens"] == n_prompt // 16 * 16, "a longer prompt reuses the prefix")
check(metric(s, "polysketch_prefix_cache_hits_total") - hits_before == 2, "prefix hits counted")

# Long prompts read between other sequences' steps give what they give alone
longs = [None] * 4
def long_worker(i):
    longs[i] = s.post("/v1/completions", {**long_prompt, "prompt": f"{i} " + long_prompt["prompt"], "max_tokens": 12})[1]
threads = [threading.Thread(target=long_worker, args=(i,)) for i in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join(120)
for i in (0, 3):
    st, alone, _ = s.post("/v1/completions", {**long_prompt, "prompt": f"{i} " + long_prompt["prompt"], "max_tokens": 12})
    check(alone["choices"][0]["tokens"] == longs[i]["choices"][0]["tokens"], f"long prompt {i} alone = among 4")

# Sessions: three requests continuing one session = one request over the whole token sequence
p1, p2, p3 = tok["tokens"][:3], tok["tokens"][3:5], tok["tokens"][5:]
ids, history = [], []
for i, p in enumerate((p1, p2, p3)):
    st, r, _ = s.post("/v1/completions", {"prompt": p, "max_tokens": 6, "temperature": 0, "session": "chat-1"})
    check(st == 200, f"session request {i}: {r}")
    check(r["usage"]["prompt_tokens_details"]["cached_tokens"] == len(history), f"session {i} cached tokens")
    history += p + r["choices"][0]["tokens"]
    ids.append(r["choices"][0]["tokens"])
st, one, _ = s.post("/v1/completions", {"prompt": history[:len(history) - len(ids[2])], "max_tokens": 6, "temperature": 0})
check(one["choices"][0]["tokens"] == ids[2], "session over 3 requests = one request over the whole text")
st, info, _ = s.call("GET", "/v1/sessions/chat-1", None)
check(st == 200 and info["position"] == len(history), f"session position {info}")
session_bytes = info["bytes"]
st, lst, _ = s.call("GET", "/v1/sessions", None)
check(any(x["id"] == "chat-1" for x in lst["data"]), "session list")
st, _, _ = s.call("DELETE", "/v1/sessions/chat-1", None)
check(st == 200, "session delete")
st, err, _ = s.call("GET", "/v1/sessions/chat-1", None)
check(st == 404 and err["error"]["code"] == "session_not_found", "deleted session is 404")

# Cancellation: a client that goes away frees its sequence
c = s.conn()
c.request("POST", "/v1/completions", body=json.dumps({"prompt": "And", "max_tokens": 4000, "stream": True}))
r = c.getresponse()
r.read1(100)
c.close()
freed = False
for _ in range(50):
    time.sleep(0.1)
    metrics = s.get("/metrics")[1]
    if "polysketch_active_sequences 0" in metrics:
        freed = True
        break
check(freed, "a closed stream frees its sequence")
check("polysketch_requests_total" in metrics and "polysketch_time_to_first_token_seconds" in metrics, "metrics")

# The error table: status, type and the field named
errors = [
    ("/v1/completions", "{not json", 400, None),
    ("/v1/completions", {"prompt": "x", "max_tokens": 0}, 400, "max_tokens"),
    ("/v1/completions", {"prompt": "x", "temperature": -1}, 400, "temperature"),
    ("/v1/completions", {"prompt": "x", "top_p": 2}, 400, "top_p"),
    ("/v1/completions", {"prompt": "x", "n": 0}, 400, "n"),
    ("/v1/completions", {"prompt": "x", "stop": [1]}, 400, "stop"),
    ("/v1/completions", {"prompt": [1, 99999]}, 400, "prompt"),
    ("/v1/completions", {"max_tokens": 3}, 400, "prompt"),
    ("/v1/completions", {"prompt": "x", "bogus": 1}, 400, "bogus"),
    ("/v1/completions", {"prompt": "x", "session": "../etc"}, 400, "session"),
    ("/v1/completions", {"prompt": "x", "session": "a", "n": 2}, 400, "n"),
    ("/v1/completions", {"prompt": "x", "logprobs": 21}, 400, "logprobs"),
    ("/v1/completions", {"prompt": "x", "logprobs": "3"}, 400, "logprobs"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2}, 400, "top_logprobs"),
    ("/v1/chat/completions", {"messages": []}, 400, "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "robot", "content": "x"}]}, 400, "messages"),
    ("/tokenize", {"text": 1}, 400, "content"),
    ("/detokenize", {"tokens": [-1]}, 400, "tokens"),
]
for path, body, status, param in errors:
    st, err, _ = s.post(path, body)
    ok = st == status and isinstance(err, dict) and err["error"]["type"] == "invalid_request_error"
    check(ok and (param is None or err["error"]["param"] == param), f"error {path} {body}: {st} {err}")
st, err, _ = s.post("/v1/completions", {"prompt": "x" * (2 << 20)})
check(st == 413 and err["error"]["code"] == "payload_too_large", f"413: {st}")
st, body = s.get("/v1/nothing")
check(st == 404 and json.loads(body)["error"]["code"] == "not_found", "404 route")
s.stop()

# Sessions on disk: fork, rollback, eviction past --max-sessions, a restart (and a kill -9) that
# keeps the saved snapshots, a corrupt one refused, ids that are not names refused.
sdir = f"{TMP}/sessions"
s = Server("--session-dir", sdir, "--max-sessions", "1")
turn = {"max_tokens": 5, "temperature": 0}
st, a1, _ = s.post("/v1/completions", {**turn, "prompt": p1, "session": "a"})
st, f, _ = s.post("/v1/sessions/a/fork", {"id": "b"})
check(st == 200 and f["position"] == len(p1) + len(a1["choices"][0]["tokens"]), f"fork {f}")
check(os.path.exists(f"{sdir}/a.state"), "evicted session saved to the directory")
st, a2, _ = s.post("/v1/completions", {**turn, "prompt": p2, "session": "a"})
st, rb, _ = s.post("/v1/sessions/a/rollback", {})  # (rollback history does not survive an eviction)
check(st == 200 and rb["position"] == f["position"], f"rollback {rb}")
st, a2b, _ = s.post("/v1/completions", {**turn, "prompt": p2, "session": "a"})
check(a2b["choices"][0]["tokens"] == a2["choices"][0]["tokens"], "regenerate after rollback")
st, b2, _ = s.post("/v1/completions", {**turn, "prompt": p2, "session": "b"})
check(a2["choices"][0]["tokens"] == b2["choices"][0]["tokens"], "a fork continues as the original")
check(b2["usage"]["prompt_tokens_details"]["cached_tokens"] == f["position"], "fork cached tokens")
st, err, _ = s.post("/v1/sessions/zz/rollback", {})
check(st == 404, "rollback of an unknown session")
st, err, _ = s.post("/v1/sessions/a/fork", {"id": "../x"})
check(st == 400 and err["error"]["param"] == "id", "fork to a bad id")
st, err, _ = s.call("GET", "/v1/sessions/..%2F..%2Fetc", None)
check(st == 404, "a path is not a session id")
position = s.call("GET", "/v1/sessions/a", None)[1]["position"]
s.stop()  # SIGTERM saves every session
check(os.path.exists(f"{sdir}/a.state") and os.path.exists(f"{sdir}/b.state"), "sessions saved at exit")
s = Server("--session-dir", sdir)
st, a3, _ = s.post("/v1/completions", {**turn, "prompt": p3, "session": "a"})
check(st == 200 and a3["usage"]["prompt_tokens_details"]["cached_tokens"] == position, "a restarted server continues a session")
s.proc.kill()  # kill -9: the snapshot files written before are intact
s.proc.wait()
s = Server("--session-dir", sdir)
check(s.call("GET", "/v1/sessions/b", None)[0] == 200, "snapshot readable after kill -9")
with open(f"{sdir}/a.state", "r+b") as fh:  # not loaded by this server yet
    fh.seek(40)
    fh.write(b"garbage")
st, err, _ = s.post("/v1/completions", {**turn, "prompt": p3, "session": "a"})
check(st in (400, 503) and "a.state" in err["error"]["message"], f"corrupt snapshot refused: {st} {err}")
s.stop()

# --session-mb: kept states beyond the budget are evicted, least recently used first (no directory:
# gone, with a 404 that says so)
s = Server("--session-mb", str(2.5 * session_bytes / 2**20), "--prefix-stride", "0")
for sid in ("s1", "s2", "s3"):
    st, _, _ = s.post("/v1/completions", {**turn, "prompt": p1, "session": sid})
    check(st == 200, f"session {sid}")
check(s.call("GET", "/v1/sessions/s2", None)[0] == 200 and s.call("GET", "/v1/sessions/s3", None)[0] == 200,
      "sessions within the budget kept")
st, err, _ = s.call("GET", "/v1/sessions/s1", None)
check(st == 404 and "evicted" in err["error"]["message"], f"least recently used session evicted: {st} {err}")
check(metric(s, "polysketch_session_state_bytes") <= 2.5 * session_bytes, "state bytes within the budget")
s.stop()

# softmax: KV caches against --state-mb (1 KiB per token here): a request that cannot fit alone
# is refused before anything runs; two that fit only one at a time both complete, one after the other
soft = _Server(BIN, tiny_model(BIN, TMP, "softmax", steps=2), "--state-mb", "0.1")
st, err, _ = soft.post("/v1/completions", {"prompt": "And God", "max_tokens": 200})
check(st == 400 and "--state-mb" in err["error"]["message"] and err["error"]["param"] == "max_tokens",
      f"softmax request larger than --state-mb refused: {st} {err}")
pair = [None, None]
def soft_worker(i):
    c = soft.conn()
    c.request("POST", "/v1/completions", body=json.dumps({"prompt": "And God", "max_tokens": 60, "ignore_eos": True,
                                                         "stream": True}))
    r, body = c.getresponse(), b""
    while b"[DONE]" not in body:
        chunk = r.read1(65536)
        if not chunk:
            break
        body += chunk
    pair[i] = (r.status, b"[DONE]" in body)
threads = [threading.Thread(target=soft_worker, args=(i,)) for i in range(2)]
for t in threads:
    t.start()
# The server's own count of sequences being decoded, sampled while both requests are open (the
# clients' arrival times cannot tell: their threads may be descheduled on a loaded machine).
most, deadline = 0, time.monotonic() + 120
while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
    most = max(most, metric(soft, "polysketch_active_sequences"))
    time.sleep(0.002)
for t in threads:
    t.join(120)
check(all(p and p[0] == 200 and p[1] for p in pair), "softmax requests within --state-mb complete")
check(most == 1, f"requests that fit one at a time run one after the other (at most {most} at once)")
soft.stop()

# The API key; the queue limit
s = Server("--api-key", "sesame", "--parallel", "1", "--max-queue", "0")
st, err, _ = s.post("/v1/completions", greedy)
check(st == 401 and err["error"]["code"] == "invalid_api_key", "401 without the key")
check(s.get("/health")[0] == 200, "health needs no key")
auth = {"Authorization": "Bearer sesame"}
st, _, _ = s.post("/v1/completions", greedy, auth)
check(st == 200, "200 with the key")
codes, retry = [], []
def busy(i):
    st, _, r = s.post("/v1/completions", {**greedy, "max_tokens": 200}, auth)
    codes.append(st)
    if st == 503:
        retry.append(r.getheader("Retry-After"))
threads = [threading.Thread(target=busy, args=(i,)) for i in range(6)]
for t in threads:
    t.start()
for t in threads:
    t.join(120)
check(set(codes) <= {200, 503} and 503 in codes and 200 in codes and all(retry), f"queue limit: {codes}")
s.stop()

if failures:
    print(f"{len(failures)} check(s) failed")
    sys.exit(1)
print("serve: all checks passed")
