"""`lcd bench-train` (tools/lcd/bench_train.cc) on models/tiny-shakespeare.

Checks: every bad input gives exit code 1 or 2 and a message naming the
problem or the bad value (missing --model, a directory that is not a model, --seq-len 0 or
beyond max_position_embeddings, --steps 0, an unknown --quantized); a short
dense and a short 2-bit codebook run print the tokens/s, FLOPs and
breakdown lines, with positive numbers, a finite loss that goes down over
the measured steps (AdamW on a fixed random batch), and breakdown entries
whose sum stays within the measured fwd+bwd time (they are exclusive parts
of it; 5% + 20 ms slack for clock granularity).
"""
import json
import math
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lcd_paths  # noqa: E402

SRC = os.environ.get("LCD_SOURCE_DIR", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
MODEL = os.path.join(SRC, "models", "tiny-shakespeare")


def _run(*args):
    return subprocess.run([lcd_paths.lcd_tool(), "bench-train", *args], capture_output=True, text=True, timeout=120)


def test_bad_inputs(tmp_path):
    max_pos = json.load(open(os.path.join(MODEL, "config.json")))["max_position_embeddings"]
    cases = [
        ([], "--model is required"),
        (["--model", str(tmp_path)], str(tmp_path)),
        (["--model", MODEL, "--seq-len", "0"], "--seq-len"),
        (["--model", MODEL, "--steps", "0"], "--steps"),
        (["--model", MODEL, "--seq-len", str(max_pos + 1)], "max_position_embeddings"),
        (["--model", MODEL, "--quantized", "lcd-5bit"], "--quantized must be lcd-2bit or lcd-3bit"),
        (["--model", MODEL, "--seq-len", "abc"], "abc"),  # cxxopts names the value, not the flag.
    ]
    for args, needle in cases:
        r = _run(*args, "--skip-gemm")
        assert r.returncode in (1, 2), (args, r.returncode, r.stdout, r.stderr)
        assert needle in r.stderr, (args, r.stderr)


def _parse(out):
    tok = re.search(r"tok/s: fwd ([\d.]+) \| loss ([\d.]+) \| bwd ([\d.]+) \| optimizer ([\d.]+) "
                    r"\| total ([\d.]+)", out)
    sec = re.search(r"seconds/step: fwd ([\d.]+), loss ([\d.]+), bwd ([\d.]+)", out)
    assert tok and sec, out
    assert all(float(x) > 0 for x in tok.groups()), out
    assert re.search(r"FLOPs/token [\d.e+]+ .* achieved [\d.]+ GFLOP/s", out), out
    parts = dict((m.group(1), float(m.group(2))) for m in re.finditer(r"^  ((?:fwd|bwd)\.\w+)\s+([\d.]+)", out, re.M))
    for op in ("fwd.qkv", "fwd.attention", "fwd.gate_up", "fwd.lm_head", "bwd.qkv", "bwd.attention", "bwd.lm_head"):
        assert op in parts, (op, out)
    fwd_bwd = float(sec.group(1)) + float(sec.group(3))
    assert sum(parts.values()) <= fwd_bwd * 1.05 + 0.02, (parts, fwd_bwd)
    return parts


def _losses(err):
    return [float(x) for x in re.findall(r"step \d+: loss ([\d.]+)", err)]


def test_dense_run():
    r = _run("--model", MODEL, "--seq-len", "32", "--batch", "2", "--steps", "3", "--warmup", "0", "--breakdown")
    assert r.returncode == 0, r.stderr
    _parse(r.stdout)
    assert "OpenBLAS sgemm GFLOP/s" in r.stdout and "of the measured sgemm peak" in r.stdout, r.stdout
    losses = _losses(r.stderr)
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses) and losses[-1] < losses[0], r.stderr


def test_codebook_run():
    r = _run("--model", MODEL, "--seq-len", "32", "--steps", "2", "--warmup", "0", "--quantized", "lcd-2bit",
             "--group-size", "64", "--breakdown", "--skip-gemm")
    assert r.returncode == 0, r.stderr
    parts = _parse(r.stdout)
    assert "codebook 2-bit g64" in r.stdout, r.stdout
    assert "fwd.decode" in parts and "bwd.quant_grad" in parts, parts
    assert "bwd.embedding" not in parts, parts  # Dense weights are frozen.
    losses = _losses(r.stderr)
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses), r.stderr
