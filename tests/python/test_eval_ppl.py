"""`lcd eval-ppl` against the same perplexity computed with transformers.

Setup: a byte-level BPE tokenizer.json trained on the fly with the
`tokenizers` library (with <s>/</s> specials and a tokenizer_config.json
declaring <s> as BOS), and a random 2-layer Llama with that vocabulary
(max_position_embeddings 128, so the default window is 128 tokens).

Protocol checked (see tools/lcd/eval_ppl.cc): the text is tokenized once
without BOS; with BOS, window k is [BOS] + text tokens [k*(W-1), (k+1)*(W-1))
and every text token is predicted once; with --no-bos, window k is text
tokens [k*W, (k+1)*W) and its first token is context only; a final partial
window is included. ppl = exp(mean NLL over all predicted tokens); with --score-from N only the
rows N.. of each window are scored (llama-perplexity's protocol with N = window / 2).

Reference: transformers in float64 on the same weights and token ids.
Tolerance: 1e-3 relative on the perplexity (lcd computes in fp32).
When models/tiny-shakespeare (committed by the training script) is present,
its eval-ppl is also checked against transformers on a slice of its text.
"""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import lcd_skip

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lcd_paths  # noqa: E402

REL_TOL = 1e-3
WORDS = ("the of and to in a is that for it as was with be by on not he I this are or his from at which "
         "but have an they you were her she there been one all we their has would when if so no will can "
         "model token weight cluster distil serve batch cache kernel layer").split()


def _lcd():
    return lcd_paths.lcd_tool()


def _text(seed=5, n_words=1200):
    rng = np.random.default_rng(seed)
    words = rng.choice(WORDS, size=n_words)
    lines, line = [], []
    for w in words:
        line.append(str(w))
        if len(line) >= rng.integers(5, 14):
            lines.append(" ".join(line) + ("." if rng.random() < 0.5 else ","))
            line = []
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch = lcd_skip.importorskip("torch")
    transformers = lcd_skip.importorskip("transformers")
    tokenizers = lcd_skip.importorskip("tokenizers")
    from tokenizers import decoders, models, pre_tokenizers, trainers

    root = tmp_path_factory.mktemp("ppl")
    text = _text()
    text_path = root / "text.txt"
    text_path.write_text(text, encoding="utf-8")

    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([_text(seed=s) for s in range(10)], trainer)
    model_dir = root / "model"
    model_dir.mkdir()
    tok.save(str(model_dir / "tokenizer.json"))
    (model_dir / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": True}))

    vocab = tok.get_vocab_size()
    cfg = transformers.LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                   rms_norm_eps=1e-5, bos_token_id=tok.token_to_id("<s>"),
                                   eos_token_id=tok.token_to_id("</s>"), tie_word_embeddings=False)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(1.0 + 0.2 * torch.randn(p.shape) if name.endswith("norm.weight") else 0.15 * torch.randn(p.shape))
    model.eval().save_pretrained(str(model_dir), safe_serialization=True)
    ref = transformers.LlamaForCausalLM.from_pretrained(str(model_dir), dtype=torch.float64,
                                                        attn_implementation="eager").eval()
    ids = tok.encode(text, add_special_tokens=False).ids
    # A second model on the same vocabulary: the first one with noise added to
    # every weight, as a quantized model is its source plus rounding error.
    other_dir = root / "other"
    other_dir.mkdir()
    tok.save(str(other_dir / "tokenizer.json"))
    (other_dir / "tokenizer_config.json").write_text((model_dir / "tokenizer_config.json").read_text())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape))
    model.eval().save_pretrained(str(other_dir), safe_serialization=True)
    other = transformers.LlamaForCausalLM.from_pretrained(str(other_dir), dtype=torch.float64,
                                                          attn_implementation="eager").eval()
    return dict(model_dir=str(model_dir), text_path=str(text_path), ids=ids, bos=tok.token_to_id("<s>"), ref=ref,
                other_dir=str(other_dir), other=other)


