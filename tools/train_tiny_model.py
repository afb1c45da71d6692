#!/usr/bin/env python3
"""Trains the small Llama-architecture model committed in models/tiny-shakespeare.

The model exists so that every part of lcdserve (runtime, quantizer, server,
CLI, end-to-end tests) can run against a real, coherent Hugging Face
checkpoint that ships with the repository: a few million parameters, a
byte-level BPE tokenizer of its own (tokenizers library, GPT-2 style
ByteLevel pre-tokenizer and decoder), grouped-query attention (8 query heads
over 4 key/value heads) so that the runtime's GQA path is exercised, and
untied input/output embeddings.

Reproducibility: fixed seeds for Python, NumPy and torch; deterministic torch
algorithms; a single-threaded tokenizer trainer; training windows drawn from
a seeded torch.Generator in a fixed order; a fixed number of optimisation
steps (not a wall-clock budget). Running the same command with the same
library versions on the same kind of CPU gives the same weights.

Data split: the first 90% of the text (by characters, cut at a line start)
trains the tokenizer and the model; the last 10% is the validation text,
written to <out>/val.txt when it is small.

Validation perplexity (written to <out>/eval.json and the model card) follows
the protocol that `lcd eval-ppl --model DIR --text FILE` implements:
  * the whole validation text is encoded once, without a BOS token;
  * the token stream is cut into consecutive non-overlapping windows of
    `window` (= max_position_embeddings) tokens; the last window may be
    shorter and is used when it has at least 2 tokens;
  * each window is run on its own (fresh context, positions from 0) and
    every token but the window's first is predicted from the ones before it;
  * ppl = exp(sum of negative log-likelihoods / number of predicted tokens).
It is measured on the model as saved (fp16 weights), computed in float32.

Usage:
  python3 tools/train_tiny_model.py [--data PATH] [--out models/tiny-shakespeare]
  python3 tools/train_tiny_model.py --verify models/tiny-shakespeare   # re-check a trained directory
"""

import argparse
import json
import math
import os
import random
import sys
import time

# Must be set before tokenizers / torch spin up their thread pools.
os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
# Idle OpenMP workers sleep instead of spinning: on a busy 2-core machine a
# spinning worker steals the core its partner needs. Does not change results.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402
from transformers import (  # noqa: E402
    AutoTokenizer,
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

SPECIAL = "<|endoftext|>"
VAL_TXT_MAX_BYTES = 120 * 1024


def parse_args():
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.path.join(root, "..", "shared", "data", "tinyshakespeare", "input.txt"),
                   help="training text (Tiny Shakespeare input.txt)")
    p.add_argument("--out", default=os.path.join(root, "models", "tiny-shakespeare"), help="output model directory")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--vocab-size", type=int, default=2048)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv-heads", type=int, default=4)
    p.add_argument("--intermediate", type=int, default=512)
    p.add_argument("--context", type=int, default=512, help="max_position_embeddings and training/eval window")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--warmup", type=int, default=40)
    p.add_argument("--bos-fraction", type=float, default=0.25,
                   help="fraction of training windows that start with <|endoftext|> at a line start, "
                        "so that generation with a BOS-prefixed prompt also works")
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--dtype", choices=["float16", "bfloat16"], default="float16", help="saved weight dtype")
    p.add_argument("--verify", metavar="DIR",
                   help="do not train: recompute the validation perplexity of the model in DIR from DIR/val.txt "
                        "and check it against DIR/eval.json, and check the directory size limit")
    return p.parse_args()


def seed_everything(seed, threads):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)


def split_text(text):
    """First 90% (cut at the start of a line) for training, the rest for validation."""
    cut = text.find("\n", int(len(text) * 0.9))
    cut = len(text) if cut < 0 else cut + 1
    return text[:cut], text[cut:]


def train_tokenizer(train_text, vocab_size):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[SPECIAL],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Lines in a fixed order; the trainer runs single-threaded (RAYON_NUM_THREADS=1).
    tok.train_from_iterator(train_text.splitlines(keepends=True), trainer=trainer)
    return tok


def encode(tok, text):
    return torch.tensor(tok.encode(text, add_special_tokens=False).ids, dtype=torch.long)


