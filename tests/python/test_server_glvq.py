"""`lcd quantize --method glvq` end to end: quantize, read back independently, serve.

The committed tiny model (hidden 256, FFN 512) is quantized by lcd itself to
GLVQ 2 bits, g = 64, d = 8, 4 steps per column group, calibrated on the
first 1024 tokens of its held-out text (a test of the plumbing, not of
quality), which must:
  * report progress (calibration windows, tensor i of 28 with output error);
  * write every decoder linear as the lattice format with lattice_dim 8 and
    per-group widths from the salience allocation (1, 2 and 3 bits present,
    mean 2 over every matrix's groups) and the GLVQ figures in the manifest
    (training never ends above its init);
  * decode, with the independent numpy reader (artifact_numpy.py, from
    docs/ARTIFACT.md) into an fp32 checkpoint whose transformers float64
    logits match lcd's own logits on the artifact (max rel err per row
    <= 2e-4, as test_artifact_parity.py);
  * be served by lcd-server: greedy tokens over gRPC equal lcd's in-process
    greedy tokens on the artifact (logits_dump), and differ from the fp model's
    somewhere.
Resumable: with --resume DIR every finished weight is kept in DIR; a rerun
reuses the matching ones (one file deleted and one with a foreign fingerprint
are recomputed) and writes the same weights byte for byte, reporting JSON
progress lines on --progress-fd (monotonic, ending at 1).
Errors: glvq without --calib, and a lattice dim that does not divide the
group size, are refused by name.
"""
import json
import os
import subprocess
import sys

import grpc
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import artifact_numpy  # noqa: E402
import lcd_paths  # noqa: E402
import lcd_server_harness as h  # noqa: E402
import lcd_skip  # noqa: E402

CALIB = os.path.join(h.TINY_SHAKESPEARE, "val.txt")
ARGS = ["--method", "glvq", "--bits", "2", "--group-size", "64", "--glvq-dim", "8", "--glvq-steps", "4", "--glvq-reround-every", "0",
        "--calib", CALIB, "--calib-tokens", "1024", "--calib-window", "256", "--threads", "2"]


@pytest.fixture(scope="module")
def resume_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("glvq_resume"))


@pytest.fixture(scope="module")
def artifact(tmp_path_factory, resume_dir):
    out = str(tmp_path_factory.mktemp("glvq") / "art")
    res = subprocess.run([lcd_paths.lcd_tool(), "quantize", "--model", h.TINY_SHAKESPEARE, "--out", out, *ARGS,
                          "--resume", resume_dir], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert "0 of 28 weights already quantized" in res.stderr
    return out, res.stderr


def test_resume_reuses_finished_weights(artifact, resume_dir, tmp_path):
    out, _ = artifact
    files = sorted(os.listdir(resume_dir))
    assert len(files) == 28
    os.remove(os.path.join(resume_dir, "glvq-3.bin"))
    foreign = os.path.join(resume_dir, "glvq-5.bin")
    data = open(foreign, "rb").read().split(b"\n", 2)
    open(foreign, "wb").write(data[0] + b"\n" + data[1].replace(b"steps 4", b"steps 5") + b"\n" + data[2])
    out2 = str(tmp_path / "again")
    res, lines = h.run_with_progress_fd([lcd_paths.lcd_tool(), "quantize", "--model", h.TINY_SHAKESPEARE, "--out", out2,
                                         *ARGS, "--resume", resume_dir])
    assert res.returncode == 0, res.stderr
    # JSON progress lines: every phase, monotonic fractions ending at 1.
    assert {"calibrate", "quantize", "write"} <= {x["phase"] for x in lines}
    assert any(x["message"].startswith("[glvq] tensor 28/28") for x in lines)
    fractions = [x["progress"] for x in lines]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0, fractions
    assert "26 of 28 weights already quantized" in res.stderr
    assert res.stderr.count("(resumed)") == 26
    with open(os.path.join(out, "model.safetensors"), "rb") as a, open(os.path.join(out2, "model.safetensors"), "rb") as b:
        assert a.read() == b.read()


def test_progress_and_manifest(artifact):
    out, stderr = artifact
    assert "[glvq] calibration window" in stderr
    assert "[glvq] tensor 28/28" in stderr and "output error" in stderr
    with open(os.path.join(out, "manifest.json")) as f:
        manifest = json.load(f)
    assert manifest["method"]["name"] == "glvq" and manifest["method"]["params"]["glvq_dim"] == "8"
    q = manifest["quality"]
    assert q["glvq_output_error_final"] <= q["glvq_output_error_init"]
    assert q["glvq_groups_up"] == q["glvq_groups_down"] > 0
    linears = {k: v for k, v in manifest["tensors"].items() if k.startswith("model.layers.") and v["format"] != "dense"}
    assert len(linears) == 28
    from safetensors.numpy import load_file
    stored = load_file(os.path.join(out, "model.safetensors"))
    widths = set()
    for name, t in linears.items():
        assert t["format"] == "lattice" and t["lattice_dim"] == 8 and t["bits"] == 2 and t["group_size"] == 64
        gb = stored[name + ".group_bits"]
        widths |= set(gb.tolist())
        assert gb.mean() == 2.0  # every column count here is a multiple of 64: balanced exactly
    assert widths == {1, 2, 3}
    # bits/weight: mean 2-bit codes, a fp16 scale per (row, 64 columns), the lattices and widths.
    assert 2.25 < q["bits_per_weight"] < 2.32


def test_numpy_reader_matches_lcd_logits(artifact, tmp_path):
    lcd_skip.importorskip("torch")
    lcd_skip.importorskip("transformers")
    import torch
    import transformers
    out, _ = artifact
    manifest, tensors = artifact_numpy.dequantize(out)
    hf = artifact_numpy.to_hf_checkpoint(manifest, tensors, str(tmp_path / "hf"))
    prompts = [[0, 15, 27, 33, 40, 8, 19, 44, 2, 7, 30, 31], [0, 5, 6, 7]]
    model = transformers.AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float64,
                                                              attn_implementation="eager").eval()
    with torch.no_grad():
        expected = [model(torch.tensor([p])).logits[0].numpy() for p in prompts]
    dump = tmp_path / "lcd.json"
    subprocess.run([lcd_paths.driver("logits_dump"), "--model", out, "--prompts", json.dumps(prompts), "--greedy",
                    "0", "--threads", "2", "--out", str(dump)], check=True)
    with open(dump) as f:
        got = json.load(f)
    for i in range(len(prompts)):
        actual = np.asarray(got["full"][i], dtype=np.float64)
        rel = np.abs(actual - expected[i]).max(axis=1) / np.abs(expected[i]).max(axis=1)
        print(f"prompt {i}: max rel err {rel.max():.3g}")
        assert rel.max() <= 2e-4