def _hf_ppl(ref, ids, window, bos, max_windows=0, score_from=0):
    import torch
    per = window - 1 if bos is not None else window
    starts = list(range(0, len(ids), per))
    if bos is None and len(ids) - starts[-1] == 1:
        starts.pop()
    if max_windows:
        starts = starts[:max_windows]
    nll, count = 0.0, 0
    with torch.no_grad():
        for s in starts:
            win = ([bos] if bos is not None else []) + ids[s:s + per]
            x = torch.tensor([win])
            logits = ref(x).logits[0, score_from:-1]
            nll += torch.nn.functional.cross_entropy(logits, x[0, score_from + 1:], reduction="sum").item()
            count += len(win) - 1 - score_from
    return math.exp(nll / count), count, len(starts)


def _run(setup, *flags):
    res = subprocess.run([_lcd(), "eval-ppl", "--model", setup["model_dir"], "--text", setup["text_path"],
                          "--threads", "2", "--json", *flags], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "window 1/" in res.stderr  # Progress is reported per window.
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_ppl_with_bos_matches_transformers(setup):
    got = _run(setup)
    want, count, windows = _hf_ppl(setup["ref"], setup["ids"], 128, setup["bos"])
    assert got["window"] == 128
    assert got["predicted_tokens"] == count == len(setup["ids"])
    assert got["windows"] == windows > 5
    assert abs(got["ppl"] - want) <= REL_TOL * want, (got, want)


def test_ppl_without_bos_and_window_limit_matches_transformers(setup):
    got = _run(setup, "--no-bos", "--window", "48", "--max-windows", "4")
    want, count, windows = _hf_ppl(setup["ref"], setup["ids"], 48, None, max_windows=4)
    assert got["predicted_tokens"] == count == 4 * 47
    assert got["windows"] == windows == 4
    assert abs(got["ppl"] - want) <= REL_TOL * want, (got, want)


def test_score_from_matches_transformers(setup):
    """--score-from N (llama-perplexity's protocol with --no-bos and N = window / 2): the same
    windows, only rows N.. of each scored."""
    got = _run(setup, "--no-bos", "--window", "48", "--score-from", "24", "--max-windows", "4")
    want, count, windows = _hf_ppl(setup["ref"], setup["ids"], 48, None, max_windows=4, score_from=24)
    assert got["predicted_tokens"] == count == 4 * 23 and got["score_from"] == 24
    assert abs(got["ppl"] - want) <= REL_TOL * want, (got, want)
    for bad in ("47", "-1"):
        res = subprocess.run([_lcd(), "eval-ppl", "--model", setup["model_dir"], "--text", setup["text_path"],
                              "--no-bos", "--window", "48", "--score-from", bad], capture_output=True, text=True)
        assert res.returncode != 0 and "score-from must be in [0, 47) for window 48" in res.stderr, res.stderr


def _hf_kl(ref, model, ids, window, bos, max_windows=0):
    """Mean KL(P_ref || P_model) per predicted token and top-1 agreement, in float64."""
    import torch
    per = window - 1
    starts = list(range(0, len(ids), per))[:max_windows or None]
    kl, agree, count = 0.0, 0, 0
    with torch.no_grad():
        for s in starts:
            x = torch.tensor([[bos] + ids[s:s + per]])
            lp = torch.log_softmax(ref(x).logits[0, :-1], -1)
            lq = torch.log_softmax(model(x).logits[0, :-1], -1)
            kl += (lp.exp() * (lp - lq)).sum().item()
            agree += (lp.argmax(-1) == lq.argmax(-1)).sum().item()
            count += x.shape[1] - 1
    return kl / count, agree / count


def test_kl_to_a_reference_matches_transformers(setup):
    # KL(P_reference || P_model): reference = setup's model, model = the noisy copy.
    res = subprocess.run([_lcd(), "eval-ppl", "--model", setup["other_dir"], "--reference", setup["model_dir"],
                          "--text", setup["text_path"], "--threads", "2", "--json", "--window", "64",
                          "--max-windows", "6"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout.strip().splitlines()[-1])
    want_kl, want_agree = _hf_kl(setup["ref"], setup["other"], setup["ids"], 64, setup["bos"], max_windows=6)
    want_ppl, count, _ = _hf_ppl(setup["other"], setup["ids"], 64, setup["bos"], max_windows=6)
    print(f"KL lcd {got['kl']:.6f} torch {want_kl:.6f}; agreement {got['top1_agreement']:.4f} {want_agree:.4f}")
    assert got["predicted_tokens"] == count
    assert abs(got["ppl"] - want_ppl) <= REL_TOL * want_ppl
    assert want_kl > 0.01  # The noise is large enough for the KL to mean something.
    assert abs(got["kl"] - want_kl) <= 1e-3 * want_kl + 1e-6, (got, want_kl)
    # fp32 logits may flip a near-tie argmax: allow one position in the count.
    assert abs(got["top1_agreement"] - want_agree) <= 1.0 / count + 1e-12, (got, want_agree)
    assert want_agree < 1.0


def test_kl_of_a_model_to_itself_is_zero(setup):
    res = subprocess.run([_lcd(), "eval-ppl", "--model", setup["model_dir"], "--reference", setup["model_dir"],
                          "--text", setup["text_path"], "--threads", "2", "--json", "--max-windows", "2"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert abs(got["kl"]) < 1e-6 and got["top1_agreement"] == 1.0, got


def test_missing_reference_is_refused(setup, tmp_path):
    res = subprocess.run([_lcd(), "eval-ppl", "--model", setup["model_dir"], "--reference", str(tmp_path / "nope"),
                          "--text", setup["text_path"], "--max-windows", "1"], capture_output=True, text=True)
    assert res.returncode != 0
    assert "eval-ppl" in res.stderr and "nope" in res.stderr, res.stderr


def test_reference_with_another_vocabulary_is_refused(setup, tmp_path):
    src = os.environ.get("LCD_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
    other = os.path.join(src, "models", "tiny-shakespeare")
    if not os.path.exists(os.path.join(other, "config.json")):
        lcd_skip.skip("models/tiny-shakespeare not present")
    res = subprocess.run([_lcd(), "eval-ppl", "--model", setup["model_dir"], "--reference", other,
                          "--text", setup["text_path"], "--max-windows", "1"], capture_output=True, text=True)
    assert res.returncode != 0
    assert "reference model's vocabulary" in res.stderr, res.stderr


def test_bad_window_is_refused(setup):
    res = subprocess.run([_lcd(), "eval-ppl", "--model", setup["model_dir"], "--text", setup["text_path"],
                          "--window", "4096"], capture_output=True, text=True)
    assert res.returncode != 0
    assert "window must be in [2, 128], got 4096" in res.stderr


def test_tiny_shakespeare_if_present(tmp_path):
    src = os.environ.get("LCD_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
    model_dir = os.path.join(src, "models", "tiny-shakespeare")
    if not os.path.exists(os.path.join(model_dir, "config.json")) or \
            not os.path.exists(os.path.join(model_dir, "tokenizer.json")):
        lcd_skip.skip("models/tiny-shakespeare not present")
    torch = lcd_skip.importorskip("torch")
    transformers = lcd_skip.importorskip("transformers")
    tokenizers = lcd_skip.importorskip("tokenizers")
    text = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
            "First Citizen:\nYou are all resolved rather to die than to famish?\n") * 4
    text_path = tmp_path / "t.txt"
    text_path.write_text(text)
    res = subprocess.run([_lcd(), "eval-ppl", "--model", model_dir, "--text", str(text_path), "--threads", "2",
                          "--json", "--no-bos", "--window", "64"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout.strip().splitlines()[-1])
    tok = tokenizers.Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    ids = tok.encode(text, add_special_tokens=False).ids
    ref = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float64,
                                                            attn_implementation="eager").eval()
    want, count, _ = _hf_ppl(ref, ids, 64, None)
    assert got["predicted_tokens"] == count
    assert abs(got["ppl"] - want) <= REL_TOL * want, (got, want)
