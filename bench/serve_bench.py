#!/usr/bin/env python3
"""The serving benchmark of docs/BENCHMARKS.md ("Serving"): a load generator against
`polysketch serve` on loopback, and the targets of the serve issue, in one run.

Usage: bench/serve_bench.py [--bin build/release/polysketch] [--out docs/bench/serve.jsonl]
                            [--work DIR] [--threads 2] [--quick]

Model: the bench-decode shape (4 layers, width 768, 12 heads, vocab 4096, r 32, block 256;
polysketch-learned-local), trained for one step on the KJV (its weights are as good as random:
this measures speed, not text), and a softmax model of the same shape for the refusals. Every
request is bounded (timeouts), every server stops by itself, loopback only. Measures:
  decode     bench-decode at 4096 tokens, batch 1 and 16 (warm-up excluded, 256 timed tokens,
             interleaved, median of 3), both --batch-invariant settings
  streams    16 concurrent streams continuing 4096-token sessions: aggregate tokens/s in the
             window where all 16 run, against bench-decode --batch 16 in the same run
  sessions   128 sessions forked from one 16k-token history, 64 new tokens each: all served, RSS;
             time to first token of a next turn against the same history sent as a fresh prompt;
             softmax at the same sizes refused cleanly
  prefix     a prompt sharing a cached 4096-token prefix: time to first token against uncached
  long       8 running streams while a 16k-token prompt is read: their inter-token latency p99
             against its median without the long prompt
  load       2000 requests at concurrency 64 (mixed lengths, streamed or whole, some cancelled):
             lost requests, status codes, requests/s, TTFT and ITL p50/p99, tokens/s, RSS after
             the first and the last thousand
Writes one JSON object per measurement to --out and prints a table; a PNG of the long-prompt
latencies next to it (gnuplot)."""
import argparse
import http.client
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from serve_harness import Server, failures  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--bin", default="build/release/polysketch")
ap.add_argument("--out", default="docs/bench/serve.jsonl")
ap.add_argument("--work", default="/tmp/polysketch-serve-bench")
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--quick", action="store_true", help="small sizes (a smoke test of the script)")
ap.add_argument("--only", default="", help="comma-separated parts: decode,streams,sessions,prefix,long,load")
args = ap.parse_args()
BIN, WORK, THREADS = os.path.abspath(args.bin), args.work, args.threads
Q = args.quick
CTX = 512 if Q else 4096          # the streams' and prefix's context
LONG = 2048 if Q else 16384       # the long history / prompt
SESSIONS = 16 if Q else 128
LOAD = 200 if Q else 2000
results = []
ONLY = set(filter(None, args.only.split(",")))


def want(part):
    return not ONLY or part in ONLY


def emit(name, **fields):
    row = {"bench": name, **fields}
    results.append(row)
    print(json.dumps(row), flush=True)


