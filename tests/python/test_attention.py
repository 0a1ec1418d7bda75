"""polysketch.attention (numpy) against the C++ library and an independent numpy reference;
PolySketchAttention (torch) gradients by gradcheck, training with AdamW, and bad inputs."""
import os
import subprocess

import numpy as np
import pytest
import torch

import polysketch
import polysketch.torch as pst

MECHANISMS = polysketch.mechanisms()


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_numpy_equals_the_cpp_library(mechanism, causal, tmp_path):
    """Same seed, same inputs: the C++ program's output (tests/attention_dump.cpp). Same code on
    the same data, equal up to f32 rounding where the thread count differs (the GEMM blocking of
    the learned sketch changes): max error <= 1e-5 of the largest output."""
    exe = os.environ.get("POLYSKETCH_ATTENTION_DUMP")
    if not exe:
        pytest.skip("POLYSKETCH_ATTENTION_DUMP is not set (ctest sets it)")
    b, h, n, d, r, block, seed = 2, 3, 40, 16, 8, 16, 5
    out = tmp_path / "dump.bin"
    subprocess.run([exe, mechanism, str(int(causal)), str(b), str(h), str(n), str(d), str(r), str(block),
                    str(seed), str(out)], check=True)
    q, k, v, want = np.fromfile(out, dtype=np.float32).reshape(4, b, h, n, d)
    got = polysketch.attention(q, k, v, mechanism=mechanism, causal=causal, r=r, block=block, seed=seed)
    assert got.dtype == np.float32 and got.shape == (b, h, n, d)
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


def naive_polynomial(q, k, v, p, causal):
    """<LN(q), LN(k)>^p weights, +1 in the denominator (POLYSKETCH.md), float64."""
    def ln(x):
        return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)
    w = np.einsum("bhid,bhjd->bhij", ln(q), ln(k)) ** p
    if causal:
        w = np.tril(w)
    return np.einsum("bhij,bhjd->bhid", w, v) / (1 + w.sum(-1, keepdims=True))


@pytest.mark.parametrize("causal", [True, False])
def test_float64_against_an_independent_reference(causal):
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, 2, 30, 8)) for _ in range(3))
    got = polysketch.attention(q, k, v, mechanism="polynomial", causal=causal, p=4)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, naive_polynomial(q, k, v, 4, causal), rtol=1e-10, atol=1e-12)
    # p = 2: the random sketch is the identity, so polysketch is exact too (block algorithm).
    got = polysketch.attention(q, k, v, mechanism="polysketch", causal=causal, p=2, block=8)
    np.testing.assert_allclose(got, naive_polynomial(q, k, v, 2, causal), rtol=1e-9, atol=1e-12)


def test_contiguous_inputs_are_not_copied_and_others_are_converted():
    rng = np.random.default_rng(1)
    q = rng.standard_normal((1, 2, 16, 8)).astype(np.float32)
    base = polysketch.attention(q, q, q, mechanism="softmax")
    # A transposed view (non-contiguous) gives the same result as its contiguous copy.
    t = np.ascontiguousarray(q.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)
    assert not t.flags.c_contiguous
    np.testing.assert_array_equal(polysketch.attention(t, t, t, mechanism="softmax"), base)


@pytest.mark.parametrize("bad, message", [
    (lambda q: (q.astype(np.int32), q, q), "float32 or float64"),
    (lambda q: (q.astype(np.float16), q, q), "float32 or float64"),
    (lambda q: (q[0], q[0], q[0]), "4 dimensions"),
    (lambda q: (q, q[:, :, :8], q), "same shape"),
    (lambda q: (q, q, q[:, :1]), "value_dim"),
    (lambda q: (q, q.astype(np.float64), q), "one dtype"),
])
def test_bad_numpy_inputs_raise_value_error(bad, message):
    q = np.zeros((1, 2, 16, 8), dtype=np.float32)
    with pytest.raises(ValueError, match=message):
        polysketch.attention(*bad(q))