def make_batch(train_ids, line_starts, args, gen, bos_id):
    """Random windows of args.context tokens; some start with BOS at a line start."""
    n = args.context
    rows = []
    for _ in range(args.batch):
        if torch.rand((), generator=gen).item() < args.bos_fraction:
            s = line_starts[torch.randint(len(line_starts), (), generator=gen).item()].item()
            rows.append(torch.cat([torch.tensor([bos_id]), train_ids[s:s + n - 1]]))
        else:
            s = torch.randint(len(train_ids) - n, (), generator=gen).item()
            rows.append(train_ids[s:s + n])
    return torch.stack(rows)


@torch.no_grad()
def window_ppl(model, ids, window, bos_id=None):
    """The eval protocol in the module docstring. Returns (ppl, mean nll, predicted tokens).

    With bos_id (the `lcd eval-ppl` default for a tokenizer with a BOS token), window k is instead
    [BOS] + text tokens [k*(window-1), (k+1)*(window-1)) and every text token is predicted once.
    """
    model.eval()
    total_nll, count = 0.0, 0
    per = window if bos_id is None else window - 1
    for start in range(0, len(ids), per):
        chunk = ids[start:start + per]
        if bos_id is not None:
            chunk = torch.cat([torch.tensor([bos_id]), chunk])
        if len(chunk) < 2:
            break
        logits = model(chunk.unsqueeze(0)).logits.float()[0]
        logp = torch.log_softmax(logits[:-1].double(), dim=-1)
        nll = -logp.gather(1, chunk[1:].unsqueeze(1)).sum().item()
        total_nll += nll
        count += len(chunk) - 1
    model.train()
    mean = total_nll / count
    return math.exp(mean), mean, count


def eval_record(model, val_ids, window, bos_id, text_name, text_bytes, dtype):
    """The contents of eval.json: both `lcd eval-ppl` protocols, on the model as given."""
    ppl, loss, predicted = window_ppl(model, val_ids, window)
    ppl_bos, loss_bos, predicted_bos = window_ppl(model, val_ids, window, bos_id)
    return {
        "val_ppl": round(ppl, 4),
        "val_loss": round(loss, 6),
        "window": window,
        "tokens": int(len(val_ids)),
        "predicted_tokens": int(predicted),
        "add_bos": False,
        "lcd_eval_ppl_args": f"--no-bos --window {window}",
        "protocol": "non-overlapping windows of `window` tokens over the BOS-less encoding of the text; "
                    "each window scored alone from position 0; the first token of every window is "
                    "context only; ppl = exp(total nll / predicted_tokens)",
        "bos": {
            "val_ppl": round(ppl_bos, 4),
            "val_loss": round(loss_bos, 6),
            "predicted_tokens": int(predicted_bos),
            "protocol": "window k = [BOS] + text tokens [k*(window-1), (k+1)*(window-1)); every text token "
                        "predicted once",
        },
        "text": text_name,
        "text_bytes": text_bytes,
        "weights_dtype": dtype,
        "compute_dtype": "float32",
    }


@torch.no_grad()
def quick_loss(model, ids, window, max_windows=8):
    sub = ids[: window * max_windows]
    return window_ppl(model, sub, window)[1]


MAX_DIR_BYTES = 8 * 1024 * 1024


