"""`lcd quantize --method r2q` end to end on the real pretrained stories260K, served by lcd-server.

Two short jobs (2 bits, g = 64, 16 teacher-generated sequences of 64 tokens):
  * post-training R2Q (--steps 0): every decoder linear is stored as the
    binary-coded format (b = 2, P = 3) and equals numpy's own closed form of
    the source weight (alpha1 = mean|w|, B1 = sign w, alpha2 = mean|R|,
    B2 = sign R, sign(0) = +1; fp16 alphas, beta = 0, bit 0 = B1,
    bit 1 = B2), read through the independent numpy dequantizer
    (artifact_numpy.py); every other tensor is the source's. transformers
    (float64) on numpy's dequantized checkpoint and lcd's own forward on the
    artifact (logits_dump: Model::Load, kernels packed for this machine) give
    the same logits: max |lcd - hf| / max |hf| per position <= 2e-4 with the
    exact kernels (LCD_KERNELS_ISA=reference), <= 5e-2 with the int8
    activation-table kernels the server runs (their documented rounding).
  * R2Q with distillation (--steps 20, --r2q-refit 2): the KD loss falls,
    the held-out KL to the teacher ends at most 0.8x its value after the
    init, the manifest records the method's settings; the artifact is served
    by lcd-server, whose greedy tokens are lcd's own greedy choices on the
    same artifact (teacher-forced through logits_dump: each within 1% of the
    logit range of the top one, the bound of the int8 activation tables) and
    differ from the fp model's somewhere; lcd
    eval-ppl gives a finite perplexity; a second run with the same seed writes
    the same model.safetensors.
Errors: --bits 3 and --quantize-lm-head are refused by name, leaving no
directory. Needs ../shared/data/models/stories260K (skipped without it,
failed under CI=true).
"""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import artifact_numpy  # noqa: E402
import lcd_paths  # noqa: E402
import lcd_skip  # noqa: E402

SOURCE_DIR = os.environ.get("LCD_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
MODEL = os.path.join(SOURCE_DIR, "..", "shared", "data", "models", "stories260K")
COMMON = ["--method", "r2q", "--bits", "2", "--group-size", "64", "--samples", "16", "--seq-len", "64", "--batch",
          "4", "--seed", "7", "--threads", "2"]
KD = ["--steps", "20", "--lr", "1e-3", "--reassign-every", "5", "--r2q-refit", "2"]
LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
           "mlp.up_proj", "mlp.down_proj")
PROMPTS = [[1, 403, 407, 261, 165, 29, 87], [1, 9, 20, 31, 45, 300, 12, 7, 88]]


@pytest.fixture(scope="module")
def model_dir():
    if not os.path.exists(os.path.join(MODEL, "config.json")):
        lcd_skip.skip(f"{MODEL} not present")
    return MODEL


def _quantize(model_dir, out, extra):
    res = subprocess.run([lcd_paths.lcd_tool(), "quantize", "--model", model_dir, "--out", out, *COMMON, *extra,
                          "--json"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1]), res.stderr


@pytest.fixture(scope="module")
def closed(model_dir, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("r2q") / "closed")
    q, err = _quantize(model_dir, out, ["--steps", "0"])
    return out, q, err


@pytest.fixture(scope="module")
def trained(model_dir, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("r2q") / "kd")
    q, err = _quantize(model_dir, out, KD)
    return out, q, err


def _linears(n_layers):
    return [f"model.layers.{i}.{s}.weight" for i in range(n_layers) for s in LINEARS]


