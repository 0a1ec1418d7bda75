"""polysketch.load on a checkpoint made by the CLI: logits against `polysketch eval`, generation
against `polysketch generate` with the same seed, the tokenizer, and errors."""
import json
import subprocess

import numpy as np
import pytest

import polysketch


def test_logits_match_the_cli_eval_loss(trained, polysketch_bin):
    data, run = trained
    lm = polysketch.load(run)
    ctx = lm.config["context"]
    # eval with one window of one sequence scores exactly the first ctx+1 validation tokens.
    out = subprocess.run([polysketch_bin, "eval", "--checkpoint", str(run), "--data", str(data),
                          "--batch", "1", "--batches", "1", "--json"], check=True, capture_output=True,
                         text=True).stdout
    cli_loss = json.loads(out.splitlines()[0])["loss"]
    tokens = polysketch.read_tokens(data / "val.bin")[:ctx + 1]
    assert abs(lm.loss(tokens) - cli_loss) < 1e-5 * max(1.0, cli_loss)
    logits = lm.logits(tokens[:-1])
    assert logits.shape == (ctx, lm.vocab_size) and logits.dtype == np.float32
    batched = lm.logits(np.stack([tokens[:-1], tokens[:-1]]))
    np.testing.assert_array_equal(batched[1], logits)


@pytest.mark.parametrize("temperature, top_k, top_p, seed", [(0.8, 0, 1.0, 1), (1.0, 5, 0.9, 7), (0.0, 0, 1.0, 3)])
def test_generation_equals_the_cli_with_the_same_seed(trained, polysketch_bin, temperature, top_k, top_p, seed):
    _, run = trained
    lm = polysketch.load(run)
    prompt = "And God said"
    pieces = list(lm.generate(prompt, max_tokens=30, temperature=temperature, top_k=top_k, top_p=top_p,
                              seed=seed))
    again = list(lm.generate(prompt, max_tokens=30, temperature=temperature, top_k=top_k, top_p=top_p,
                             seed=seed))
    assert pieces == again
    cli = subprocess.run([polysketch_bin, "generate", "--checkpoint", str(run), "--prompt", prompt,
                          "--max-tokens", "30", "--temperature", str(temperature), "--top-k", str(top_k),
                          "--top-p", str(top_p), "--seed", str(seed)], check=True, capture_output=True,
                         text=True).stdout
    tok = lm.tokenizer
    assert cli == tok.decode(tok.encode(prompt)) + "".join(pieces) + "\n"


def test_tokenizer_and_perplexity(trained):
    data, run = trained
    lm = polysketch.load(run)
    tok = polysketch.Tokenizer(str(data / "tokenizer.model"))
    ids = tok.encode("In the beginning God created the heaven and the earth.")
    assert ids == lm.tokenizer.encode("In the beginning God created the heaven and the earth.")
    assert tok.decode(ids) == "In the beginning God created the heaven and the earth."
    assert tok.vocab_size == lm.vocab_size
    ppl = lm.perplexity("In the beginning God created the heaven and the earth. " * 5)
    assert 1.0 < ppl < lm.vocab_size * 2


def test_errors(trained, tmp_path):
    _, run = trained
    with pytest.raises(ValueError, match="does not exist"):
        polysketch.load(tmp_path / "nothing")
    lm = polysketch.load(run)
    with pytest.raises(ValueError, match=r"\[0, "):
        lm.logits([0, lm.vocab_size])
    with pytest.raises(ValueError, match="integers"):
        lm.logits([0.5, 1.0])
    with pytest.raises(ValueError, match="top_p"):
        next(lm.generate("x", top_p=0))
    with pytest.raises(ValueError, match="temperature"):
        next(lm.generate("x", temperature=-1))
    with pytest.raises(ValueError, match="max_tokens"):
        next(lm.generate("x", max_tokens=-1))


def test_threads_share_one_model_without_a_lock(trained):
    """The model is const once loaded: generators and logits on several threads at once give
    exactly what they give alone."""
    import threading
    data, run = trained
    lm = polysketch.load(run)
    tokens = polysketch.read_tokens(data / "val.bin")[:lm.config["context"]]
    alone_text = {seed: list(lm.generate("And God said", max_tokens=25, seed=seed)) for seed in (1, 2)}
    alone_logits = lm.logits(tokens)
    failures = []

    def work(i):
        for _ in range(6):
            if i % 2:
                seed = 1 + i // 2 % 2
                if list(lm.generate("And God said", max_tokens=25, seed=seed)) != alone_text[seed]:
                    failures.append(f"thread {i}: generated text differs")
            elif not np.array_equal(lm.logits(tokens), alone_logits):
                failures.append(f"thread {i}: logits differ")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread did not finish within 120 s"
    assert failures == []
