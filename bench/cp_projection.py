#!/usr/bin/python3
"""Projected step time and efficiency of data x context parallel training of a GPT-2 small
sized model (12 layers, width 768, 12 heads, vocab 50257, polysketch r 32) at 32k and 1M
context on 8, 64 and 512 ranks (docs/BENCHMARKS.md, "Context parallelism").

Compute: the per-token time of one rank, measured here with `polysketch bench-train` on this
model at n = 8192 (a sketch mechanism's tokens/s does not depend on n: linear attention), or
given with --tok-s. Communication, per step:
  context exchange: per layer, forward and backward, one exclusive scan of the block states
    S = heads x r(r+1)/2 x (head_dim+1) x 4 bytes per sequence, in ceil(log2 K) rounds of
    (latency + S / bandwidth) for a recursive-doubling scan, or K-1 such hops for a linear
    chain (the algorithm MPI_Exscan uses depends on the MPI library's collective component:
    both are shown);
  gradient allreduce over all N ranks: ring, 2 (N-1)/N x 4 x parameters / bandwidth
    + 2 (N-1) x latency; shown exposed in full, and hidden behind the backward pass (2/3 of the
    compute) as far as it fits: the trainer starts each layer's allreduce as soon as backward
    has finished that layer, so the truth lies between the two (MPI progresses the started
    sums inside MPI calls, which the trainer makes once per layer).
Ring attention, for comparison, passes every chunk's K and V around the group: per layer and
rank (K-1) x (n/K) x 2 x width x 4 bytes forward and twice that backward (K, V, dK, dV).
Network: --latency-us (default 2) and --gbps (default 100, i.e. 12.5 GB/s: HDR100 InfiniBand
or 100 GbE), one rank per node.
Layout: K = n / 4096 ranks per sequence (4096-token chunks, at most N), N / K data groups, one
sequence per group per step.
Usage: bench/cp_projection.py [--tok-s X] [--speedup F] [--bin build/release/polysketch]
--speedup F: ranks F times faster than this 2-core machine (e.g. 100 for a GPU), same network.
"""
import argparse
import json
import math
import subprocess

LAYERS, WIDTH, HEADS, VOCAB, R = 12, 768, 12, 50257, 32
HD = WIDTH // HEADS
GLU = (8 * WIDTH // 3) // 8 * 8
PARAMS = (VOCAB * WIDTH + VOCAB + 2 * WIDTH
          + LAYERS * (4 * WIDTH + 3 * WIDTH * WIDTH + WIDTH * WIDTH + 3 * WIDTH * GLU
                      + 2 * HD))  # polysketch: one LayerNorm shared by q and k
STATE = HEADS * R * (R + 1) // 2 * (HD + 1) * 4  # bytes per sequence per layer


def measured_tok_s(binary):
    out = subprocess.run([binary, "bench-train", "--mechanism", "polysketch", "--n", "8192",
                          "--layers", str(LAYERS), "--width", str(WIDTH), "--heads", str(HEADS),
                          "--vocab", str(VOCAB), "--r", str(R), "--json"],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["tokens_per_s"]


def project(n, ranks, t_tok, alpha, beta):
    k = min(ranks, max(1, n // 4096))
    groups = ranks // k
    compute = n / k * t_tok
    rounds = math.ceil(math.log2(k)) if k > 1 else 0
    cp_bytes = 2 * LAYERS * STATE  # what each rank passes per step
    cp_time = 2 * LAYERS * rounds * (alpha + STATE / beta)
    cp_chain = 2 * LAYERS * (k - 1) * (alpha + STATE / beta)
    ar_bytes = 4 * PARAMS
    ar_time = 2 * (ranks - 1) / ranks * ar_bytes / beta + 2 * (ranks - 1) * alpha if ranks > 1 else 0
    ring_bytes = 3 * LAYERS * (k - 1) * (n // k) * 2 * WIDTH * 4
    step = compute + cp_time + ar_time
    hidden = compute + cp_time + max(0.0, ar_time - 2 / 3 * compute)
    return dict(k=k, groups=groups, compute_s=compute, context_exchange_s=cp_time,
                chain_s=cp_chain, allreduce_s=ar_time, step_s=step, efficiency=compute / step,
                hidden_efficiency=compute / hidden,
                chain_efficiency=compute / (compute + cp_chain + ar_time), cp_bytes=cp_bytes,
                ring_bytes=ring_bytes)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tok-s", type=float, help="measured training tokens/s of one rank")
    ap.add_argument("--speedup", type=float, default=1.0)
    ap.add_argument("--latency-us", type=float, default=2.0)
    ap.add_argument("--gbps", type=float, default=100.0)
    ap.add_argument("--bin", default="build/release/polysketch")
    a = ap.parse_args()
    tok_s = a.tok_s if a.tok_s else measured_tok_s(a.bin)
    t_tok = 1.0 / (tok_s * a.speedup)
    alpha, beta = a.latency_us * 1e-6, a.gbps * 1e9 / 8
    print(f"GPT-2 small sized: {PARAMS / 1e6:.1f} M parameters; one rank {tok_s * a.speedup:.0f} "
          f"tokens/s; network {a.latency_us} us, {a.gbps} Gb/s; block state {STATE / 1e6:.2f} MB "
          "per layer and sequence")
    print("| context | ranks | K x groups | compute s | state exchange s (doubling / chain) | "
          "allreduce s | efficiency: doubling | doubling, allreduce hidden | chain | "
          "state bytes/rank/step | ring-attention bytes/rank/step |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in (32768, 1 << 20):
        for ranks in (8, 64, 512):
            p = project(n, ranks, t_tok, alpha, beta)
            print(f"| {n} | {ranks} | {p['k']} x {p['groups']} | {p['compute_s']:.3g} | "
                  f"{p['context_exchange_s']:.3g} / {p['chain_s']:.3g} | {p['allreduce_s']:.3g} | "
                  f"{100 * p['efficiency']:.1f}% | {100 * p['hidden_efficiency']:.1f}% | "
                  f"{100 * p['chain_efficiency']:.1f}% | {p['cp_bytes'] / 1e6:.1f} MB | "
                  f"{p['ring_bytes'] / 1e9:.2f} GB |")


if __name__ == "__main__":
    main()
