#!/usr/bin/env python3
"""A small PyTorch language model whose attention is polysketch's (PolySketchAttention), trained
for a minute on the prepared default corpus (`polysketch prepare --out data/kjv`), printing its
loss as it falls.

    PYTHONPATH=build/release/python /usr/bin/python3 examples/torch_lm.py [--data data/kjv] [--seconds 60]
"""
import argparse
import math
import time

import numpy as np
import torch
from torch import nn

import polysketch
import polysketch.torch as pst


class Block(nn.Module):
    def __init__(self, width, heads, mechanism, block, layer):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.attn = pst.PolySketchAttention(width // heads, mechanism=mechanism, r=32, block=block, layer=layer)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x):
        b, n, w = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, n, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        o = self.attn(q, k, v).transpose(1, 2).reshape(b, n, w)
        x = x + self.proj(o)
        return x + self.mlp(self.ln2(x))


class LM(nn.Module):
    def __init__(self, vocab, width, heads, layers, context, mechanism, block):
        super().__init__()
        self.emb = nn.Embedding(vocab, width)
        nn.init.normal_(self.emb.weight, std=0.02)  # tied with the output: small logits at the start
        self.pos = nn.Parameter(0.02 * torch.randn(context, width))
        self.blocks = nn.ModuleList(Block(width, heads, mechanism, block, i) for i in range(layers))
        self.ln = nn.LayerNorm(width)

    def forward(self, x):
        h = self.emb(x) + self.pos[: x.shape[1]]
        for blk in self.blocks:
            h = blk(h)
        return self.ln(h) @ self.emb.weight.T


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data/kjv", help="a directory made by `polysketch prepare`")
    ap.add_argument("--mechanism", default="polysketch-learned-local")
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--context", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    torch.manual_seed(0)
    train = torch.from_numpy(polysketch.read_tokens(f"{args.data}/train.bin").astype(np.int64))
    vocab = int(train.max()) + 1
    model = LM(vocab, width=128, heads=2, layers=2, context=args.context, mechanism=args.mechanism, block=64)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.1)
    print(f"{sum(p.numel() for p in model.parameters())} parameters, {args.mechanism}, vocab {vocab}, "
          f"{train.numel()} training tokens; uniform loss {math.log(vocab):.3f}")
    start, step = time.time(), 0
    while time.time() - start < args.seconds:
        idx = torch.randint(0, train.numel() - args.context - 1, (args.batch,))
        x = torch.stack([train[i:i + args.context] for i in idx])
        y = torch.stack([train[i + 1:i + args.context + 1] for i in idx])
        loss = nn.functional.cross_entropy(model(x).reshape(-1, vocab), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step % 10 == 0 or step == 1:
            print(f"step {step:4d}  loss {loss.item():.3f}  ({time.time() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
