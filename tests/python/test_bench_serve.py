"""`lcd client` and `lcd bench-serve` against the real lcd-server.

The daemon is started on 127.0.0.1 with free ports (lcd_server_harness) and
the tiny-shakespeare model; the module is skipped when the server binary, the
`lcd` tool or the model is absent. The checks are on what the tools print and
on the internal consistency of bench-serve's JSON report (request and token
counts, ordered percentiles, positive throughputs).
"""
import json
import os
import subprocess

import pytest
import lcd_skip

from lcd_server_harness import BUILD_DIR, TINY_SHAKESPEARE, ServerProcess, require_server

LCD_BIN = os.path.join(BUILD_DIR, "tools", "lcd")
MODEL = "tiny"

require_server()
if not os.path.exists(LCD_BIN):
    lcd_skip.skip(f"{LCD_BIN} not built", allow_module_level=True)
if not os.path.exists(os.path.join(TINY_SHAKESPEARE, "model.safetensors")):
    lcd_skip.skip("models/tiny-shakespeare not present", allow_module_level=True)


def _lcd(*args, timeout=120):
    return subprocess.run([LCD_BIN, *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def server():
    srv = ServerProcess({MODEL: TINY_SHAKESPEARE})
    try:
        srv.wait_serving()
        yield srv
    finally:
        srv.terminate()


def _has_client(res):
    if "unknown command" in res.stderr:
        lcd_skip.skip("lcd was built without the server (LCD_WITH_SERVER)")


def test_client_unary(server):
    res = _lcd("client", "--server", server.address, "--model", MODEL, "--prompt", "ROMEO:",
               "--max-new-tokens", "12", "--temperature", "0")
    _has_client(res)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip(), "no generated text"
    assert "finish_reason: FINISH_REASON_" in res.stderr
    assert "completion_tokens: " in res.stderr and "ttft_ms: " in res.stderr


def test_client_stream_matches_unary_greedy(server):
    args = ["--server", server.address, "--model", MODEL, "--prompt", "JULIET:", "--max-new-tokens", "10",
            "--temperature", "0", "--ignore-eos"]
    unary = _lcd("client", *args)
    _has_client(unary)
    stream = _lcd("client", *args, "--stream")
    assert unary.returncode == 0, unary.stderr
    assert stream.returncode == 0, stream.stderr
    assert stream.stdout.strip(), "no streamed text"
    # Greedy decoding is deterministic: streaming must deliver the same text.
    assert stream.stdout == unary.stdout
    assert "finish_reason: FINISH_REASON_LENGTH" in stream.stderr
    assert "completion_tokens: 10" in stream.stderr


def test_client_errors_carry_grpc_code(server):
    res = _lcd("client", "--server", server.address, "--model", "no-such-model", "--prompt", "x")
    _has_client(res)
    assert res.returncode == 1
    assert "NOT_FOUND" in res.stderr
    res = _lcd("client", "--server", server.address, "--model", MODEL, "--prompt", "x", "--temperature", "-3")
    assert res.returncode == 1
    assert "INVALID_ARGUMENT" in res.stderr
    res = _lcd("client", "--server", server.address, "--model", MODEL)
    assert res.returncode != 0 and "--prompt" in res.stderr


def test_bench_serve_json_is_consistent(server, tmp_path):
    out = tmp_path / "out.json"
    res = _lcd("bench-serve", "--server", server.address, "--model", MODEL, "--concurrency", "4",
               "--num-requests", "8", "--prompt-tokens", "16", "--output-tokens", "8", "--json", str(out),
               timeout=300)
    _has_client(res)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Output token throughput" in res.stdout and "TTFT" in res.stdout
    assert "8/8 done" in res.stderr
    r = json.loads(out.read_text())
    assert r["completed"] == 8 and r["failed"] == 0
    assert r["total_output_tokens"] == 64
    assert r["total_input_tokens"] == 8 * 16
    assert r["duration_s"] > 0
    assert r["request_throughput"] > 0 and r["output_throughput"] > 0
    assert r["output_throughput"] == pytest.approx(64 / r["duration_s"], rel=1e-9)
    assert r["request_throughput"] == pytest.approx(8 / r["duration_s"], rel=1e-9)
    for key in ("ttft_ms", "itl_ms", "tpot_ms", "e2e_ms"):
        s = r[key]
        assert 0 < s["median"] <= s["p90"] <= s["p99"], (key, s)
        assert s["mean"] > 0
    # A request's first token comes before its last; no request outlives the run.
    assert r["ttft_ms"]["p99"] <= r["e2e_ms"]["p99"]
    assert r["e2e_ms"]["p99"] <= r["duration_s"] * 1e3 * 1.001


def test_bench_serve_bad_args(server):
    base = ["bench-serve", "--server", server.address, "--model", MODEL]
    res = _lcd(*base, "--concurrency", "0")
    _has_client(res)
    assert res.returncode != 0 and "--concurrency" in res.stderr
    res = _lcd(*base, "--num-requests", "0")
    assert res.returncode != 0 and "--num-requests" in res.stderr
    res = _lcd(*base, "--prompt-tokens", "100000", "--output-tokens", "8")
    assert res.returncode != 0 and "context" in res.stderr
    res = _lcd("bench-serve", "--server", server.address, "--model", "no-such-model", "--num-requests", "1")
    assert res.returncode != 0 and "NOT_FOUND" in res.stderr


def test_bench_serve_reports_failed_requests(server, tmp_path):
    # A 1 ms per-request deadline cannot fit 64 tokens: every request fails
    # with DEADLINE_EXCEEDED, the tool says so and exits 1, the JSON counts it.
    out = tmp_path / "fail.json"
    res = _lcd("bench-serve", "--server", server.address, "--model", MODEL, "--concurrency", "2",
               "--num-requests", "4", "--prompt-tokens", "16", "--output-tokens", "64", "--timeout", "0.001",
               "--json", str(out))
    _has_client(res)
    assert res.returncode == 1
    assert "DEADLINE_EXCEEDED" in res.stderr
    r = json.loads(out.read_text())
    assert r["completed"] + r["failed"] == 4 and r["failed"] >= 1
    assert sum(r["failures"].values()) == r["failed"]
