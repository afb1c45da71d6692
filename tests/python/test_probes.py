"""The Kubernetes probes of deploy/k8s and of the Helm chart, asked of a real
lcd-server: the gRPC health service names are read from the YAML files (so
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
PROBES = ("startupProbe", "livenessProbe", "readinessProbe")


def container_probes(deployment):
    containers = deployment["spec"]["template"]["spec"]["containers"]
    server = [c for c in containers if c["name"] == "lcd-server"]
    assert len(server) == 1, "no lcd-server container"
    return {p: server[0][p] for p in PROBES}


def k8s_probes():
    with open(K8S_DEPLOYMENT) as f:
        return container_probes(yaml.safe_load(f))


def helm_probes():
    """The chart's probes as `helm template` renders them with the default
    values. Without a helm binary here, the probe lines of the template are
    rendered by substituting their `{{ .Values.a.b }}` references (the only
    template syntax those lines may use; anything else fails the test)."""
    with open(HELM_VALUES) as f:
        values = yaml.safe_load(f)
    with open(HELM_DEPLOYMENT) as f:
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
