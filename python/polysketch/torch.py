"""PyTorch front end: PolySketchAttention, an nn.Module whose forward and backward are the C++
library's (a torch.autograd.Function; no Python re-implementation).

    attn = polysketch.torch.PolySketchAttention(head_dim=64, mechanism="polysketch-learned-local")
    out = attn(q, k, v)          # q, k, v: [batch, heads, n, head_dim] CPU tensors
    out.sum().backward()         # gradients for q, k, v and attn's parameters

CPU tensors of the module's dtype: float32 by default, float64 for gradcheck. The dtype follows
the parameters, so the usual conversions work (`.double()`, `.float()`, `.to(torch.float64)`);
float16/bfloat16 modules and tensors of another dtype or device raise ValueError. Non-contiguous
inputs are made contiguous (a copy).
"""
import numpy as np
import torch
from torch import nn

from . import _check_documents, _check_qkv, _impl

__all__ = ["PolySketchAttention"]


def _as_numpy(t, name, dtype):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.device.type != "cpu":
        raise ValueError(f"{name} is on {t.device}; polysketch runs on the CPU (call .cpu())")
    if t.dtype != dtype:
        raise ValueError(f"{name} is {t.dtype}, but this PolySketchAttention is {dtype} "
                         f"(build it with dtype={t.dtype} or convert the tensor)")
    return t.detach().contiguous().numpy()


_NUMPY = {torch.float32: np.float32, torch.float64: np.float64}


def _check_dtype(dtype):
    if dtype not in _NUMPY:
        raise ValueError(f"PolySketchAttention's dtype must be torch.float32 or torch.float64, not {dtype} "
                         "(convert with .float() or .double())")


class _Function(torch.autograd.Function):
    @staticmethod
    def forward(ctx, impl, dtype, documents, q, k, v, *params):
        qn, kn, vn = (_as_numpy(t, n, dtype) for t, n in ((q, "q"), (k, "k"), (v, "v")))
        qn, kn, vn = _check_qkv(qn, kn, vn)
        if isinstance(documents, torch.Tensor):
            documents = documents.cpu().numpy()
        documents = _check_documents(documents, qn)
        pn = [p.detach().contiguous().numpy() for p in params]
        out, saved = impl.forward(qn, kn, vn, pn, True, documents)
        ctx.impl, ctx.saved, ctx.arrays = impl, saved, (qn, kn, vn, out, pn, documents)
        return torch.from_numpy(out)

    @staticmethod
    def backward(ctx, dout):
        qn, kn, vn, out, pn, documents = ctx.arrays
        dq, dk, dv, dparams = ctx.impl.backward(qn, kn, vn, out, dout.contiguous().numpy(), ctx.saved, pn,
                                                documents)
        return (None, None, None, torch.from_numpy(dq), torch.from_numpy(dk), torch.from_numpy(dv),
                *(torch.from_numpy(g) for g in dparams))


class PolySketchAttention(nn.Module):
    """Attention of one mechanism over q, k [batch, heads, n, head_dim], v [batch, heads, n,
    value_dim]. Owns the mechanism's parameters (q/k LayerNorm scales and biases; learned sketch
    weights) as nn.Parameters named like the C++ library's (dots become underscores), initialised
    as the library initialises them from (seed, layer); random sketches are fixed buffers inside
    the library. threads=0: all cores."""

    def __init__(self, head_dim, mechanism="polysketch-learned-local", causal=True, p=4, r=32, block=256,
                 sketch="gaussian", seed=0, layer=0, threads=0, value_dim=None, dtype=torch.float32):
        super().__init__()
        _check_dtype(dtype)
        self.head_dim = int(head_dim)
        self.value_dim = int(value_dim if value_dim is not None else head_dim)
        self.mechanism = mechanism
        args = (mechanism, causal, p, r, block, sketch, seed, layer, threads, self.head_dim,
                self.value_dim)
        # One library object per dtype, made from the same arguments (so the same random sketch),
        # the other one when the module is first used after a conversion.
        self._impl_args = args
        self._impls = {dtype: _impl(_NUMPY[dtype], *args)}
        # Carries the module's dtype through .double()/.float()/.to() when a mechanism has no
        # parameters (softmax); not saved in the state_dict.
        self.register_buffer("_dtype_marker", torch.empty(0, dtype=dtype), persistent=False)
        self._names = []
        for name, value in self._impls[dtype].params():
            attr = name.replace(".", "_")
            self.register_parameter(attr, nn.Parameter(torch.from_numpy(np.array(value))))
            self._names.append(attr)

    @property
    def dtype(self):
        """The dtype of the parameters, hence of the inputs forward takes."""
        return self._dtype_marker.dtype

    def forward(self, q, k, v, documents=None):
        """documents (causal only): None, or document ids [batch, n] (a tensor or array of
        integers, non-decreasing along each sequence): a token attends only within its document."""
        params = [getattr(self, n) for n in self._names]
        dtype = self.dtype
        _check_dtype(dtype)
        if any(p.dtype != dtype for p in params):
            raise ValueError("the parameters of this PolySketchAttention have mixed dtypes "
                             f"{sorted({str(p.dtype) for p in params})}: convert the whole module")
        if dtype not in self._impls:
            self._impls[dtype] = _impl(_NUMPY[dtype], *self._impl_args)
        return _Function.apply(self._impls[dtype], dtype, documents, q, k, v, *params)

    def extra_repr(self):
        return f"head_dim={self.head_dim}, value_dim={self.value_dim}, mechanism={self.mechanism!r}"
