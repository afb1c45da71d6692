"""The Kubernetes probes of deploy/k8s and of the Helm chart, asked of a real
lcd-server (and the chart's lcd-jobs probes of a real lcd-jobs), and the
Grafana dashboard's queries against the metrics both daemons really export: the gRPC health service names are read from the YAML files (so
the manifests and the server cannot drift apart again) and checked for the
meaning each probe needs:

- startup and liveness: the process is healthy. SERVING as soon as the gRPC
  server is up, with or without a model, and still SERVING after the last
  model is unloaded (a failing liveness probe restarts the pod).
- readiness: the pod can serve generation. NOT_SERVING (never NOT_FOUND)
  while no model is ready, SERVING once one is, NOT_SERVING again after the
  last one is unloaded.
"""
import os
import re
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import lcd_server_harness as h  # noqa: E402
import lcd_skip  # noqa: E402

yaml = lcd_skip.importorskip("yaml")
grpc = lcd_skip.importorskip("grpc")
health = lcd_skip.importorskip("grpc_health.v1.health_pb2")
health_grpc = lcd_skip.importorskip("grpc_health.v1.health_pb2_grpc")
h.require_server()
if not os.path.exists(os.path.join(h.TINY_SHAKESPEARE, "model.safetensors")):
    lcd_skip.skip("models/tiny-shakespeare not present", allow_module_level=True)
_, _, m, mg = h.stubs()

K8S_DEPLOYMENT = os.path.join(h.SOURCE_DIR, "deploy", "k8s", "30-deployment.yaml")
HELM_VALUES = os.path.join(h.SOURCE_DIR, "helm", "lcdserve", "values.yaml")
HELM_DEPLOYMENT = os.path.join(h.SOURCE_DIR, "helm", "lcdserve", "templates", "deployment.yaml")
HELM_JOBS_DEPLOYMENT = os.path.join(h.SOURCE_DIR, "helm", "lcdserve", "templates", "jobs-deployment.yaml")
DASHBOARD = os.path.join(h.SOURCE_DIR, "deploy", "grafana", "lcdserve-dashboard.json")
PROBES = ("startupProbe", "livenessProbe", "readinessProbe")


def container_probes(deployment):
    containers = deployment["spec"]["template"]["spec"]["containers"]
    server = [c for c in containers if c["name"] == "lcd-server"]
    assert len(server) == 1, "no lcd-server container"
    return {p: server[0][p] for p in PROBES}


def k8s_probes():
    with open(K8S_DEPLOYMENT) as f:
        return container_probes(yaml.safe_load(f))


def helm_probes(template=HELM_DEPLOYMENT):
    """The chart's probes as `helm template` renders them with the default
    values. Without a helm binary here, the probe lines of the template are
    rendered by substituting their `{{ .Values.a.b }}` references (the only
    template syntax those lines may use; anything else fails the test)."""
    with open(HELM_VALUES) as f:
        values = yaml.safe_load(f)
    with open(template) as f:
        lines = f.read().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "startupProbe:")
    indent = len(lines[start]) - len(lines[start].lstrip())
    block = []
    for line in lines[start:]:
        if line.strip() and len(line) - len(line.lstrip()) <= indent and line.strip().rstrip(":") not in PROBES:
            break
        block.append(line[indent:])

    def value(match):
        v = values
        for key in match.group(1).split("."):
            v = v[key]
        if match.group(2):  # | quote
            return '"' + str(v).replace('"', '\\"') + '"'
        return str(v)

    rendered = [re.sub(r"\{\{\s*\.Values\.([\w.]+)\s*(\|\s*quote\s*)?\}\}", value, line) for line in block]
    leftover = [line for line in rendered if "{{" in line]
    assert not leftover, f"probe lines use template syntax this test cannot render: {leftover}"
    probes = yaml.safe_load("\n".join(rendered))
    assert set(probes) == set(PROBES), probes
    return probes


def service_name(probe):
    assert "grpc" in probe, f"not a gRPC probe: {probe}"
    return probe["grpc"].get("service", "")  # Kubernetes' default is "".


def check(stub, service):
    """The probe's verdict as the kubelet sees it: the status, or the gRPC
    error code (NOT_FOUND fails the probe like NOT_SERVING does)."""
    try:
        return health.HealthCheckResponse.ServingStatus.Name(
            stub.Check(health.HealthCheckRequest(service=service), timeout=5).status)
    except grpc.RpcError as e:
        return e.code().name


def wait_for(fn, want, timeout=30.0):
    deadline = time.time() + timeout
    got = fn()
    while got != want and time.time() < deadline:
        time.sleep(0.1)
        got = fn()
    return got


ADMIN_TOKEN = "probe-test-admin-token-0123456789"
AUTH = (("authorization", "Bearer " + ADMIN_TOKEN),)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    token_file = tmp_path_factory.mktemp("secret") / "admin.token"
    token_file.write_text(ADMIN_TOKEN)
    # No model at start: loaded below through ModelService (administration
    # needs a model root and the admin token).
    s = h.ServerProcess({}, extra_args=["--model-root", os.path.dirname(h.TINY_SHAKESPEARE),
                                        "--admin-token-file", str(token_file)])
    try:
        yield s
    finally:
        assert s.terminate() == 0