def test_library_errors_are_value_errors_with_the_library_message():
    q = np.zeros((1, 1, 4, 8), dtype=np.float32)
    with pytest.raises(ValueError, match="unknown attention mechanism 'flash'"):
        polysketch.attention(q, q, q, mechanism="flash")
    with pytest.raises(ValueError, match="p"):
        polysketch.attention(q, q, q, mechanism="polynomial", p=3)
    with pytest.raises(TypeError):
        polysketch.attention(q.tolist(), q, q)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_gradcheck_inputs_and_parameters(mechanism, causal):
    torch.manual_seed(0)
    attn = pst.PolySketchAttention(4, mechanism=mechanism, causal=causal, r=4, block=4,
                                   dtype=torch.float64, threads=1)
    with torch.no_grad():  # move the parameters off their trivial init (scale 1, bias 0)
        for p in attn.parameters():
            p.add_(0.1 * torch.randn_like(p))
    q, k, v = (torch.randn(1, 2, 10, 4, dtype=torch.float64, requires_grad=True) for _ in range(3))
    params = list(attn.parameters())
    if mechanism != "softmax":
        assert params, "the mechanism's LayerNorms are parameters"

    assert torch.autograd.gradcheck(lambda q, k, v: attn(q, k, v), (q, k, v), eps=1e-6, atol=1e-6)
    # Parameters: compare autograd's gradient with central differences.
    out = attn(q, k, v)
    weights = torch.randn_like(out)
    (out * weights).sum().backward()
    for p in params:
        numeric = torch.zeros_like(p)
        flat = p.data.view(-1)
        for i in range(flat.numel()):
            old = flat[i].item()
            flat[i] = old + 1e-6
            up = (attn(q, k, v) * weights).sum().item()
            flat[i] = old - 1e-6
            down = (attn(q, k, v) * weights).sum().item()
            flat[i] = old
            numeric.view(-1)[i] = (up - down) / 2e-6
        torch.testing.assert_close(p.grad, numeric, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_documents_attend_as_separate_sequences(mechanism):
    # Document masking makes each document's output that of the document alone (attention has no
    # positions; documents start at block starts, where the *-local blocks line up).
    rng = np.random.default_rng(3)
    q, k, v = (rng.standard_normal((2, 2, 24, 8)) for _ in range(3))
    starts = [[0, 8, 16, 24], [0, 16, 24]]
    ids = np.zeros((2, 24), dtype=np.int64)
    for b, s in enumerate(starts):
        for d in range(len(s) - 1):
            ids[b, s[d]:s[d + 1]] = d
    kw = dict(mechanism=mechanism, r=4, block=8, threads=1)
    out = polysketch.attention(q, k, v, documents=ids, **kw)
    for b, s in enumerate(starts):
        for a, e in zip(s, s[1:]):
            alone = polysketch.attention(q[b:b + 1, :, a:e], k[b:b + 1, :, a:e], v[b:b + 1, :, a:e], **kw)
            np.testing.assert_allclose(out[b:b + 1, :, a:e], alone, rtol=1e-9, atol=1e-12)
    assert not np.allclose(out, polysketch.attention(q, k, v, **kw))  # the mask changes something
    with pytest.raises(ValueError, match="documents must be"):
        polysketch.attention(q, k, v, documents=ids[:, :5], **kw)
    with pytest.raises(ValueError, match="must not decrease"):
        polysketch.attention(q, k, v, documents=ids[:, ::-1], **kw)
    # torch: gradients through the mask.
    attn = pst.PolySketchAttention(8, mechanism=mechanism, r=4, block=8, dtype=torch.float64, threads=1)
    qt, kt, vt = (torch.tensor(x[:, :, :12], requires_grad=True) for x in (q, k, v))
    doc = torch.tensor(ids[:, :12]).clone()
    doc[0, 5:] += 1  # a start inside a block
    assert torch.autograd.gradcheck(lambda q, k, v: attn(q, k, v, documents=doc), (qt, kt, vt), eps=1e-6, atol=1e-6)


def test_a_tiny_torch_model_overfits_with_adamw():
    torch.manual_seed(0)
    vocab, width, heads, n = 12, 16, 2, 24

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(vocab, width)
            self.qkv = torch.nn.Linear(width, 3 * width)
            self.attn = pst.PolySketchAttention(width // heads, mechanism="polysketch-learned-local",
                                                r=8, block=8)
            self.out = torch.nn.Linear(width, vocab)

        def forward(self, x):
            h = self.emb(x)
            q, k, v = self.qkv(h).view(1, n, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
            o = self.attn(q, k, v).permute(0, 2, 1, 3).reshape(1, n, width)
            return self.out(h + o)

    tokens = torch.tensor([[(3 * i * i + 1) % vocab for i in range(n + 1)]])
    model = Tiny()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(150):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(tokens[:, :-1])[0], tokens[0, 1:])
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] > 2.0 and losses[-1] < 0.1, (losses[0], losses[-1])
    assert model.attn.ln_q_scale.grad is not None  # the mechanism's own parameters trained too