def test_served_by_lcd_server(artifact, tmp_path):
    h.require_server()
    out, _ = artifact
    g, gg, _, _ = h.stubs()
    s = h.ServerProcess({"fp": h.TINY_SHAKESPEARE, "glvq": out})
    try:
        s.wait_serving()
        with grpc.insecure_channel(s.address) as ch:
            stub = gg.GenerationServiceStub(ch)
            greedy = g.SamplingParams(temperature=0.0, max_new_tokens=24, ignore_eos=True)
            ids = list(stub.Tokenize(g.TokenizeRequest(model="glvq", text="ROMEO:\n", add_bos=True)).token_ids)
            r = stub.Generate(g.GenerateRequest(model="glvq", token_ids=g.TokenIds(ids=ids), sampling=greedy),
                              timeout=60)
            assert len(r.token_ids) == 24 and r.text
            dump = tmp_path / "inproc.json"
            subprocess.run([lcd_paths.driver("logits_dump"), "--model", out, "--prompts", json.dumps([ids]),
                            "--greedy", "24", "--out", str(dump)], check=True)
            with open(dump) as f:
                assert json.load(f)["greedy"][0] == list(r.token_ids)
            differ = False
            for prompt in ("ROMEO:\n", "First Citizen:\nWe are", "O, she doth teach the torches"):
                a = stub.Generate(g.GenerateRequest(model="fp", text=prompt, sampling=greedy), timeout=60)
                b = stub.Generate(g.GenerateRequest(model="glvq", text=prompt, sampling=greedy), timeout=60)
                differ |= list(a.token_ids) != list(b.token_ids)
            assert differ
    finally:
        assert s.terminate() == 0, s.log_text()[-3000:]


@pytest.mark.parametrize("extra,expect", [
    (["--method", "glvq", "--bits", "2"], "--calib"),
    (["--method", "glvq", "--bits", "2", "--group-size", "64", "--glvq-dim", "12", "--calib", CALIB], "divide"),
])
def test_bad_options_are_refused(tmp_path, extra, expect):
    res = subprocess.run([lcd_paths.lcd_tool(), "quantize", "--model", h.TINY_SHAKESPEARE, "--out",
                          str(tmp_path / "x"), *extra], capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and expect in res.stderr, res.stderr
    assert not os.path.exists(tmp_path / "x")
