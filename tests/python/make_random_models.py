#!/usr/bin/env python3
"""Small random Llama / Mistral / Qwen2 checkpoints and their transformers references.

Each model is built with transformers itself (so config.json and the tensor
names are exactly what Hugging Face writes), its weights are re-drawn with a
larger spread than the default init (N(0, 0.02) makes every logit ~0 and
would hide errors), and it is saved with save_pretrained(safe_serialization=True).
Next to the checkpoint, reference.npz holds, for the fixed prompts,
transformers' logits for every position computed in float64 (eager attention,
eval mode) on exactly the stored weights (bf16/fp16 weights upcast), and
transformers' greedy continuation (generate, do_sample=False, EOS disabled).

Usable as a library (build_models) or as a script:
  python3 tests/python/make_random_models.py --out /tmp/lcd_random_models
"""
import argparse
import json
import os
import sys

import numpy as np
import torch

PROMPT_LENGTHS = (37, 13)
GREEDY_NEW_TOKENS = 20
VOCAB = 512

COMMON = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
              rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2)

# name -> (family, dtype, extra config, save kwargs)
SPECS = {
    # GQA + llama3 rope scaling + theta 5e5: with head_dim 16 the frequencies
    # fall in all three llama3 bands (kept, smoothed, divided by factor).
    "llama_fp32": ("llama", torch.float32, dict(
        rope_parameters=dict(rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0,
                             high_freq_factor=4.0, original_max_position_embeddings=64)), {}),
    "llama_tied_fp32": ("llama", torch.float32, dict(tie_word_embeddings=True,
                                                    rope_parameters=dict(rope_type="default", rope_theta=10000.0)), {}),
    "llama_bf16_sharded": ("llama", torch.bfloat16, dict(
        rope_parameters=dict(rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0,
                             high_freq_factor=4.0, original_max_position_embeddings=64)),
        dict(max_shard_size="200KB")),
    "llama_fp16": ("llama", torch.float16, dict(rope_parameters=dict(rope_type="linear", rope_theta=10000.0,
                                                                     factor=2.0)), {}),
    "mistral_fp32": ("mistral", torch.float32, dict(sliding_window=128, head_dim=16), {}),
    "qwen2_fp32": ("qwen2", torch.float32, dict(), {}),
    "qwen2_bf16": ("qwen2", torch.bfloat16, dict(), {}),
}


def _config(family, extra):
    import transformers
    cls = {"llama": transformers.LlamaConfig, "mistral": transformers.MistralConfig,
           "qwen2": transformers.Qwen2Config}[family]
    cfg = cls(**COMMON, **extra)
    cfg.tie_word_embeddings = extra.get("tie_word_embeddings", False)
    return cfg


def _randomize(model, gen):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            elif name.endswith(".bias"):
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.15 * torch.randn(p.shape, generator=gen))


def prompts(seed=1234):
    rng = np.random.default_rng(seed)
    # Avoid ids 0..2 (pad/bos/eos) only for readability; any id is valid.
    return [rng.integers(3, VOCAB, size=n).tolist() for n in PROMPT_LENGTHS]


def build_model(out_dir, name, seed=0):
    import transformers
    family, dtype, extra, save_kwargs = SPECS[name]
    cfg = _config(family, extra)
    cls = {"llama": transformers.LlamaForCausalLM, "mistral": transformers.MistralForCausalLM,
           "qwen2": transformers.Qwen2ForCausalLM}[family]
    torch.manual_seed(seed)
    model = cls(cfg)
    _randomize(model, torch.Generator().manual_seed(seed + 1))
    if cfg.tie_word_embeddings:
        model.tie_weights()
    model = model.to(dtype).eval()
    path = os.path.join(out_dir, name)
    model.save_pretrained(path, safe_serialization=True, **save_kwargs)

    # Reference: the stored weights, upcast to float64.
    ref = cls.from_pretrained(path, dtype=torch.float64, attn_implementation="eager").eval()
    ref.generation_config.eos_token_id = None
    ref.generation_config.pad_token_id = 0
    ps = prompts()
    logits, greedy = [], []
    with torch.no_grad():
        for p in ps:
            ids = torch.tensor([p], dtype=torch.long)
            logits.append(ref(ids).logits[0].numpy())
            out = ref.generate(ids, do_sample=False, max_new_tokens=GREEDY_NEW_TOKENS,
                               attention_mask=torch.ones_like(ids))
            greedy.append(out[0, len(p):].tolist())
    np.savez(os.path.join(path, "reference.npz"), **{f"logits{i}": l for i, l in enumerate(logits)})
    with open(os.path.join(path, "reference.json"), "w") as f:
        json.dump({"prompts": ps, "greedy": greedy, "dtype": str(dtype)}, f)
    return path


def build_models(out_dir, names=None):
    os.makedirs(out_dir, exist_ok=True)
    return {n: build_model(out_dir, n, seed=i) for i, n in enumerate(names or SPECS)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--only", nargs="*", choices=sorted(SPECS))
    args = ap.parse_args()
    for name, path in build_models(args.out, args.only).items():
        print(name, path, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
