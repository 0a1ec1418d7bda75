"""polysketch: PolySketchFormer attention and language models from Python.

    import polysketch
    out = polysketch.attention(q, k, v, mechanism="polysketch")      # numpy, [batch, heads, n, dim]
    lm = polysketch.load("runs/quickstart")                            # a trained checkpoint
    for piece in lm.generate("And God said", max_tokens=50, seed=1): print(piece, end="")

PyTorch: ``polysketch.torch.PolySketchAttention`` (an nn.Module with autograd). API: docs/PYTHON.md.
Errors from the library raise ValueError with the library's message.
"""
import json
import math

import numpy as np

from . import _core

__all__ = ["attention", "load", "LanguageModel", "Tokenizer", "mechanisms", "set_num_threads",
           "get_num_threads", "read_tokens", "MECHANISMS"]

MECHANISMS = tuple(_core.mechanisms())
Tokenizer = _core.Tokenizer
set_num_threads = _core.set_num_threads
get_num_threads = _core.get_num_threads


def read_tokens(path):
    """The token ids of a shard written by `polysketch prepare` (train.bin, val.bin): int32 numpy."""
    return _core.read_shard(str(path))


def mechanisms():
    """The mechanism names: softmax, polynomial, polysketch, polysketch-learned, ..."""
    return list(MECHANISMS)


def _check_qkv(q, k, v, allowed=(np.float32, np.float64)):
    """Checks shapes and dtypes of numpy q, k, v; returns them C-contiguous (copies only if not)."""
    arrays = []
    for name, a in (("q", q), ("k", k), ("v", v)):
        if not isinstance(a, np.ndarray):
            raise TypeError(f"{name} must be a numpy array, got {type(a).__name__}")
        if a.ndim != 4:
            raise ValueError(f"{name} must have 4 dimensions [batch, heads, n, dim], got shape {a.shape}")
        if a.dtype not in allowed:
            raise ValueError(f"{name} must be float32 or float64, got {a.dtype}")
        arrays.append(np.ascontiguousarray(a))
    q, k, v = arrays
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v must have one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if q.shape != k.shape:
        raise ValueError(f"q and k must have the same shape, got {q.shape} and {k.shape}")
    if v.shape[:3] != q.shape[:3]:
        raise ValueError(f"v must be [batch, heads, n, value_dim] like q {q.shape}, got {v.shape}")
    if min(q.shape) < 1 or v.shape[3] < 1:
        raise ValueError(f"every dimension must be at least 1, got q {q.shape}, v {v.shape}")
    return q, k, v


def _check_documents(documents, q):
    """None, or document ids [batch, n] (integers, non-decreasing along each sequence) as int32."""
    if documents is None:
        return None
    d = np.asarray(documents)
    if d.dtype.kind not in "iu":
        raise ValueError(f"documents must be integers, got {d.dtype}")
    if d.shape != (q.shape[0], q.shape[2]):
        raise ValueError(f"documents must be [batch, n] = [{q.shape[0]}, {q.shape[2]}], got shape {d.shape}")
    if d.size and (d.min() < 0 or d.max() > np.iinfo(np.int32).max):
        raise ValueError("documents must be ids in [0, 2**31)")
    return np.ascontiguousarray(d, dtype=np.int32)


def _impl(dtype, mechanism, causal, p, r, block, sketch, seed, layer, threads, head_dim, value_dim):
    cls = _core.AttentionF64 if np.dtype(dtype) == np.float64 else _core.AttentionF32
    for name, value in (("p", p), ("r", r), ("block", block), ("layer", layer), ("threads", threads),
                        ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name} must be an integer, got {value!r}")
    if seed < 0 or layer < 0 or threads < 0:
        raise ValueError("seed, layer and threads must be non-negative")
    return cls(str(mechanism), bool(causal), int(p), int(r), int(block), str(sketch), int(seed),
               int(layer), int(threads), int(head_dim), int(value_dim))


def attention(q, k, v, mechanism="polysketch", causal=True, p=4, r=32, block=256, sketch="gaussian",
              seed=0, layer=0, threads=0, documents=None):
    """Attention of q, k [batch, heads, n, head_dim] and v [batch, heads, n, value_dim] (numpy,
    float32 or float64; C-contiguous inputs are not copied, others are). The mechanism's own
    parameters (q/k LayerNorms, learned sketch weights) are at their initial values, drawn from
    (seed, layer) as the C++ library draws them; the random sketch too. Returns a new array of
    v's dtype and shape [batch, heads, n, value_dim]. threads=0: all cores. documents (causal
    only): document ids [batch, n], non-decreasing along each sequence; a token then attends only
    to earlier tokens of its own document (document masking)."""
    q, k, v = _check_qkv(q, k, v)
    documents = _check_documents(documents, q)
    impl = _impl(q.dtype, mechanism, causal, p, r, block, sketch, seed, layer, threads, q.shape[3],
                 v.shape[3])
    params = [value for _, value in impl.params()]
    out, _ = impl.forward(q, k, v, params, False, documents)
    return out


