"""Hot swap: lcd-server follows the artifact store lcd-jobs publishes into.

Real processes on 127.0.0.1: lcd-jobs (SQLite store, worker processes) and
lcd-server serving the tiny model from its checkpoint with --artifact-root.
  * the product loop: a job publishes tiny/1, lcd-server switches to it by
    itself, and responses say which version produced them;
  * under load (8 client threads generating back to back), three more
    versions appear: 0 failed requests, each client's versions never go
    back, every new version serves;
  * a version with one flipped byte is refused (counted in
    lcd_model_versions_refused_total) and the old one keeps serving.
"""
import os
import shutil
import subprocess
import threading
import time

import pytest

import lcd_server_harness as h
import lcd_skip
from test_jobs_e2e import AUTH, JOBS_BIN, LCD_BIN, TOKEN, JobsProcess, spec, wait_state

grpc = lcd_skip.importorskip("grpc")
g, gg, m, mg = h.stubs()


def status(server, name="tiny", md=()):
    with grpc.insecure_channel(server.address) as ch:
        return mg.ModelServiceStub(ch).GetModelStatus(m.GetModelStatusRequest(name=name), metadata=md, timeout=10)


def wait_version(server, version, timeout=60, md=()):
    deadline = time.time() + timeout
    while time.time() < deadline:
        s = status(server, md=md)
        # The source path, not only the version string: the first load of a
        # plain checkpoint is also called "1".
        if s.state == m.MODEL_STATE_READY and s.version == str(version) and \
                s.source_path.endswith(os.path.join("tiny", str(version))):
            return s
        time.sleep(0.05)
    raise AssertionError(f"lcd-server did not switch to version {version}: {status(server, md=md)}\n"
                         f"{server.log_text()}")


def generate(stub, n=4):
    return stub.Generate(g.GenerateRequest(model="tiny", text="ROMEO:", sampling=g.SamplingParams(
        temperature=0.0, max_new_tokens=n, ignore_eos=True)), timeout=60)