def run(*a, **kw):
    return subprocess.run([BIN, *a], check=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                          timeout=3600, **kw).stdout


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def rss_mb(proc):
    with open(f"/proc/{proc.pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def request(port, path, body, cancel_after=None, timeout=600):
    """One request; streamed ones record the arrival time of every token event. Returns a dict:
    status, ok (a complete response or a well-formed error), t0, first, times (per event),
    tokens, code (the error code), cancelled."""
    out = {"status": 0, "ok": False, "times": [], "tokens": 0, "first": None, "code": None, "cancelled": False}
    out["t0"] = time.monotonic()
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        c.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
        r = c.getresponse()
        out["status"] = r.status
        if r.status != 200 or not body.get("stream"):
            j = json.loads(r.read())
            if r.status == 200:
                out["tokens"] = j["usage"]["completion_tokens"]
                out["first"] = time.monotonic()
                out["ok"] = all(ch["finish_reason"] in ("stop", "length") for ch in j["choices"])
            else:
                out["code"] = j["error"]["code"]
                out["ok"] = isinstance(j["error"]["message"], str)
            return out
        buf = b""
        while True:
            chunk = r.read1(65536)
            if not chunk:
                return out  # ended without [DONE]: lost
            buf += chunk
            while b"\n\n" in buf:
                line, buf = buf.split(b"\n\n", 1)
                if line == b"data: [DONE]":
                    out["ok"] = True
                    return out
                j = json.loads(line[6:])
                if "error" in j:
                    out["code"] = j["error"].get("code")
                    continue
                n = sum(len(ch.get("tokens", [])) for ch in j["choices"])
                if n:
                    now = time.monotonic()
                    out["first"] = out["first"] or now
                    out["times"].append(now)
                    out["tokens"] += n
                if cancel_after is not None and out["tokens"] >= cancel_after:
                    c.close()
                    out["cancelled"] = out["ok"] = True
                    return out
    except (OSError, ValueError, KeyError) as e:
        out["code"] = f"client: {e!r}"
        return out


def post(server, path, body):
    st, j, _ = server.post(path, body)
    return st, j


def ids(n, seed):
    rng = random.Random(seed)
    return [rng.randrange(2, 4096) for _ in range(n)]


def parallel(jobs, concurrency):
    """Runs the callables `jobs` on `concurrency` threads; returns their results in order."""
    out = [None] * len(jobs)
    lock = threading.Lock()
    nxt = [0]

    def worker():
        while True:
            with lock:
                i = nxt[0]
                nxt[0] += 1
            if i >= len(jobs):
                return
            out[i] = jobs[i]()
    ts = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return out


# The models: one step of training each, on the KJV with a 4096-piece tokenizer.
os.makedirs(WORK, exist_ok=True)
if not os.path.exists(f"{WORK}/data/meta.json"):
    run("prepare", "--out", f"{WORK}/data", "--vocab-size", "4096", "--threads", str(THREADS))
shape = ["--layers", "4", "--width", "768", "--heads", "12", "--r", "32", "--block", "256", "--batch", "1",
         "--steps", "1", "--eval-every", "0", "--eval-batches", "1", "--threads", str(THREADS)]
for mech in ("polysketch-learned-local", "softmax"):
    if not os.path.exists(f"{WORK}/{mech}/latest"):
        run("train", "--data", f"{WORK}/data", "--out", f"{WORK}/{mech}", "--mechanism", mech, "--context", "1024",
            *shape)
MODEL = f"{WORK}/polysketch-learned-local"

# 1. Batched decoding, bench-decode (the ceiling of the server's throughput).
decode = {}
if want("decode") or want("streams"):
    for inv in ("true", "false"):
        out = run("bench-decode", "--mechanism", "polysketch-learned-local", "--context", str(CTX), "--batch", "1,16",
                  "--decode", "64" if Q else "256", "--warmup", "16", "--repeat", "3", "--threads", str(THREADS),
                  "--batch-invariant", inv, "--json")
        for line in out.splitlines():
            j = json.loads(line)
            decode[(inv, j["batch"])] = j["decode_tokens_per_s"]
        emit("decode", context=CTX, batch_invariant=inv == "true", tokens_per_s_batch1=decode[(inv, 1)],
             tokens_per_s_batch16=decode[(inv, 16)], ratio=decode[(inv, 16)] / decode[(inv, 1)], target=6.0)

# 2. 16 concurrent streams at context CTX: sessions forked from one history, 256 new tokens each.
if want("streams"):
    for inv in ("true", "false"):
        s = Server(BIN, MODEL, "--parallel", "16", "--batch-invariant", inv, threads=THREADS, start_s=60)
        st, _ = post(s, "/v1/completions", {"prompt": ids(CTX, 1), "max_tokens": 1, "session": "base"})
        assert st == 200, st
        for i in range(16):
            assert s.post(f"/v1/sessions/base/fork", {"id": f"s{i}"})[0] == 200
        n_new = 64 if Q else 256
        res = parallel([lambda i=i: request(s.port, "/v1/completions", {
            "prompt": [5], "max_tokens": n_new, "temperature": 0, "ignore_eos": True, "stream": True, "session": f"s{i}"})
            for i in range(16)], 16)
        start = max(r["first"] for r in res)
        end = min(r["times"][-1] for r in res)
        inside = sum(sum(1 for t in r["times"] if start < t <= end) for r in res)
        agg = inside / (end - start)
        emit("streams", context=CTX, streams=16, batch_invariant=inv == "true", aggregate_tokens_per_s=agg,
             bench_decode_batch16=decode.get((inv, 16)), ratio=agg / decode[(inv, 16)], target=0.85,
             all_complete=all(r["ok"] and r["tokens"] == n_new for r in res))
        s.stop()

# 3. Sessions: SESSIONS forked from one LONG-token history; TTFT of a next turn against a fresh prompt.
if want("sessions"):
    s = Server(BIN, MODEL, "--parallel", "16", "--session-mb", "8192", threads=THREADS, start_s=60)
    history = ids(LONG, 2)
    fresh = request(s.port, "/v1/completions", {"prompt": history, "max_tokens": 1, "stream": True, "session": "h"})
    ttft_fresh = fresh["first"] - fresh["t0"]
    for i in range(SESSIONS):
        assert s.post("/v1/sessions/h/fork", {"id": f"f{i}"})[0] == 200
    turns = []
    for i in range(3):  # alone: the next turn of a session with a LONG-token history
        r = request(s.port, "/v1/completions", {"prompt": ids(8, 10 + i), "max_tokens": 1, "stream": True,
                                                "session": f"f{i}"})
        turns.append(r["first"] - r["t0"])
    ttft_turn = statistics.median(turns)
    emit("next_turn", history=LONG, ttft_fresh_s=ttft_fresh, ttft_next_turn_s=ttft_turn, ratio=ttft_fresh / ttft_turn,
         target=50.0)
    t0 = time.monotonic()
    res = parallel([lambda i=i: request(s.port, "/v1/completions", {
        "prompt": ids(4, 100 + i), "max_tokens": 64, "ignore_eos": True, "stream": True, "session": f"f{i}"})
        for i in range(SESSIONS)], 16)
    wall = time.monotonic() - t0
    served = sum(1 for r in res if r["ok"] and r["tokens"] == 64)
    rss, hwm = rss_mb(s.proc)
    st, lst = s.call("GET", "/v1/sessions", None)[:2]
    positions = sorted({x["position"] for x in lst["data"] if x["id"].startswith("f")})
    emit("sessions", sessions=SESSIONS, history=LONG, new_tokens=64, served=served, wall_s=wall,
         tokens_per_s=served * 64 / wall, rss_mb=rss, peak_rss_mb=hwm, positions=positions)
    s.stop()
    # softmax at the same size: a 16k-token KV cache is 400 MB (the sketch state: 14 MB); with the
    # memory the sketch model's sessions took as --state-mb / 128, it is refused before it runs.
    budget_mb = max(1, int(hwm / SESSIONS))
    soft = Server(BIN, f"{WORK}/softmax", "--parallel", "16", "--state-mb", str(budget_mb), threads=THREADS,
                  start_s=60)
    r = request(soft.port, "/v1/completions", {"prompt": history, "max_tokens": 64, "session": "x"})
    emit("softmax_refused", history=LONG, state_mb=budget_mb, status=r["status"], code=r["code"],
         clean=r["status"] == 400 and r["ok"])
    soft.stop()

# 4. Prefix cache: a prompt sharing a cached CTX-token prefix against the same length uncached.
if want("prefix"):
    s = Server(BIN, MODEL, "--parallel", "16", threads=THREADS, start_s=60)
    cold, warm = [], []
    for i in range(3):
        prefix = ids(CTX, 20 + i)
        r = request(s.port, "/v1/completions", {"prompt": prefix + ids(16, 30 + i), "max_tokens": 1, "stream": True})
        cold.append(r["first"] - r["t0"])
        r = request(s.port, "/v1/completions", {"prompt": prefix + ids(16, 40 + i), "max_tokens": 1, "stream": True})
        warm.append(r["first"] - r["t0"])
    emit("prefix", prefix=CTX, ttft_uncached_s=statistics.median(cold), ttft_cached_s=statistics.median(warm),
         ratio=statistics.median(cold) / statistics.median(warm), target=10.0)
    s.stop()

# 5. A LONG-token prompt read while 8 streams run: their inter-token latency.
if want("long"):
    s = Server(BIN, MODEL, "--parallel", "16", threads=THREADS, start_s=60)
    streams = []
    lt = []
    for i in range(8):
        t = threading.Thread(target=lambda i=i: streams.append(request(s.port, "/v1/completions", {
            "prompt": ids(16, 50 + i), "max_tokens": 4096, "ignore_eos": True, "stream": True},
            cancel_after=None)))
        lt.append(t)
        t.start()
    time.sleep(8)  # steady state
    base_from = time.monotonic()
    time.sleep(10 if not Q else 3)
    base_to = long_from = time.monotonic()
    long_req = request(s.port, "/v1/completions", {"prompt": ids(LONG, 60), "max_tokens": 1, "stream": True})
    long_to = long_req["first"]
    time.sleep(1)
    for t in lt:  # the streams end when the server stops
        pass
    s.stop()
    for t in lt:
        t.join(60)


    def gaps(lo, hi):
        g = []
        for r in streams:
            ts = r["times"]
            g += [b - a for a, b in zip(ts, ts[1:]) if lo <= a and b <= hi]
        return g


    base_g, long_g = gaps(base_from, base_to), gaps(long_from, long_to)
    emit("long_prompt", prompt=LONG, streams=8, itl_median_without_s=statistics.median(base_g),
         itl_p99_during_s=pct(long_g, 0.99), itl_median_during_s=statistics.median(long_g) if long_g else None,
         prompt_read_s=long_to - long_from, ratio=pct(long_g, 0.99) / statistics.median(base_g), target=4.0)
    with open(f"{WORK}/long_prompt_itl.dat", "w") as f:
        for r in streams:
            ts = r["times"]
            for a, b in zip(ts, ts[1:]):
                if base_from <= a and b <= long_to + 1:
                    f.write(f"{b - long_from:.4f} {1000 * (b - a):.3f}\n")

# 6. LOAD requests at concurrency 64: mixed lengths, streamed or whole, some cancelled.
if want("load"):
    s = Server(BIN, MODEL, "--parallel", "16", "--max-queue", "64", threads=THREADS, start_s=60)
    rng = random.Random(7)
    plan = []
    for i in range(LOAD):
        body = {"prompt": ids(rng.randrange(8, 200), 1000 + i), "max_tokens": rng.randrange(4, 48),
                "temperature": 0.8, "seed": i, "stream": rng.random() < 0.5}
        cancel = rng.randrange(1, 4) if body["stream"] and rng.random() < 0.1 else None
        plan.append((body, cancel))
    halves, rss_after = [], []
    t0 = time.monotonic()
    for half in (plan[:LOAD // 2], plan[LOAD // 2:]):
        halves += parallel([lambda b=b, c=c: request(s.port, "/v1/completions", b, cancel_after=c, timeout=300)
                            for b, c in half], 64)
        time.sleep(1)
        rss_after.append(rss_mb(s.proc)[0])
    wall = time.monotonic() - t0
    statuses = {}
    for r in halves:
        statuses[str(r["status"])] = statuses.get(str(r["status"]), 0) + 1
    lost = [r for r in halves if not r["ok"] or (r["status"] not in (200, 503)) or (r["status"] == 503 and r["code"] != "queue_full")]
    done = [r for r in halves if r["status"] == 200 and r["first"]]
    ttft = [r["first"] - r["t0"] for r in done]
    itl = [b - a for r in done for a, b in zip(r["times"], r["times"][1:])]
    emit("load", requests=LOAD, concurrency=64, wall_s=wall, requests_per_s=LOAD / wall,
         tokens_per_s=sum(r["tokens"] for r in done) / wall, statuses=statuses, lost=len(lost),
         lost_examples=[{k: r[k] for k in ("status", "code")} for r in lost[:5]],
         cancelled=sum(1 for r in halves if r["cancelled"]),
         ttft_p50_s=pct(ttft, 0.5), ttft_p99_s=pct(ttft, 0.99), itl_p50_s=pct(itl, 0.5), itl_p99_s=pct(itl, 0.99),
         rss_after_first_half_mb=rss_after[0], rss_after_second_half_mb=rss_after[1],
         rss_growth=rss_after[1] / rss_after[0] - 1, peak_rss_mb=rss_mb(s.proc)[1])
    s.stop()

tmp = args.out + ".tmp"
with open(tmp, "w") as f:
    for row in results:
        f.write(json.dumps(row) + "\n")
os.replace(tmp, args.out)
png = os.path.splitext(args.out)[0] + "_long_prompt.png"
if want("long"):
    subprocess.run(["gnuplot", "-e", f"""set terminal pngcairo size 900,500 noenhanced; set output '{png}';
set xlabel 's since the long prompt arrived'; set ylabel 'inter-token latency of 8 streams (ms)';
set title 'serve: 8 running streams while a {LONG}-token prompt is read (grey: until its first token)';
set object 1 rect from 0,graph 0 to {long_to - long_from},graph 1 fc rgb '#eeeeee' behind;
plot '{WORK}/long_prompt_itl.dat' using 1:2 with points pt 7 ps 0.4 notitle"""], check=False)
print(f"wrote {args.out} and {png}; {len(failures)} harness failure(s)")