def verify(model_dir, threads):
    """Checks a trained directory: size, GQA config, and eval.json's perplexity recomputed from val.txt."""
    torch.set_num_threads(threads)
    failures = []
    size = sum(os.path.getsize(os.path.join(model_dir, f)) for f in os.listdir(model_dir))
    if size > MAX_DIR_BYTES:
        failures.append(f"directory is {size} bytes, over {MAX_DIR_BYTES}")
    with open(os.path.join(model_dir, "eval.json")) as f:
        expected = json.load(f)
    model = LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    cfg = model.config
    if not cfg.num_key_value_heads < cfg.num_attention_heads:
        failures.append("config does not use grouped-query attention")
    if expected["window"] != cfg.max_position_embeddings:
        failures.append("eval.json window differs from max_position_embeddings")
    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    with open(os.path.join(model_dir, expected["text"] or "val.txt"), encoding="utf-8", newline="") as f:
        val_ids = encode(tok, f.read())
    if len(val_ids) != expected["tokens"]:
        failures.append(f"val text encodes to {len(val_ids)} tokens, eval.json says {expected['tokens']}")
    got = eval_record(model, val_ids, expected["window"], tok.token_to_id(SPECIAL), expected["text"],
                      expected["text_bytes"], expected["weights_dtype"])
    print(f"{model_dir}: {size} bytes; val ppl {got['val_ppl']} / with BOS {got['bos']['val_ppl']} "
          f"(eval.json: {expected['val_ppl']} / {expected.get('bos', {}).get('val_ppl')})")
    for key, want, have in (("val_ppl", expected["val_ppl"], got["val_ppl"]),
                            ("bos.val_ppl", expected.get("bos", {}).get("val_ppl"), got["bos"]["val_ppl"])):
        if want is None or abs(have - want) > 1e-3 * want:
            failures.append(f"recomputed {key} {have} differs from eval.json {want}")
    for msg in failures:
        print("FAIL:", msg)
    print("verify:", "FAILED" if failures else "OK")
    return 1 if failures else 0


def main():
    args = parse_args()
    if args.verify:
        return verify(args.verify, args.threads)
    seed_everything(args.seed, args.threads)
    t_start = time.time()

    with open(args.data, "r", encoding="utf-8") as f:
        text = f.read()
    train_text, val_text = split_text(text)
    print(f"data: {args.data}: {len(text)} chars, train {len(train_text)}, val {len(val_text)}")

    tok = train_tokenizer(train_text, args.vocab_size)
    bos_id = tok.token_to_id(SPECIAL)
    assert bos_id is not None
    vocab = tok.get_vocab_size()
    train_ids = encode(tok, train_text)
    val_ids = encode(tok, val_text)
    print(f"tokenizer: vocab {vocab}, train tokens {len(train_ids)}, val tokens {len(val_ids)}")

    # Token positions that begin a line (after a "\n"-bearing token), for BOS windows.
    nl_tokens = torch.tensor([i for i in range(vocab) if tok.decode([i]).endswith("\n")])
    ends_line = torch.isin(train_ids, nl_tokens)
    line_starts = (torch.nonzero(ends_line[:-args.context]).flatten() + 1)

    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        max_position_embeddings=args.context,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        attention_bias=False,
        bos_token_id=bos_id,
        eos_token_id=bos_id,
        initializer_range=0.02,
    )
    model = LlamaForCausalLM(config)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params} parameters ({n_params / 1e6:.2f} M)")

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), foreach=False)

    def lr_at(step):
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        progress = (step - args.warmup) / max(1, args.steps - args.warmup)
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))

    gen = torch.Generator().manual_seed(args.seed)
    t_train = time.time()
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        batch = make_batch(train_ids, line_starts, args, gen, bos_id)
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 20 == 0 or step == args.steps - 1:
            print(f"step {step:4d} lr {lr_at(step):.2e} train loss {loss.item():.4f} "
                  f"({time.time() - t_train:.0f}s)", flush=True)
        if (step + 1) % args.eval_every == 0 and step + 1 < args.steps:
            print(f"  val loss (first 8 windows) {quick_loss(model, val_ids, args.context):.4f}", flush=True)
    train_seconds = time.time() - t_train
    final_train_loss = loss.item()

    # Save: weights in half precision, tokenizer, generation defaults.
    os.makedirs(args.out, exist_ok=True)
    dtype = getattr(torch, args.dtype)
    model.to(dtype)
    model.config.dtype = args.dtype
    model.generation_config = GenerationConfig(
        bos_token_id=bos_id, eos_token_id=bos_id, pad_token_id=bos_id,
        do_sample=True, temperature=0.8, top_k=40, top_p=0.95, max_new_tokens=200)
    model.save_pretrained(args.out)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=SPECIAL, eos_token=SPECIAL,
                                   unk_token=None, pad_token=SPECIAL,
                                   model_max_length=args.context, add_bos_token=False,
                                   clean_up_tokenization_spaces=False)
    fast.save_pretrained(args.out)
    patch_json_for_older_readers(args.out, args.dtype)
    # save_pretrained may write 0600 files; the image's non-root user must read them.
    for name in os.listdir(args.out):
        os.chmod(os.path.join(args.out, name), 0o644)

    # Evaluate the model as saved: reload fp16 weights, compute in float32.
    reloaded = LlamaForCausalLM.from_pretrained(args.out, dtype=torch.float32)
    val_ppl, val_loss, predicted = window_ppl(reloaded, val_ids, args.context)
    train_sub = train_ids[-len(val_ids):]
    train_ppl, train_eval_loss, _ = window_ppl(reloaded, train_sub, args.context)
    print(f"final: train loss (last batch) {final_train_loss:.4f}; "
          f"train-tail loss {train_eval_loss:.4f} (ppl {train_ppl:.2f}); "
          f"val loss {val_loss:.4f}; val ppl {val_ppl:.3f} over {predicted} predicted tokens")

    # AutoTokenizer must read back exactly what training used.
    auto = AutoTokenizer.from_pretrained(args.out)
    probe = val_text[:1000]
    assert auto(probe, add_special_tokens=False)["input_ids"] == tok.encode(probe).ids, "AutoTokenizer mismatch"

    val_bytes = len(val_text.encode("utf-8"))
    val_written = val_bytes < VAL_TXT_MAX_BYTES
    if val_written:
        with open(os.path.join(args.out, "val.txt"), "w", encoding="utf-8", newline="") as f:
            f.write(val_text)
    eval_info = eval_record(reloaded, val_ids, args.context, bos_id, "val.txt" if val_written else None,
                            val_bytes, args.dtype)
    print(f"val ppl with a BOS-led window: {eval_info['bos']['val_ppl']}")
    with open(os.path.join(args.out, "eval.json"), "w") as f:
        json.dump(eval_info, f, indent=2)
        f.write("\n")

    samples = sample(reloaded, auto, bos_id)
    total_seconds = time.time() - t_start
    write_card(args, n_params, vocab, len(train_ids), len(val_ids), final_train_loss, train_eval_loss,
               val_loss, val_ppl, predicted, train_seconds, total_seconds, val_written, samples,
               eval_info["bos"]["val_ppl"])
    print(f"saved to {args.out} in {total_seconds:.0f}s (training {train_seconds:.0f}s)")
    return 0