def publish_copy(store, src_version, version, corrupt=False):
    """Publishes a copy of an existing version the way lcd-jobs does
    (a .partial directory renamed into place)."""
    src = os.path.join(store, "tiny", str(src_version))
    partial = os.path.join(store, "tiny", f"{version}.partial")
    shutil.copytree(src, partial)
    if corrupt:
        path = os.path.join(partial, "model.safetensors")
        with open(path, "r+b") as f:
            f.seek(os.path.getsize(path) // 2)
            b = f.read(1)
            f.seek(-1, 1)
            f.write(bytes([b[0] ^ 0x5A]))
    os.rename(partial, os.path.join(store, "tiny", str(version)))


@pytest.fixture
def root(tmp_path):
    if not (os.path.exists(JOBS_BIN) and os.path.exists(LCD_BIN)):
        lcd_skip.skip("lcd-jobs / lcd not built")
    os.makedirs(tmp_path / "data")
    (tmp_path / "token").write_text(TOKEN)
    return str(tmp_path)


def test_jobs_publish_and_server_switches_under_load(root):
    import lcd_server_harness
    jpb2, jgrpc = h.jobs_stubs()
    store = os.path.join(root, "artifacts")
    os.makedirs(store)
    jobs = JobsProcess(root)
    server = lcd_server_harness.ServerProcess(
        {"tiny": h.TINY_SHAKESPEARE},
        extra_args=["--artifact-root", store, "--artifact-rescan-seconds", "0.5", "--drain-timeout-seconds", "30"])
    try:
        server.wait_serving()
        ch = grpc.insecure_channel(server.address)
        stub = gg.GenerationServiceStub(ch)
        before = generate(stub)
        assert not status(server).source_path.startswith(store)

        # The product loop: a quantization job, then lcd-server follows.
        with grpc.insecure_channel(jobs.address) as jch:
            js = jgrpc.JobServiceStub(jch)
            job = js.SubmitJob(spec(jpb2), metadata=AUTH)
            done = wait_state(js, jpb2, job.id, [jpb2.JOB_STATE_SUCCEEDED, jpb2.JOB_STATE_FAILED], timeout=120)
            assert done.state == jpb2.JOB_STATE_SUCCEEDED, done
        s = wait_version(server, done.version)
        assert s.source_path == os.path.join(store, "tiny", str(done.version))
        assert s.quantization.method == "rtn" and s.quantization.bits == 4
        r = generate(stub)
        assert r.model_version == str(done.version)
        assert len(r.token_ids) == 4

        # Under load: three more versions while 8 clients generate.
        stop = threading.Event()
        errors, seen = [], [[] for _ in range(8)]

        def client(i):
            with grpc.insecure_channel(server.address) as c:
                st = gg.GenerationServiceStub(c)
                while not stop.is_set():
                    try:
                        seen[i].append(int(generate(st, 8).model_version))
                    except grpc.RpcError as e:
                        errors.append(f"{e.code()}: {e.details()}")
        threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        try:
            for v in range(done.version + 1, done.version + 4):
                time.sleep(1.0)
                publish_copy(store, done.version, v)
                wait_version(server, v)
            time.sleep(1.0)
        finally:
            stop.set()
            for t in threads:
                t.join()
        total = sum(len(s) for s in seen)
        print(f"hot swap under load: {total} requests over 3 swaps, {len(errors)} failed")
        assert not errors, errors[:5]
        for s in seen:
            assert s == sorted(s), "a client saw an older version after a newer one"
        assert {done.version + 3} <= set(sum(seen, [])), "the last version never served"
        # Metrics carry the version: every version that answered counted its requests under its
        # own label, and only the serving version still has an info series and engine gauges.
        text = server.metrics()
        per_version = {v: h.metric_value(text, "lcd_requests_total", {"model": "tiny", "version": str(v),
                                                                      "status": "ok"}) or 0
                       for v in range(done.version, done.version + 4)}
        served = {}
        for client in seen:
            for v in client:
                served[v] = served.get(v, 0) + 1
        for v, n in served.items():
            assert per_version.get(v, 0) >= n, (v, n, per_version)
        live = done.version + 3
        assert h.metric_value(text, "lcd_model_info", {"model": "tiny", "version": str(live)}) == 1
        for old in range(done.version, live):
            assert h.metric_value(text, "lcd_model_info", {"model": "tiny", "version": str(old)}) is None, old
            assert h.metric_value(text, "lcd_requests_running", {"model": "tiny", "version": str(old)}) is None
        print(f"requests_total by version: {per_version}")

        # A corrupted version is refused; the current one keeps serving.
        newest = done.version + 3
        publish_copy(store, newest, newest + 1, corrupt=True)
        deadline = time.time() + 30
        while 'lcd_model_versions_refused_total{model="tiny"} 1' not in server.metrics():
            assert time.time() < deadline, server.log_text()
            time.sleep(0.1)
        assert status(server).version == str(newest)
        assert generate(stub).model_version == str(newest)
        assert "refused" in server.log_text()
        ch.close()
    finally:
        assert server.terminate() == 0
        assert jobs.stop() == 0


def test_rollback_and_load_by_version(root):
    """ModelService over the artifact store: RollbackModel loads the newest version older than
    the serving one and pins the model (a newer published version is then not followed);
    LoadModel(artifact_version=N) loads and pins version N; LoadModel(follow_latest) loads the
    newest and follows the store again. Refusals: nothing older to roll back to, an unpublished
    version, a path together with a store selector, no admin token, and a swap whose two
    versions do not fit max_model_memory_bytes together (the serving one stays)."""
    store = os.path.join(root, "artifacts")
    os.makedirs(os.path.join(store, "tiny"))
    res = subprocess.run([LCD_BIN, "quantize", "--model", h.TINY_SHAKESPEARE, "--out", os.path.join(store, "tiny", "1"),
                          "--method", "rtn", "--bits", "4", "--group-size", "32"], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    publish_copy(store, 1, 2)
    publish_copy(store, 1, 3)
    token_file = os.path.join(root, "admin.token")
    with open(token_file, "w") as f:
        f.write("rollback-test-admin-token-0123456789")
    admin = (("authorization", "Bearer rollback-test-admin-token-0123456789"),)
    server = h.ServerProcess({"tiny": os.path.join(store, "tiny", "1")},
                             extra_args=["--artifact-root", store, "--artifact-rescan-seconds", "0.5",
                                         "--admin-token-file", token_file])
    C = grpc.StatusCode
    try:
        server.wait_serving()
        wait_version(server, 3, md=admin)  # Followed from version 1 to the newest.
        with grpc.insecure_channel(server.address) as ch:
            ms, stub = mg.ModelServiceStub(ch), gg.GenerationServiceStub(ch)
            s = ms.RollbackModel(m.RollbackModelRequest(name="tiny"), metadata=admin, timeout=60)
            assert s.state == m.MODEL_STATE_READY and s.version == "2", s
            assert generate(stub).model_version == "2"
            publish_copy(store, 1, 4)  # Pinned: not followed.
            time.sleep(2.0)
            assert status(server, md=admin).version == "2"
            s = ms.RollbackModel(m.RollbackModelRequest(name="tiny"), metadata=admin, timeout=60)
            assert s.version == "1"
            with pytest.raises(grpc.RpcError) as e:
                ms.RollbackModel(m.RollbackModelRequest(name="tiny"), metadata=admin, timeout=60)
            assert e.value.code() == C.FAILED_PRECONDITION and "older than 1" in e.value.details()
            s = ms.LoadModel(m.LoadModelRequest(name="tiny", artifact_version=3), metadata=admin, timeout=60)
            assert s.version == "3" and s.source_path.endswith(os.path.join("tiny", "3"))
            assert generate(stub).model_version == "3"
            for bad, code in [(m.LoadModelRequest(name="tiny", artifact_version=9), C.NOT_FOUND),
                              (m.LoadModelRequest(name="tiny", artifact_version=2, follow_latest=True),
                               C.INVALID_ARGUMENT),
                              (m.LoadModelRequest(name="tiny", path="/tmp", artifact_version=2), C.INVALID_ARGUMENT)]:
                with pytest.raises(grpc.RpcError) as e:
                    ms.LoadModel(bad, metadata=admin, timeout=60)
                assert e.value.code() == code, (bad, e.value.details())
            with pytest.raises(grpc.RpcError) as e:
                ms.RollbackModel(m.RollbackModelRequest(name="tiny"), timeout=60)
            assert e.value.code() == C.UNAUTHENTICATED
            s = ms.LoadModel(m.LoadModelRequest(name="tiny", follow_latest=True), metadata=admin, timeout=60)
            assert s.version == "4"
            publish_copy(store, 1, 5)  # Followed again.
            wait_version(server, 5, md=admin)
            assert generate(stub).model_version == "5"
            size = status(server, md=admin).memory_bytes
    finally:
        assert server.terminate() == 0
    # Room for one version but not two side by side: a swap is refused with the reason and the
    # serving version stays (the watcher's and ModelService's alike).
    server = h.ServerProcess({"tiny": os.path.join(store, "tiny", "5")},
                             extra_args=["--artifact-root", store, "--artifact-rescan-seconds", "0.5",
                                         "--admin-token-file", token_file,
                                         "--max-model-memory-bytes", str(size * 3 // 2)])
    try:
        server.wait_serving()
        with grpc.insecure_channel(server.address) as ch:
            ms, stub = mg.ModelServiceStub(ch), gg.GenerationServiceStub(ch)
            with pytest.raises(grpc.RpcError) as e:
                ms.RollbackModel(m.RollbackModelRequest(name="tiny"), metadata=admin, timeout=60)
            assert e.value.code() == C.RESOURCE_EXHAUSTED and "max_model_memory_bytes" in e.value.details()
            assert status(server, md=admin).version == "5" and generate(stub).model_version == "5"
    finally:
        assert server.terminate() == 0
