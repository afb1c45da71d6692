"""lcd-server serves a quantized artifact end to end.

The committed tiny model is quantized by the numpy writer of artifact v1
(artifact_numpy.py: k-means-free quantile codebooks, 4 bits, g = 64, every
decoder linear layer) and served next to its source by one lcd-server on
127.0.0.1. Checked: both models answer Generate (unary and streaming) with
text from the tokenizer the artifact ships; the artifact's greedy tokens over
the server equal lcd's in-process greedy tokens on the same artifact
(logits_dump, the path the parity tests cover), so the server really runs
the quantized weights; the quantized and fp models disagree somewhere (the
quantization is visible); ModelService reports the artifact as loaded; and
lcd-server refuses at start an artifact with a corrupted byte, naming it.
"""
import json
import os
import subprocess
import sys

import grpc
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import artifact_numpy  # noqa: E402
import lcd_server_harness as h  # noqa: E402

g, gg, m, mg = h.stubs()
LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
           "mlp.up_proj", "mlp.down_proj")


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    with open(os.path.join(h.TINY_SHAKESPEARE, "config.json")) as f:
        layers = json.load(f)["num_hidden_layers"]
    plan = {f"model.layers.{i}.{n}.weight": ("codebook", 4, 64) for i in range(layers) for n in LINEARS}
    out = tmp_path_factory.mktemp("artifact") / "tiny-q4"
    artifact_numpy.write_artifact(h.TINY_SHAKESPEARE, str(out), plan)
    return str(out)


@pytest.fixture(scope="module")
def server(artifact):
    s = h.ServerProcess({"fp": h.TINY_SHAKESPEARE, "q4": artifact})
    try:
        s.wait_serving()
        yield s
    finally:
        assert s.terminate() == 0, s.log_text()[-3000:]


@pytest.fixture(scope="module")
def stub(server):
    ch = grpc.insecure_channel(server.address)
    yield gg.GenerationServiceStub(ch)
    ch.close()


def _greedy(n):
    return g.SamplingParams(temperature=0.0, max_new_tokens=n, ignore_eos=True)


def test_quantized_model_generates_its_own_numbers(stub, artifact, tmp_path):
    prompt = "KING RICHARD III:\n"
    ids = list(stub.Tokenize(g.TokenizeRequest(model="q4", text=prompt, add_bos=True)).token_ids)
    r = stub.Generate(g.GenerateRequest(model="q4", token_ids=g.TokenIds(ids=ids), sampling=_greedy(24)), timeout=60)
    assert len(r.token_ids) == 24 and r.text
    chunks = list(stub.GenerateStream(g.GenerateRequest(model="q4", token_ids=g.TokenIds(ids=ids),
                                                        sampling=_greedy(24)), timeout=60))
    assert [t for c in chunks for t in c.token_ids] == list(r.token_ids)

    out = tmp_path / "inproc.json"
    subprocess.run([os.path.join(h.BUILD_DIR, "bin", "logits_dump"), "--model", artifact, "--prompts",
                    json.dumps([ids]), "--greedy", "24", "--out", str(out)], check=True)
    with open(out) as f:
        assert json.load(f)["greedy"][0] == list(r.token_ids)


def test_quantization_is_visible(stub):
    # Over a few prompts the fp and 4-bit models must not agree on every
    # greedy token (or the server might be serving the source weights).
    differ = False
    for prompt in ("ROMEO:\n", "First Citizen:\nWe are", "O, she doth teach the torches"):
        a = stub.Generate(g.GenerateRequest(model="fp", text=prompt, sampling=_greedy(32)), timeout=60)
        b = stub.Generate(g.GenerateRequest(model="q4", text=prompt, sampling=_greedy(32)), timeout=60)
        differ |= list(a.token_ids) != list(b.token_ids)
    assert differ


def test_model_service_lists_the_artifact(server):
    with grpc.insecure_channel(server.address) as ch:
        models = mg.ModelServiceStub(ch).ListModels(m.ListModelsRequest(), timeout=10)
    names = {x.name for x in models.models}
    assert {"fp", "q4"} <= names


def test_corrupt_artifact_is_refused_at_start(artifact, tmp_path):
    import shutil
    bad = tmp_path / "bad"
    shutil.copytree(artifact, bad)
    data = bytearray((bad / "model.safetensors").read_bytes())
    data[-7] ^= 0x40
    (bad / "model.safetensors").write_bytes(bytes(data))
    s = h.ServerProcess({"bad": str(bad)})
    try:
        s.proc.wait(timeout=60)
    finally:
        s.terminate()
    assert s.proc.returncode != 0
    log = s.log_text()
    assert "sha256" in log and "model.safetensors" in log, log[-2000:]
