"""Artifact v1 against an independent numpy implementation of docs/ARTIFACT.md.

For random Llama (GQA, untied), Llama (tied) and Qwen2 (q/k/v biases) models
from make_random_models, numpy (artifact_numpy.py, written from the page, not
from lcd's code) quantizes the decoder's linear layers into each weight format
of the page, with a group size (48) that divides no row (64 and 128 columns:
short last groups), and lays the artifact out itself. Then:

  * oracle: numpy dequantizes the artifact (checking every sha256) into an
    fp32 Hugging Face checkpoint, and transformers computes its logits in
    float64;
  * lcd: logits_dump loads the artifact directory itself (Model::Load:
    manifest, sha256s, repacking for the active kernels) and computes the
    logits whole-prompt, chunked and batched.

Tolerance: max |lcd - hf| / max |hf| per row <= 2e-4 (lcd computes in fp32 on
exactly the decoded weights; the dense parity test measures ~1e-6, and the
quantized kernels add fp32 reassociation of the per-group sums). A check that
the quantized logits differ from the fp model's keeps the comparison honest.

Corruption: a flipped byte, a truncated weight file, an unlisted extra file
and a manifest naming a file outside the directory are each refused with a
message naming the file and the fault.
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import lcd_skip

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lcd_paths  # noqa: E402
import artifact_numpy  # noqa: E402

REL_TOL = 2e-4
LUT_REL_TOL = 0.1
GROUP = 48
UNIFORM = [("codebook", 2), ("codebook", 3), ("codebook", 4), ("affine", 2), ("affine", 3), ("affine", 4),
           ("binary_coded", 1), ("binary_coded", 2)]
LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
           "mlp.up_proj", "mlp.down_proj")


def _driver():
    return lcd_paths.driver("logits_dump")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    lcd_skip.importorskip("torch")
    lcd_skip.importorskip("transformers")
    import make_random_models
    out = tmp_path_factory.mktemp("random_models")
    return make_random_models.build_models(str(out), ["llama_fp32", "llama_tied_fp32", "qwen2_fp32"])


def _linear_names(num_layers=2):
    return [f"model.layers.{i}.{n}.weight" for i in range(num_layers) for n in LINEARS]


def _uniform_plan(fmt, bits):
    return {n: (fmt, bits, GROUP) for n in _linear_names()}


def _mixed_plan(quantize_head):
    # Formats differ between q, k and v (and gate/up), so the runtime cannot
    # stack them into one packed matrix and must compute them part by part.
    plan = {n: UNIFORM[i % len(UNIFORM)] + (GROUP,) for i, n in enumerate(_linear_names())}
    if quantize_head:
        plan["lm_head.weight"] = ("affine", 4, 64)
    return plan


def _hf_logits(ckpt_dir, prompts):
    import torch
    import transformers
    model = transformers.AutoModelForCausalLM.from_pretrained(ckpt_dir, dtype=torch.float64,
                                                              attn_implementation="eager").eval()
    with torch.no_grad():
        return [model(torch.tensor([p])).logits[0].numpy() for p in prompts]


def _lcd_logits(artifact_dir, prompts, tmp_path):
    out = tmp_path / "lcd.json"
    res = subprocess.run([_driver(), "--model", str(artifact_dir), "--prompts", json.dumps(prompts), "--greedy", "0",
                          "--threads", "2", "--out", str(out)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    with open(out) as f:
        return json.load(f)


def _check(model_dir, plan, tmp_path, rel_tol=REL_TOL):
    with open(os.path.join(model_dir, "reference.json")) as f:
        prompts = json.load(f)["prompts"]
    fp_logits = np.load(os.path.join(model_dir, "reference.npz"))
    art = tmp_path / "artifact"
    artifact_numpy.write_artifact(model_dir, str(art), plan)
    manifest, tensors = artifact_numpy.dequantize(str(art))
    expected = _hf_logits(artifact_numpy.to_hf_checkpoint(manifest, tensors, str(tmp_path / "hf")), prompts)
    got = _lcd_logits(art, prompts, tmp_path)
    for i in range(len(prompts)):
        # The quantization must be visible, or agreement would prove little.
        fp = fp_logits[f"logits{i}"]
        assert np.abs(expected[i] - fp).max() > 1e-2 * np.abs(fp).max()
        for mode in ("full", "chunked", "batched"):
            actual = np.asarray(got[mode][i], dtype=np.float64)
            assert actual.shape == expected[i].shape
            rel = np.abs(actual - expected[i]).max(axis=1) / np.abs(expected[i]).max(axis=1)
            print(f"{mode} prompt {i}: max rel err {rel.max():.3g}")
            assert rel.max() <= rel_tol, f"prompt {i} {mode}: max rel err {rel.max():.3g} at row {rel.argmax()}"


@pytest.mark.parametrize("fmt,bits", UNIFORM)
def test_each_format_matches_numpy_dequantization(models, fmt, bits, tmp_path):
    _check(models["llama_fp32"], _uniform_plan(fmt, bits), tmp_path)


@pytest.mark.parametrize("fmt,bits", [("codebook", 2), ("affine", 2), ("affine", 4), ("binary_coded", 2)])
def test_activation_lut_kernels_within_their_bound(models, fmt, bits, tmp_path):
    # g = 64 lets Pack choose the int8 activation-table design where it is
    # the faster one; its tables carry int8 rounding of partial sums of x
    # (quant_linear.h, "LUT quantization": <= 2% per dot product, tested in
    # quant_linear_test), which these random 2-layer models with wide weights
    # amplify to 3-8% of the largest logit (measured). On a real model the
    # effect is nil: tiny-shakespeare RTN b2 g64 perplexity 82.3015 with the
    # tables vs 82.3010 exact (LCD_KERNELS_ISA=reference). A wrong kernel
    # gives errors of order 1, so the bound still catches faults.
    plan = {n: (fmt, bits, 64) for n in _linear_names()}
    _check(models["llama_fp32"], plan, tmp_path, rel_tol=LUT_REL_TOL)


@pytest.mark.parametrize("bits,d", [(2, 8), (3, 16)])
def test_lattice_matches_numpy_dequantization(models, bits, d, tmp_path):
    # Group widths alternate bits, bits + 1 (artifact_numpy.quantize_lattice),
    # so rows of mixed code widths and the short last group (64 = 48 + 16,
    # 128 = 2*48 + 32) are read by both sides.
    plan = {n: ("lattice", bits, GROUP, d) for n in _linear_names()}
    _check(models["llama_fp32"], plan, tmp_path)


@pytest.mark.parametrize("name", ["llama_fp32", "llama_tied_fp32", "qwen2_fp32"])
def test_mixed_formats_and_quantized_head(models, name, tmp_path):
    _check(models[name], _mixed_plan(quantize_head=(name == "llama_tied_fp32")), tmp_path)


def _refused(artifact_dir, tmp_path):
    res = subprocess.run([_driver(), "--model", str(artifact_dir), "--prompts", "[[3, 4, 5]]", "--greedy", "0",
                          "--out", str(tmp_path / "x.json")], capture_output=True, text=True)
    assert res.returncode != 0, "a damaged artifact was loaded"
    assert "Traceback" not in res.stderr and "terminate" not in res.stderr
    return res.stderr


def test_damaged_artifacts_are_refused_with_the_reason(models, tmp_path):
    good = tmp_path / "good"
    artifact_numpy.write_artifact(models["llama_fp32"], str(good), _uniform_plan("codebook", 2))
    weights = "model.safetensors"

    flipped = tmp_path / "flipped"
    shutil.copytree(good, flipped)
    data = bytearray((flipped / weights).read_bytes())
    data[len(data) // 2] ^= 0x01
    (flipped / weights).write_bytes(bytes(data))
    err = _refused(flipped, tmp_path)
    assert "sha256" in err and weights in err

    truncated = tmp_path / "truncated"
    shutil.copytree(good, truncated)
    (truncated / weights).write_bytes((good / weights).read_bytes()[:-100])
    err = _refused(truncated, tmp_path)
    assert "truncated" in err and weights in err

    extra = tmp_path / "extra"
    shutil.copytree(good, extra)
    (extra / "notes.txt").write_text("x")
    assert "not listed" in _refused(extra, tmp_path)

    escape = tmp_path / "escape"
    shutil.copytree(good, escape)
    manifest = json.loads((escape / "manifest.json").read_text())
    manifest["files"].append({"path": "../good/model.safetensors", "bytes": 1, "sha256": "0" * 64})
    (escape / "manifest.json").write_text(json.dumps(manifest))
    assert "plain file name" in _refused(escape, tmp_path)

    missing = tmp_path / "missing"
    shutil.copytree(good, missing)
    os.remove(missing / weights)
    assert "missing" in _refused(missing, tmp_path)


def _restamp(art):
    """Recomputes the manifest's sizes and sha256s after editing a file."""
    manifest = json.loads((art / "manifest.json").read_text())
    for f in manifest["files"]:
        f["bytes"] = os.path.getsize(art / f["path"])
        f["sha256"] = artifact_numpy.sha256(art / f["path"])
    (art / "manifest.json").write_text(json.dumps(manifest))


def test_inconsistent_lattice_tensors_are_refused(models, tmp_path):
    from safetensors.numpy import load_file, save_file
    good = tmp_path / "good"
    plan = {n: ("lattice", 2, GROUP, 8) for n in _linear_names()}
    artifact_numpy.write_artifact(models["llama_fp32"], str(good), plan)
    name = "model.layers.0.mlp.up_proj.weight"
    for label, edit, expect in [
        ("width", lambda t: t[name + ".group_bits"].__setitem__(0, 9), "group_bits"),
        ("mu", lambda t: t[name + ".lattice"].__setitem__((0, -1), 0.0), "mu"),
        ("overflow", lambda t: t[name + ".lattice"].__setitem__((0, 0), 1000.0), "limit e^80"),
    ]:
        bad = tmp_path / label
        shutil.copytree(good, bad)
        tensors = load_file(str(bad / "model.safetensors"))
        edit(tensors)
        save_file(tensors, str(bad / "model.safetensors"))
        _restamp(bad)
        err = _refused(bad, tmp_path)
        assert expect in err and name in err, err