def patch_json_for_older_readers(out, dtype):
    """transformers 5 writes rope_theta under rope_parameters, dtype as "dtype" and the tokenizer class
    as "TokenizersBackend"; readers written against transformers 4 (and lcd's own config parser) look
    for the flat keys. Add them; transformers 5 still reads the files unchanged."""
    cfg_path = os.path.join(out, "config.json")
    with open(cfg_path) as f:
        cfg = json.load(f)
    cfg["rope_theta"] = cfg.get("rope_parameters", {}).get("rope_theta", 10000.0)
    cfg["torch_dtype"] = dtype
    with open(cfg_path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    tc_path = os.path.join(out, "tokenizer_config.json")
    with open(tc_path) as f:
        tc = json.load(f)
    tc["tokenizer_class"] = "PreTrainedTokenizerFast"
    tc["add_bos_token"] = False
    tc["add_eos_token"] = False
    with open(tc_path, "w") as f:
        json.dump(tc, f, indent=2, sort_keys=True)
        f.write("\n")


def sample(model, tokenizer, bos_id, prompts=("ROMEO:\n", "First Citizen:\nWe are", "KING HENRY VI:\n")):
    torch.manual_seed(0)
    out = []
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
        gen = model.generate(ids, max_new_tokens=80, do_sample=True, temperature=0.8, top_k=40, top_p=0.95,
                             pad_token_id=bos_id)
        text = tokenizer.decode(gen[0], skip_special_tokens=True)
        print(f"--- sample for {prompt!r}\n{text}\n", flush=True)
        out.append(text)
    return out


def write_card(args, n_params, vocab, n_train, n_val, train_loss, train_eval_loss, val_loss, val_ppl, predicted,
               train_seconds, total_seconds, val_written, samples, val_ppl_bos):
    import tokenizers
    import transformers
    val_note = ("`val.txt` in this directory is the held-out text." if val_written else
                "The held-out text is not committed (too large); regenerate it with the command below: "
                "it is `input.txt` from the first line start at or after 90% of its characters to the end.")
    sample_md = "\n".join(f"```\n{s}\n```" for s in samples)
    card = f"""# tiny-shakespeare

A {n_params / 1e6:.2f} M-parameter Llama-architecture causal language model trained from scratch on
Tiny Shakespeare, with its own byte-level BPE tokenizer. It ships with lcdserve so that the runtime,
quantizer, server and end-to-end tests can run against a real Hugging Face checkpoint with no
download. It writes Shakespeare-flavoured text; it is not meant to be useful for anything else.

## Data and licence

- Text: Tiny Shakespeare (`input.txt`, 1,115,394 bytes; from `karpathy/char-rnn`), Shakespeare's plays,
  which are in the **public domain**. The model weights and tokenizer in this directory are released
  under the same terms as the rest of lcdserve.
- Split: the first 90% of the characters (cut at a line start) train the tokenizer and the model;
  the remaining 10% ({n_val} tokens) are held out. {val_note}

## Architecture

| field | value |
| --- | --- |
| architecture | `LlamaForCausalLM` |
| parameters | {n_params:,} |
| vocabulary | {vocab} (byte-level BPE, `tokenizers` ByteLevel pre-tokenizer + decoder; `{SPECIAL}` is BOS/EOS/pad, id 0) |
| hidden / intermediate | {args.hidden} / {args.intermediate} |
| layers | {args.layers} |
| attention heads / KV heads | {args.heads} / {args.kv_heads} (grouped-query attention) |
| context (max_position_embeddings) | {args.context} |
| RoPE theta | 10000 |
| tied embeddings | no |
| saved dtype | {args.dtype} (`model.safetensors`) |

## Training

```
python3 tools/train_tiny_model.py --data ../shared/data/tinyshakespeare/input.txt --out models/tiny-shakespeare
```

Seed {args.seed}; {args.steps} AdamW steps (lr {args.lr}, warmup {args.warmup}, cosine to 10%, weight decay 0.1,
betas 0.9/0.95, grad clip 1.0), batch {args.batch} x {args.context} tokens ({args.bos_fraction:.0%} of windows start
with `{SPECIAL}` at a line start); CPU, `torch.set_num_threads({args.threads})`, deterministic algorithms.
Training took {train_seconds:.0f} s of wall-clock time ({total_seconds:.0f} s in all, including tokenizer training and
evaluation); a step costs about 1.2 s on 2 idle cores, so about 6 minutes when nothing else runs.
Built with torch {torch.__version__}, transformers {transformers.__version__}, tokenizers {tokenizers.__version__}.

## Evaluation

| metric | value |
| --- | --- |
| train loss (last batch) | {train_loss:.4f} |
| loss on the last {n_val} training tokens | {train_eval_loss:.4f} |
| validation loss | {val_loss:.4f} |
| **validation perplexity** | **{val_ppl:.3f}** |

Perplexity protocol (the one `lcd eval-ppl --model models/tiny-shakespeare --text models/tiny-shakespeare/val.txt`
implements; machine-readable figures in `eval.json`): the validation text is encoded once without BOS,
cut into consecutive non-overlapping windows of {args.context} tokens (the last one shorter), each window is scored
on its own from position 0, every token but a window's first is predicted, and
ppl = exp(total NLL / {predicted} predicted tokens); that is `lcd eval-ppl --no-bos --window {args.context}`.
Measured on the saved {args.dtype} weights, computed in float32. The tokenizer does not add a BOS token
(`add_bos_token: false`), so `lcd eval-ppl`'s default is the same protocol. For reference, windows led by
`{SPECIAL}` (BOS + {args.context - 1} text tokens, every text token predicted) give validation perplexity
{val_ppl_bos:.3f} (`bos` in `eval.json`).

## Samples

`transformers` `generate`, temperature 0.8, top-k 40, top-p 0.95, 80 new tokens, torch seed 0:

{sample_md}
"""
    with open(os.path.join(args.out, "README.md"), "w") as f:
        f.write(card)


if __name__ == "__main__":
    sys.exit(main())
