"""A real Prometheus (Debian's /usr/bin/prometheus) scrapes lcd-server's
/metrics: its own parser must accept our text format (target "up" with no
scrape error), and its query API must show lcd_requests_total increasing
after Generate calls, plus our histograms and gauges as series.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

import pytest
import lcd_skip

sys.path.insert(0, os.path.dirname(__file__))
import lcd_server_harness as h  # noqa: E402

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
if not os.path.exists(PROMETHEUS):
    lcd_skip.skip("prometheus binary not installed", allow_module_level=True)
grpc = lcd_skip.importorskip("grpc")
h.require_server()
g, gg, _, _ = h.stubs()


def api(port, path, **params):
    url = f"http://127.0.0.1:{port}/api/v1/{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def wait_for(fn, timeout, what):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = fn()
            if last:
                return last
        except OSError as ex:  # Prometheus not listening yet.
            last = ex
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}; last: {last}")


def query_value(port, expr):
    res = api(port, "query", query=expr)["data"]["result"]
    return float(res[0]["value"][1]) if res else None


@pytest.fixture(scope="module")
def lcd_server(tmp_path_factory):
    model = h.write_random_model(str(tmp_path_factory.mktemp("model")))
    s = h.ServerProcess({"rand": model})
    try:
        s.wait_serving()
        yield s
    finally:
        assert s.terminate() == 0


@pytest.fixture(scope="module")
def prometheus(lcd_server):
    work = tempfile.mkdtemp(prefix="lcd_prom_")
    port = h.free_port()
    config = os.path.join(work, "prometheus.yml")
    with open(config, "w") as f:
        f.write(f"""global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: lcd
    static_configs:
      - targets: ["127.0.0.1:{lcd_server.metrics_port}"]
""")
    log = open(os.path.join(work, "prometheus.log"), "w")
    proc = subprocess.Popen([PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={work}/data",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    try:
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        shutil.rmtree(work, ignore_errors=True)


def test_prometheus_scrapes_and_counters_increase(lcd_server, prometheus):
    def target_up():
        targets = api(prometheus, "targets")["data"]["activeTargets"]
        return targets and targets[0]["health"] == "up" and targets[0]
    target = wait_for(target_up, 60, "scrape target up")
    assert target["lastError"] == ""

    with grpc.insecure_channel(lcd_server.address) as ch:
        stub = gg.GenerationServiceStub(ch)

        def generate(n):
            for _ in range(n):
                stub.Generate(g.GenerateRequest(model="rand", text="Prometheus", sampling=g.SamplingParams(
                    temperature=0, max_new_tokens=3)), timeout=30)

        generate(2)
        expr = 'sum(lcd_requests_total{model="rand",status="ok"})'
        first = wait_for(lambda: query_value(prometheus, expr), 30, "lcd_requests_total in Prometheus")
        assert first >= 2
        generate(3)
        wait_for(lambda: (query_value(prometheus, expr) or 0) >= first + 3, 30, "lcd_requests_total to increase")

    # The histogram and gauge families parse as series too.
    assert wait_for(lambda: query_value(prometheus, 'sum(lcd_batch_size_count{model="rand"})'), 30, "batch size")
    assert query_value(prometheus, 'sum(lcd_time_to_first_token_seconds_bucket{le="+Inf"})') >= 5
    assert query_value(prometheus, 'sum(lcd_generation_tokens_total)') >= 15
    assert query_value(prometheus, 'lcd_kv_cache_usage_ratio{model="rand"}') is not None
    assert query_value(prometheus, 'sum(lcd_model_load_seconds_count)') == 1
    # Still healthy after many scrapes.
    targets = api(prometheus, "targets")["data"]["activeTargets"]
    assert targets[0]["health"] == "up" and targets[0]["lastError"] == ""
