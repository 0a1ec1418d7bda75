#!/usr/bin/env python3
"""The Python front end's overhead (docs/BENCHMARKS.md, "Python"): forward + backward of
PolySketchAttention through torch autograd against the C++ benchmark (`polysketch
bench-attention`) on the same shape, measured in one run, alternating, medians.

    PYTHONPATH=build/release/python /usr/bin/python3 bench/python_overhead.py [--n 4096 ...]
"""
import argparse
import json
import statistics
import subprocess
import time

import torch

import polysketch.torch as pst


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default="build/release/polysketch")
    ap.add_argument("--mechanism", default="polysketch")
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=7, help="timed runs of each side per round")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()

    attn = pst.PolySketchAttention(a.head_dim, mechanism=a.mechanism, causal=True, p=4, r=32, block=256)
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, a.heads, a.n, a.head_dim, generator=gen, requires_grad=True) for _ in range(3))
    dout = torch.randn(1, a.heads, a.n, a.head_dim, generator=gen)

    def python_once():
        for t in (q, k, v, *attn.parameters()):
            t.grad = None
        t0 = time.perf_counter()
        attn(q, k, v).backward(dout)
        return time.perf_counter() - t0

    python_once()  # warm-up (the GEMM backend choice, first-touch allocations)
    py_times, cpp_times = [], []
    for _ in range(a.rounds):
        py_times += [python_once() for _ in range(a.repeat)]
        out = subprocess.run([a.bin, "bench-attention", "--mechanism", a.mechanism, "--n", str(a.n),
                              "--heads", str(a.heads), "--head-dim", str(a.head_dim), "--pass", "fwd+bwd",
                              "--repeat", str(a.repeat), "--json"], check=True, capture_output=True,
                             text=True).stdout
        cpp_times.append(json.loads(out.splitlines()[0])["seconds"])
    py, cpp = statistics.median(py_times), statistics.median(cpp_times)
    print(json.dumps({"mechanism": a.mechanism, "n": a.n, "heads": a.heads, "head_dim": a.head_dim,
                      "python_s": py, "cpp_s": cpp, "overhead": py / cpp - 1,
                      "python_runs": len(py_times), "cpp_medians": cpp_times}))


if __name__ == "__main__":
    main()