class LanguageModel:
    """A trained checkpoint with its tokenizer (``polysketch.load``)."""

    def __init__(self, checkpoint):
        self._model = _core.Model(str(checkpoint))
        self.config = json.loads(self._model.config_json())
        self.dir = self._model.dir
        self.tokenizer = self._model.tokenizer() if self._model.has_tokenizer else None

    def _require_tokenizer(self):
        if self.tokenizer is None:
            raise ValueError(f"{self.dir} has no tokenizer (trained on a synthetic task)")
        return self.tokenizer

    @property
    def vocab_size(self):
        return self.config["vocab"]

    def logits(self, tokens):
        """Logits for token ids [len] or [batch, len] -> float32 [len, vocab] or [batch, len, vocab]."""
        t = np.asarray(tokens)
        if t.dtype.kind not in "iu":
            raise ValueError(f"tokens must be integers, got {t.dtype}")
        if t.ndim not in (1, 2):
            raise ValueError(f"tokens must be [len] or [batch, len], got shape {t.shape}")
        if t.size and (t.min() < 0 or t.max() >= self.vocab_size):
            raise ValueError(f"token ids must be in [0, {self.vocab_size})")
        out = self._model.logits(np.ascontiguousarray(t.reshape(-1, t.shape[-1]), dtype=np.int32))
        return out[0] if t.ndim == 1 else out

    def loss(self, tokens):
        """Mean next-token cross-entropy (nats) of a token sequence, in windows of the model's context."""
        t = np.asarray(tokens, dtype=np.int64).reshape(-1)
        if t.size < 2:
            raise ValueError("need at least 2 tokens")
        ctx = self.config["context"]
        total, count = 0.0, 0
        for start in range(0, t.size - 1, ctx):
            x = t[start:start + ctx + 1]
            logits = self.logits(x[:-1]).astype(np.float64)
            m = logits.max(axis=1, keepdims=True)
            lse = (m[:, 0] + np.log(np.exp(logits - m).sum(axis=1)))
            total += float((lse - logits[np.arange(len(x) - 1), x[1:]]).sum())
            count += len(x) - 1
        return total / count

    def perplexity(self, text):
        """exp(mean next-token cross-entropy) of a text under the model (windows of its context)."""
        return math.exp(self.loss(self._require_tokenizer().encode(text)))

    def generate(self, prompt="", max_tokens=200, temperature=0.8, top_k=0, top_p=1.0, seed=1):
        """Streams the continuation of a prompt as text pieces (an iterator), as `polysketch
        generate` does: the same tokens for the same seed, ending early at the tokenizer's
        end-of-document token. Constant memory per token for the sketch mechanisms (the prompt in
        one prefill, then one decoding step per token)."""
        tok = self._require_tokenizer()
        for token in self.generate_tokens(tok.encode(prompt), max_tokens, temperature, top_k, top_p, seed,
                                          _prompt_text=prompt):
            yield token

    def generate_tokens(self, prompt_ids, max_tokens=200, temperature=0.8, top_k=0, top_p=1.0, seed=1,
                        _prompt_text=None):
        """Token-level generation: yields token ids (or, from generate(), text pieces). Token ids
        are drawn from the model's distribution as it is; generate() also never draws a byte
        piece that cannot continue valid UTF-8 (docs/PYTHON.md)."""
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, (int, np.integer)) or max_tokens < 0:
            raise ValueError(f"max_tokens must be a non-negative integer, got {max_tokens!r}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        ids = [int(i) for i in prompt_ids]
        text = _prompt_text is not None
        gen = _core.Generator(self._model, ids, float(temperature), int(top_k), float(top_p), int(seed), text)
        for _ in range(max_tokens):  # until max_tokens, or the end-of-document token (included)
            if not text:
                yield gen.next()
            else:
                piece = gen.next_text()  # never broken UTF-8: an incomplete character is held back
                if piece:
                    yield piece
            if gen.ended():
                return


def load(checkpoint):
    """A trained model from a checkpoint directory (run/step-N) or a run directory (its latest)."""
    return LanguageModel(checkpoint)
