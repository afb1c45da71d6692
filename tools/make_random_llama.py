#!/usr/bin/env python3
"""Writes a random-weight Llama checkpoint in Hugging Face layout.

Used for performance figures at real layer shapes without real weights, e.g.
Llama-2-7B shapes with 4 of its 32 layers in bf16:

  python3 tools/make_random_llama.py --out /tmp/llama7b-4l --preset llama2-7b \
      --layers 4 --dtype bfloat16

Weights are N(0, 0.02) like a freshly initialised transformers model; the
tokenizer is not written (benchmarks feed token ids). Progress goes to stderr.
"""
import argparse
import json
import os
import sys
import time

import torch
from safetensors.torch import save_file

PRESETS = {
    "llama2-7b": dict(hidden_size=4096, intermediate_size=11008, num_attention_heads=32,
                      num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096,
                      rope_theta=10000.0, rms_norm_eps=1e-5, num_hidden_layers=32),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="llama2-7b")
    ap.add_argument("--layers", type=int, default=4, help="number of decoder layers to write")
    ap.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="bfloat16")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    cfg = dict(PRESETS[args.preset])
    cfg.update(num_hidden_layers=args.layers, architectures=["LlamaForCausalLM"], model_type="llama",
               tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, torch_dtype=args.dtype,
               hidden_act="silu", attention_bias=False)
    dtype = getattr(torch, args.dtype)
    gen = torch.Generator().manual_seed(args.seed)
    h, inter, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    kv = cfg["num_key_value_heads"] * (h // cfg["num_attention_heads"])

    def rand(*shape):
        return (torch.randn(*shape, generator=gen) * 0.02).to(dtype)

    os.makedirs(args.out, exist_ok=True)
    tensors = {"model.embed_tokens.weight": rand(v, h), "model.norm.weight": torch.ones(h, dtype=dtype),
               "lm_head.weight": rand(v, h)}
    t0 = time.time()
    for i in range(args.layers):
        p = f"model.layers.{i}."
        tensors.update({
            p + "self_attn.q_proj.weight": rand(h, h), p + "self_attn.k_proj.weight": rand(kv, h),
            p + "self_attn.v_proj.weight": rand(kv, h), p + "self_attn.o_proj.weight": rand(h, h),
            p + "mlp.gate_proj.weight": rand(inter, h), p + "mlp.up_proj.weight": rand(inter, h),
            p + "mlp.down_proj.weight": rand(h, inter),
            p + "input_layernorm.weight": torch.ones(h, dtype=dtype),
            p + "post_attention_layernorm.weight": torch.ones(h, dtype=dtype),
        })
        print(f"[make_random_llama] layer {i + 1}/{args.layers} ({time.time() - t0:.1f}s)", file=sys.stderr)
    save_file(tensors, os.path.join(args.out, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    print(f"[make_random_llama] wrote {args.out}: {total / 2**30:.2f} GiB", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