def test_bad_torch_inputs():
    attn = pst.PolySketchAttention(8, mechanism="polysketch")
    q = torch.zeros(1, 2, 16, 8)
    with pytest.raises(ValueError, match="float64"):
        attn(q.double(), q.double(), q.double())
    with pytest.raises(ValueError, match="CPU"):
        m = torch.empty(1, 2, 16, 8, device="meta")
        attn(m, m, m)
    with pytest.raises(ValueError, match="4 dimensions"):
        attn(q[0], q[0], q[0])
    with pytest.raises(ValueError, match="head_dim"):
        attn(torch.zeros(1, 2, 16, 4), torch.zeros(1, 2, 16, 4), torch.zeros(1, 2, 16, 4))
    with pytest.raises(ValueError, match="dtype"):
        pst.PolySketchAttention(8, dtype=torch.float16)
    # Non-contiguous tensors are made contiguous: same result.
    t = torch.randn(1, 2, 8, 16).transpose(2, 3)
    torch.testing.assert_close(attn(t, t, t), attn(t.contiguous(), t.contiguous(), t.contiguous()))


@pytest.mark.parametrize("mechanism", ["softmax", "polysketch", "polysketch-learned-local"])
def test_module_dtype_follows_its_parameters(mechanism):
    torch.manual_seed(1)
    q, k, v = (torch.randn(1, 2, 12, 4, dtype=torch.float64) for _ in range(3))
    ref = pst.PolySketchAttention(4, mechanism=mechanism, r=4, block=4, dtype=torch.float64, threads=1)
    for convert in (lambda m: m.double(), lambda m: m.to(torch.float64), lambda m: m.to(dtype=torch.float64)):
        attn = convert(pst.PolySketchAttention(4, mechanism=mechanism, r=4, block=4, threads=1))
        assert attn.dtype == torch.float64
        assert all(p.dtype == torch.float64 for p in attn.parameters())
        # Same arguments and parameters: the float64 module's result. The random sketch of each
        # dtype is drawn from the same seed in that dtype, so it differs by float32 rounding.
        ref.load_state_dict(attn.state_dict())
        torch.testing.assert_close(attn(q, k, v), ref(q, k, v), rtol=1e-5, atol=1e-6)
        with pytest.raises(ValueError, match="float32"):  # float32 inputs no longer fit
            attn(q.float(), k.float(), v.float())
    # And back: float32, against the float64 result (float32 rounding).
    want = ref(q, k, v)
    back = ref.float()
    assert back.dtype == torch.float32
    torch.testing.assert_close(back(q.float(), k.float(), v.float()), want.float(), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="float16"):
        pst.PolySketchAttention(4, mechanism=mechanism, r=4, block=4).half()(q.half(), k.half(), v.half())


def test_double_module_passes_gradcheck_and_state_dict_round_trips():
    torch.manual_seed(2)
    attn = pst.PolySketchAttention(4, mechanism="polysketch-learned-local", r=4, block=4, threads=1).double()
    with torch.no_grad():
        for p in attn.parameters():
            p.add_(0.1 * torch.randn_like(p))
    q, k, v = (torch.randn(1, 2, 10, 4, dtype=torch.float64, requires_grad=True) for _ in range(3))
    assert torch.autograd.gradcheck(lambda q, k, v: attn(q, k, v), (q, k, v), eps=1e-6, atol=1e-6)
    params = tuple(attn.parameters())
    assert torch.autograd.gradcheck(lambda *ps: attn(q.detach(), k.detach(), v.detach()),
                                    params, eps=1e-6, atol=1e-6)
    state = attn.state_dict()
    assert "_dtype_marker" not in state and all(t.dtype == torch.float64 for t in state.values())
    other = pst.PolySketchAttention(4, mechanism="polysketch-learned-local", r=4, block=4, threads=1,
                                    dtype=torch.float64)
    other.load_state_dict(state)
    torch.testing.assert_close(other(q, k, v), attn(q, k, v), rtol=0, atol=0)
    mixed = pst.PolySketchAttention(4, mechanism="polysketch", r=4, block=4)
    mixed.ln_qk_scale.data = mixed.ln_qk_scale.data.double()
    with pytest.raises(ValueError, match="mixed dtypes"):
        mixed(q.float(), k.float(), v.float())