def _closed_form(w, gs):
    """numpy's R2Q closed form: fp16 alphas [rows][groups][2] and codes [rows][cols], plus decision margins."""
    rows, cols = w.shape
    groups = -(-cols // gs)
    alphas = np.zeros((rows, groups, 2), np.float64)
    codes = np.zeros((rows, cols), np.int64)
    margin = np.zeros((rows, cols))
    for g in range(groups):
        wg = w[:, g * gs:(g + 1) * gs].astype(np.float64)
        a1 = np.abs(wg).mean(axis=1, keepdims=True)
        b1 = wg >= 0
        r = wg - np.where(b1, a1, -a1)
        a2 = np.abs(r).mean(axis=1, keepdims=True)
        codes[:, g * gs:(g + 1) * gs] = b1 | ((r >= 0) << 1)
        margin[:, g * gs:(g + 1) * gs] = np.minimum(np.abs(wg), np.abs(r)) / (a1 + a2 + 1e-30)
        alphas[:, g, 0], alphas[:, g, 1] = a1[:, 0], a2[:, 0]
    return alphas.astype(np.float32).astype(np.float16), codes, margin


def test_closed_form_artifact_is_numpy_closed_form(closed, model_dir):
    out, _, _ = closed
    from safetensors.numpy import load_file
    src = load_file(os.path.join(model_dir, "model.safetensors"))
    stored = load_file(os.path.join(out, "model.safetensors"))
    manifest, tensors = artifact_numpy.dequantize(out)
    linears = _linears(manifest["model_config"]["num_hidden_layers"])
    for name, t in manifest["tensors"].items():
        if name not in linears:
            assert t["format"] == "dense", name
            np.testing.assert_array_equal(tensors[name], src[name].astype(np.float32))
            continue
        assert (t["format"], t["bits"], t["group_size"]) == ("binary_coded", 2, 64), (name, t)
        w = src[name].astype(np.float32)
        alphas, codes, margin = _closed_form(w, 64)
        params = stored[name + ".params"]
        assert params.shape == (w.shape[0], alphas.shape[1], 3)
        assert np.all(params[:, :, 2] == 0)
        # fp16 alphas equal, or one fp16 ulp apart (double rounding fp32 -> fp16 at a midpoint).
        got, want = params[:, :, :2].astype(np.float32), alphas.astype(np.float32)
        assert np.all(np.abs(got - want) <= np.abs(np.spacing(alphas)).astype(np.float32)), name
        assert (got == want).mean() > 0.99, name
        got_codes = artifact_numpy.unpack_codes(stored[name + ".codes"], w.shape[1], 2)
        bad = (got_codes != codes) & (margin > 1e-5)
        assert not bad.any(), (name, np.argwhere(bad)[:5])
        # And the numpy dequantizer reads alpha1 B1 + alpha2 B2 (bit 0 = B1, bit 1 = B2).
        a = got[:, np.arange(w.shape[1]) // 64, :]
        want_w = a[:, :, 0] * (2 * (got_codes & 1) - 1) + a[:, :, 1] * (2 * (got_codes >> 1) - 1)
        np.testing.assert_allclose(tensors[name], want_w, rtol=1e-6, atol=1e-9)
    assert set(linears) <= set(manifest["tensors"])
    with open(os.path.join(out, "manifest.json")) as f:
        m = json.load(f)
    assert (m["method"]["name"], m["method"]["bits"], m["method"]["group_size"]) == ("r2q", 2, 64)
    p = m["method"]["params"]
    assert p["r2q_refit"] == "0" and p["steps"] == "0" and p["stages"].startswith("r2q-closed-form")


def _hf_logits(ckpt_dir):
    import torch
    import transformers
    model = transformers.AutoModelForCausalLM.from_pretrained(ckpt_dir, dtype=torch.float64,
                                                              attn_implementation="eager").eval()
    with torch.no_grad():
        return [model(torch.tensor([p])).logits[0].numpy() for p in PROMPTS]


def _lcd_run(artifact_dir, tmp_path, greedy=0, env=None, prompts=PROMPTS):
    out = tmp_path / "lcd.json"
    res = subprocess.run([lcd_paths.driver("logits_dump"), "--model", str(artifact_dir), "--prompts",
                          json.dumps(prompts), "--greedy", str(greedy), "--threads", "2", "--out", str(out)],
                         capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    with open(out) as f:
        return json.load(f)


def test_lcd_forward_matches_numpy_dequantized_model(closed, tmp_path):
    lcd_skip.importorskip("torch")
    lcd_skip.importorskip("transformers")
    out, _, _ = closed
    manifest, tensors = artifact_numpy.dequantize(out)
    expected = _hf_logits(artifact_numpy.to_hf_checkpoint(manifest, tensors, str(tmp_path / "hf")))
    for isa, tol in (("reference", 2e-4), (None, 5e-2)):
        env = dict(os.environ)
        env.pop("LCD_KERNELS_ISA", None)
        if isa:
            env["LCD_KERNELS_ISA"] = isa
        got = _lcd_run(out, tmp_path, env=env)["full"]
        for i in range(len(PROMPTS)):
            actual = np.asarray(got[i], np.float64)
            rel = np.abs(actual - expected[i]).max(axis=1) / np.abs(expected[i]).max(axis=1)
            print(f"kernels {isa or 'default'} prompt {i}: max rel err {rel.max():.3g}")
            assert rel.max() <= tol, (isa, i, rel.max())


def test_distillation_improves_and_is_recorded(trained):
    out, quality, err = trained
    assert "[r2q] step 20/20 cakld" in err
    with open(os.path.join(out, "manifest.json")) as f:
        m = json.load(f)
    p = m["method"]["params"]
    assert p["r2q_refit"] == "2" and p["steps"] == "20" and p["trained"] == "alphas, latent weights"
    assert p["stages"] == "r2q-closed-form+refit2, e2e-kd"
    q = m["quality"]
    assert q["kd_loss_last_step"] < q["kd_loss_first_step"], q
    assert q["heldout_kl_teacher"] <= 0.8 * q["heldout_kl_teacher_init"], q
    assert "r2q_seconds" in q and abs(q["heldout_kl_teacher"] - quality["heldout_kl_teacher"]) < 1e-9
    # Still the R2Q structure: per (row, group) the values are +-alpha1 +-alpha2.
    manifest, tensors = artifact_numpy.dequantize(out)
    from safetensors.numpy import load_file
    stored = load_file(os.path.join(out, "model.safetensors"))
    name = "model.layers.2.mlp.down_proj.weight"
    params = stored[name + ".params"].astype(np.float32)
    for g0 in range(0, tensors[name].shape[1], 64):
        a = params[:, g0 // 64, :2]
        levels = np.stack([s1 * a[:, 0] + s2 * a[:, 1] for s1 in (-1, 1) for s2 in (-1, 1)], axis=1)
        blk = tensors[name][:, g0:g0 + 64]
        assert np.all(np.abs(blk[:, :, None] - levels[:, None, :]).min(axis=2) <= 1e-6 * np.abs(a).sum(1)[:, None])


def test_trained_artifact_served_by_lcd_server(trained, tmp_path):
    out, _, _ = trained
    import lcd_server_harness as h
    import grpc
    g, gg, _, _ = h.stubs()
    s = h.ServerProcess({"fp": MODEL, "r2q": out})
    try:
        s.wait_serving()
        with grpc.insecure_channel(s.address) as ch:
            stub = gg.GenerationServiceStub(ch)
            params = g.SamplingParams(temperature=0.0, max_new_tokens=24, ignore_eos=True)
            differ, served = False, []
            for ids in PROMPTS:
                r = stub.Generate(g.GenerateRequest(model="r2q", token_ids=g.TokenIds(ids=ids), sampling=params),
                                  timeout=60)
                f = stub.Generate(g.GenerateRequest(model="fp", token_ids=g.TokenIds(ids=ids), sampling=params),
                                  timeout=60)
                assert len(r.token_ids) == 24
                differ |= list(r.token_ids) != list(f.token_ids)
                served.append(list(r.token_ids))
            assert differ
    finally:
        assert s.terminate() == 0, s.log_text()[-3000:]
    # Teacher-forced through lcd's own forward on the artifact, every served
    # token is the greedy choice, or within 1% of the logit range of it: the
    # int8 activation tables (quant_linear.h, "LUT quantization") make the
    # server's result and logits_dump's differ by rounding, and this 2-bit
    # model has near-ties (seen: three tokens within 0.3% of the range at one
    # position, where the server and logits_dump picked different ones).
    for ids, toks in zip(PROMPTS, served):
        full = np.asarray(_lcd_run(out, tmp_path, prompts=[ids + toks])["full"][0], np.float64)
        for k, t in enumerate(toks):
            row = full[len(ids) - 1 + k]
            assert row.max() - row[t] <= 0.01 * (row.max() - row.min()), (ids, k, t, row.argmax())
    text = tmp_path / "t.txt"
    text.write_text("Once upon a time there was a little girl named Lily. She liked to play in the park. " * 8)
    res = subprocess.run([lcd_paths.lcd_tool(), "eval-ppl", "--model", out, "--text", str(text), "--threads", "2",
                          "--json"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert math.isfinite(json.loads(res.stdout.strip().splitlines()[-1])["ppl"])


def test_deterministic(trained, model_dir, tmp_path):
    out, _, _ = trained
    again = str(tmp_path / "again")
    _quantize(model_dir, again, KD)
    a = open(os.path.join(out, "model.safetensors"), "rb").read()
    b = open(os.path.join(again, "model.safetensors"), "rb").read()
    assert a == b


@pytest.mark.parametrize("extra,message", [(["--bits", "3"], "r2q is 2 bits"),
                                           (["--quantize-lm-head", "4"], "r2q keeps lm_head dense")])
def test_refused(model_dir, tmp_path, extra, message):
    args = [a for a in COMMON]
    if "--bits" in extra:
        args[args.index("--bits") + 1] = extra[1]
        extra = []
    res = subprocess.run([lcd_paths.lcd_tool(), "quantize", "--model", model_dir, "--out", str(tmp_path / "x"),
                          *args, *extra], capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and message in res.stderr, res.stderr
    assert not os.path.exists(tmp_path / "x")
