#!/usr/bin/env python3
"""PyTorch twin of `lcd bench-train` (issue 7, "Throughput").

The same training step on the same model: transformers LlamaForCausalLM in
fp32 on the CPU, torch.set_num_threads(N), random token ids (seeded), the
next-token cross-entropy, backward, gradient clipping to norm 1, AdamW.
Prints tokens/s of fwd (incl. the loss), bwd, optimizer and total, in the
format of bench-train, so the two can be run alternately in one session:

  python3 tests/bench/bench_train_torch.py --model DIR --seq-len 512 --batch 1 --steps 3 --threads 2
"""
import argparse
import sys
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"],
                    help="transformers attention implementation (sdpa: PyTorch's fused CPU attention)")
    a = ap.parse_args()
    if min(a.seq_len, a.batch, a.steps) < 1 or a.warmup < 0 or a.threads < 1:
        sys.exit("bench_train_torch: --seq-len, --batch, --steps, --threads must be >= 1, --warmup >= 0")

    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    print(f"seed {a.seed}, torch {torch.__version__}, threads {torch.get_num_threads()}", file=sys.stderr)
    model = AutoModelForCausalLM.from_pretrained(a.model, torch_dtype=torch.float32, attn_implementation=a.attn)
    model.train()
    # No dropout in this model; train() only matters for the attention path.
    vocab = model.config.vocab_size
    seq = torch.randint(0, vocab, (a.batch, a.seq_len + 1))
    tokens, targets = seq[:, :-1].contiguous(), seq[:, 1:].contiguous()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.0, foreach=True)
    t_fwd = t_bwd = t_opt = 0.0
    for step in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        logits = model(input_ids=tokens).logits
        loss = torch.nn.functional.cross_entropy(logits.view(-1, vocab), targets.view(-1))
        t1 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        t3 = time.perf_counter()
        print(f"torch step {step}{'' if step >= a.warmup else ' (warm-up)'}: loss {loss.item():.4f}, "
              f"fwd+loss {t1 - t0:.2f} s, bwd {t2 - t1:.2f} s, opt {t3 - t2:.2f} s", file=sys.stderr)
        if step >= a.warmup:
            t_fwd += t1 - t0
            t_bwd += t2 - t1
            t_opt += t3 - t2
    n = a.batch * a.seq_len * a.steps
    total = t_fwd + t_bwd + t_opt
    print(f"torch {torch.__version__} fp32 ({a.attn} attention), {a.threads} threads, "
          f"batch {a.batch} x seq {a.seq_len}, {a.steps} steps")
    print(f"torch tok/s: fwd+loss {n / t_fwd:.1f} | bwd {n / t_bwd:.1f} | optimizer {n / t_opt:.1f} "
          f"| total {n / total:.1f}")


if __name__ == "__main__":
    main()
