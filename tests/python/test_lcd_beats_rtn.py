"""CI's short LCD job on both small real models: at 2 bits it beats RTN, and lcd-server serves it.

Issue 7 asks CI to run a short LCD job on stories260K (real, pretrained; ../shared) and on the
committed tiny-shakespeare model, and to check that its perplexity is better than RTN's at
2 bits and that the artifact serves. Per model:
  * `lcd quantize --method rtn --bits 2` and a short data-free `--method lcd --bits 2` job
    (teacher-generated calibration, 30 steps), the same group size;
  * `lcd eval-ppl` of both on held-out in-domain text the jobs never saw: tiny-shakespeare's
    `val.txt` (the held-out split), and for stories260K stories the fp model writes with other
    seeds, temperature and prompt than the calibration's (fp printed beside them);
  * LCD's perplexity must be below RTN's (measured: stories260K 2-bit g64, 6 stories, RTN 479.58
    vs LCD 25.27, fp 5.67; tiny-shakespeare 2-bit g128 RTN 82.44 vs LCD 81.68, fp 81.34);
  * lcd-server on 127.0.0.1 loads the LCD artifact; Generate (unary and streaming) answers,
    and its greedy tokens equal lcd's in-process greedy tokens on the same artifact
    (logits_dump), so the server runs the LCD weights.
Needs ../shared/data/models/stories260K for its half: skipped without it, failed under CI=true.
"""
import json
import math
import os
import subprocess
import sys

import grpc
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lcd_paths  # noqa: E402
import lcd_server_harness as h  # noqa: E402
import lcd_skip  # noqa: E402

STORIES = os.path.join(h.SOURCE_DIR, "..", "shared", "data", "models", "stories260K")
# name -> (model dir, group size, lr): the settings of docs/QUALITY.md's rows for each model.
MODELS = {"stories": (STORIES, 64, "3e-4"), "tiny": (h.TINY_SHAKESPEARE, 128, "5e-5")}
LCD_ARGS = ["--steps", "30", "--samples", "16", "--seq-len", "64", "--batch", "4", "--seed", "7", "--threads", "2"]


def _run(args, timeout=600):
    res = subprocess.run([lcd_paths.lcd_tool(), *args], capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, (args, res.stderr[-3000:])
    return res.stdout


def _model_dir(name):
    d = MODELS[name][0]
    if not os.path.exists(os.path.join(d, "config.json")):
        lcd_skip.skip(f"{d} not present")  # A failure under CI=true.
    return d


@pytest.fixture(scope="module", params=sorted(MODELS))
def quantized(request, tmp_path_factory):
    """(name, model dir, rtn artifact, lcd artifact, held-out text path)."""
    name = request.param
    model = _model_dir(name)
    _, group, lr = MODELS[name]
    tmp = tmp_path_factory.mktemp(name)
    rtn, lcd = str(tmp / "rtn"), str(tmp / "lcd")
    _run(["quantize", "--model", model, "--out", rtn, "--method", "rtn", "--bits", "2", "--group-size", str(group),
          "--threads", "2"])
    _run(["quantize", "--model", model, "--out", lcd, "--method", "lcd", "--bits", "2", "--group-size", str(group),
          "--lr", lr, *LCD_ARGS])
    if name == "tiny":
        text = os.path.join(model, "val.txt")
    else:
        text = str(tmp / "stories.txt")
        with open(text, "w") as f:
            for seed in range(1000, 1006):
                f.write(_run(["generate", "--model", model, "--prompt", "Once upon a time", "--max-new-tokens", "200",
                              "--temperature", "1.0", "--seed", str(seed), "--threads", "2"]) + "\n\n")
    return name, model, rtn, lcd, text


def _ppl(model, text):
    return json.loads(_run(["eval-ppl", "--model", model, "--text", text, "--threads", "2", "--json"])
                      .strip().splitlines()[-1])["ppl"]


def test_lcd_perplexity_below_rtn_at_2_bits(quantized):
    name, model, rtn, lcd, text = quantized
    fp, p_rtn, p_lcd = _ppl(model, text), _ppl(rtn, text), _ppl(lcd, text)
    print(f"{name}: fp {fp:.4f}, rtn 2-bit {p_rtn:.4f}, lcd 2-bit {p_lcd:.4f}")
    assert math.isfinite(p_lcd) and p_lcd < p_rtn, (fp, p_lcd, p_rtn)
    with open(os.path.join(lcd, "manifest.json")) as f:
        m = json.load(f)
    assert m["method"]["name"] == "lcd" and m["method"]["bits"] == 2


def test_lcd_artifact_serves(quantized, tmp_path):
    name, _, _, lcd, _ = quantized
    g, gg, _, _ = h.stubs()
    s = h.ServerProcess({name: lcd})
    try:
        s.wait_serving()
        with grpc.insecure_channel(s.address) as ch:
            stub = gg.GenerationServiceStub(ch)
            prompt = "Once upon a time" if name == "stories" else "ROMEO:\n"
            ids = list(stub.Tokenize(g.TokenizeRequest(model=name, text=prompt, add_bos=True)).token_ids)
            sampling = g.SamplingParams(temperature=0.0, max_new_tokens=20, ignore_eos=True)
            req = g.GenerateRequest(model=name, token_ids=g.TokenIds(ids=ids), sampling=sampling)
            r = stub.Generate(req, timeout=60)
            assert len(r.token_ids) == 20 and r.text
            chunks = list(stub.GenerateStream(req, timeout=60))
            assert [t for c in chunks for t in c.token_ids] == list(r.token_ids)
    finally:
        assert s.terminate() == 0, s.log_text()[-3000:]
    out = tmp_path / "inproc.json"
    subprocess.run([os.path.join(h.BUILD_DIR, "bin", "logits_dump"), "--model", lcd, "--prompts", json.dumps([ids]),
                    "--greedy", "20", "--out", str(out)], check=True)
    with open(out) as f:
        assert json.load(f)["greedy"][0] == list(r.token_ids)