@pytest.mark.parametrize("source", ["k8s", "helm"])
def test_probes_follow_process_and_model_state(server, source):
    probes = k8s_probes() if source == "k8s" else helm_probes()
    grpc_port = 50051  # Both files probe the container's gRPC port.
    for name, probe in probes.items():
        assert probe["grpc"]["port"] == grpc_port, f"{source} {name} probes port {probe['grpc']['port']}"
    startup, liveness, readiness = (service_name(probes[p]) for p in PROBES)

    with grpc.insecure_channel(server.address) as ch:
        hs = health_grpc.HealthStub(ch)
        ms = mg.ModelServiceStub(ch)
        for service in (startup, liveness):
            assert wait_for(lambda: check(hs, service), "SERVING") == "SERVING", \
                f"{source}: startup/liveness service '{service}' with no model loaded"
        assert check(hs, readiness) == "NOT_SERVING", f"{source}: readiness '{readiness}' with no model"

        assert ms.LoadModel(m.LoadModelRequest(name="probe", path=h.TINY_SHAKESPEARE),
                            metadata=AUTH, timeout=60).state == m.MODEL_STATE_READY
        assert wait_for(lambda: check(hs, readiness), "SERVING") == "SERVING", \
            f"{source}: readiness '{readiness}' with a model ready"
        for service in (startup, liveness):
            assert check(hs, service) == "SERVING"

        assert ms.UnloadModel(m.UnloadModelRequest(name="probe"), metadata=AUTH,
                              timeout=60).state == m.MODEL_STATE_UNLOADED
        assert wait_for(lambda: check(hs, readiness), "NOT_SERVING") == "NOT_SERVING", \
            f"{source}: readiness '{readiness}' after the last model was unloaded"
        for service in (startup, liveness):
            assert check(hs, service) == "SERVING", \
                f"{source}: liveness '{service}' after the last model was unloaded (the pod would restart)"


def test_helm_jobs_probes_follow_lcd_jobs(tmp_path):
    """The chart's lcd-jobs probes: the port is the chart's jobs gRPC port; startup and liveness
    ask "" and readiness lcd.v1.JobService, both SERVING on a running lcd-jobs (NOT_FOUND would
    keep the pod from ever becoming Ready)."""
    from test_jobs_e2e import JobsProcess
    with open(HELM_VALUES) as f:
        values = yaml.safe_load(f)
    probes = helm_probes(HELM_JOBS_DEPLOYMENT)
    for name, probe in probes.items():
        assert probe["grpc"]["port"] == values["jobs"]["grpcPort"], name
    startup, liveness, readiness = (service_name(probes[p]) for p in PROBES)
    assert readiness == "lcd.v1.JobService"
    root = str(tmp_path)
    os.makedirs(os.path.join(root, "data"))
    (tmp_path / "token").write_text("probe-test-jobs-token\n")
    d = JobsProcess(root)
    try:
        with grpc.insecure_channel(d.address) as ch:
            hs = health_grpc.HealthStub(ch)
            for service in (startup, liveness, readiness):
                assert wait_for(lambda: check(hs, service), "SERVING") == "SERVING", service
    finally:
        assert d.stop() == 0


def test_grafana_dashboard_queries_exported_metrics(server, tmp_path):
    """Every lcd_* metric the dashboard queries is one lcd-server or lcd-jobs exports (read from
    their /metrics), with the labels the query groups or filters by."""
    from test_jobs_e2e import JobsProcess
    import json
    with open(DASHBOARD) as f:
        dash = json.load(f)
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [v["query"] for v in dash["templating"]["list"] if v["type"] == "query"]
    assert len(exprs) >= 12
    root = str(tmp_path)
    os.makedirs(os.path.join(root, "data"))
    (tmp_path / "token").write_text("probe-test-jobs-token\n")
    d = JobsProcess(root)
    try:
        # A model serving and one request, so the per-model families have samples.
        with grpc.insecure_channel(server.address) as ch:
            ms = mg.ModelServiceStub(ch)
            ms.LoadModel(m.LoadModelRequest(name="dash", path=h.TINY_SHAKESPEARE), metadata=AUTH, timeout=60)
            g, gg, _, _ = h.stubs()
            gg.GenerationServiceStub(ch).Generate(g.GenerateRequest(
                model="dash", text="x", sampling=g.SamplingParams(max_new_tokens=2, ignore_eos=True)), timeout=60)
        # And one finished job, so the job families have samples too.
        pb2, pb2_grpc = h.jobs_stubs()
        with grpc.insecure_channel(d.address) as ch:
            stub = pb2_grpc.JobServiceStub(ch)
            job = stub.SubmitJob(pb2.SubmitJobRequest(source_model="tiny-shakespeare", target_model="tiny",
                                                      method="rtn", bits=4, group_size=32),
                                 metadata=(("authorization", "Bearer probe-test-jobs-token"),), timeout=30)
            deadline = time.time() + 120
            while stub.GetJob(pb2.GetJobRequest(id=job.id)).state != pb2.JOB_STATE_SUCCEEDED:
                assert time.time() < deadline, d.log_text()
                time.sleep(0.1)
        exported = server.metrics() + d.metrics()
    finally:
        assert d.stop() == 0
    types = dict(re.findall(r"^# TYPE (lcd_\w+) (\w+)$", exported, re.M))
    for expr in exprs:
        for name in re.findall(r"\b(lcd_[a-z_]+)", expr):
            base = re.sub(r"_(bucket|count|sum)$", "", name)
            assert base in types, f"{expr}: {name} is not exported"
            if name != base:
                assert types[base] == "histogram", name
            samples = [l for l in exported.splitlines() if l.startswith(name + "{")]
            for label in re.findall(r"\b(model|version|status|state|method|bits|group_size|le)\b", expr):
                assert any(f'{label}="' in l for l in samples), f"{expr}: no {name} sample has label {label}"
