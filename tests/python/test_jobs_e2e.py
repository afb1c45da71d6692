"""lcd-jobs end to end: the real daemon on 127.0.0.1, a real SQLite file, real
worker processes (`lcd quantize` on the tiny model), driven through Python
grpcio and the `lcd jobs` CLI.

Covers: refused submits (no/bad token, paths outside the roots, unknown
method, impossible bits/group size) store nothing; an idempotent submit;
watch to SUCCEEDED with progress; the published artifact; the CLI's
submit --watch and list; the metrics; cancel mid-job; kill -9 of lcd-jobs
mid-job and a restart that resumes the job; a clean SIGTERM; TLS; a full disk
mid-write (FAILED with the write error, no version left). No `.partial`
directory (or unverified version) is ever left where lcd-server looks.
"""
import os
import shutil
import signal
import stat
import subprocess
import tempfile
import time

import pytest

import lcd_server_harness as h

JOBS_BIN = os.path.join(h.BUILD_DIR, "server", "lcd-jobs")
LCD_BIN = os.path.join(h.BUILD_DIR, "tools", "lcd")
TOKEN = "s3cret-token-for-the-e2e-test"


class JobsProcess:
    def __init__(self, root, worker=None, extra=(), root_cert=None):
        self.root_cert = root_cert  # PEM of the CA when the daemon serves TLS.
        self.grpc_port = h.free_port()
        self.metrics_port = h.free_port()
        self.root = root
        args = [JOBS_BIN, "--grpc-port", str(self.grpc_port), "--metrics-port", str(self.metrics_port),
                "--store", os.path.join(root, "jobs.db"), "--artifact-root", os.path.join(root, "artifacts"),
                "--model-roots", os.path.join(h.SOURCE_DIR, "models"), "--data-roots", os.path.join(root, "data"),
                "--token-file", os.path.join(root, "token"), "--retry-backoff-seconds", "0.1",
                "--worker-threads", "1", *extra]
        if worker:
            args += ["--worker-binary", worker]
        self.log = open(os.path.join(root, f"lcd-jobs-{self.grpc_port}.log"), "w")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        self.address = f"127.0.0.1:{self.grpc_port}"
        self.wait_serving()

    def wait_serving(self, timeout=30):
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc
        deadline = time.time() + timeout
        with self.channel() as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            while time.time() < deadline:
                assert self.proc.poll() is None, f"lcd-jobs exited: {self.log_text()}"
                try:
                    r = stub.Check(health_pb2.HealthCheckRequest(service="lcd.v1.JobService"), timeout=1)
                    if r.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.05)
        raise AssertionError(f"lcd-jobs not serving: {self.log_text()}")

    def channel(self):
        import grpc
        if self.root_cert is None:
            return grpc.insecure_channel(self.address)
        return grpc.secure_channel(self.address, grpc.ssl_channel_credentials(root_certificates=self.root_cert))

    def log_text(self):
        self.log.flush()
        with open(self.log.name) as f:
            return f.read()

    def metrics(self):
        import urllib.request
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            return r.read().decode()

    def stop(self, sig=signal.SIGTERM, timeout=20):
        self.proc.send_signal(sig)
        rc = self.proc.wait(timeout=timeout)
        self.log.close()
        return rc


@pytest.fixture
def root():
    if not (os.path.exists(JOBS_BIN) and os.path.exists(LCD_BIN)):
        import lcd_skip
        lcd_skip.skip("lcd-jobs / lcd not built")
    d = tempfile.mkdtemp(prefix="lcd_jobs_e2e_")
    os.makedirs(os.path.join(d, "data"))
    with open(os.path.join(d, "token"), "w") as f:
        f.write(TOKEN + "\n")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def slow_worker(root, seconds):
    """A worker that reports progress, sleeps, then runs the real quantizer."""
    path = os.path.join(root, f"slow_worker_{seconds}.sh")
    with open(path, "w") as f:
        f.write("#!/bin/sh\n"
                f"i=0; while [ $i -lt {int(seconds * 10)} ]; do\n"
                "  echo '{\"phase\": \"warmup\", \"progress\": 0.01}' >&3 || exit 1\n"
                "  sleep 0.1; i=$((i+1)); done\n"
                f"exec {LCD_BIN} \"$@\"\n")
    os.chmod(path, stat.S_IRWXU)
    return path


def spec(pb2, **kw):
    base = dict(source_model="tiny-shakespeare", target_model="tiny", method="rtn", bits=4, group_size=32)
    base.update(kw)
    return pb2.SubmitJobRequest(**base)


AUTH = (("authorization", f"Bearer {TOKEN}"),)


def no_partials(root):
    for dirpath, dirs, _ in os.walk(os.path.join(root, "artifacts")):
        for d in dirs:
            assert not d.endswith(".partial"), os.path.join(dirpath, d)


def wait_state(stub, pb2, job_id, states, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        j = stub.GetJob(pb2.GetJobRequest(id=job_id))
        if j.state in states:
            return j
        time.sleep(0.05)
    raise AssertionError(f"{job_id} still {pb2.JobState.Name(j.state)}")


def test_refused_submits_store_nothing(root):
    import grpc
    pb2, pb2_grpc = h.jobs_stubs()
    d = JobsProcess(root)
    try:
        with grpc.insecure_channel(d.address) as ch:
            stub = pb2_grpc.JobServiceStub(ch)
            cases = [
                (spec(pb2), (), grpc.StatusCode.UNAUTHENTICATED),
                (spec(pb2), (("authorization", "Bearer wrong"),), grpc.StatusCode.UNAUTHENTICATED),
                (spec(pb2), (("authorization", TOKEN),), grpc.StatusCode.UNAUTHENTICATED),
                (spec(pb2, source_model="../../etc"), AUTH, grpc.StatusCode.INVALID_ARGUMENT),
                (spec(pb2, source_model="/etc"), AUTH, grpc.StatusCode.PERMISSION_DENIED),
                (spec(pb2, source_model="no-such-model"), AUTH, grpc.StatusCode.NOT_FOUND),
                (spec(pb2, calibration_file="/etc/passwd"), AUTH, grpc.StatusCode.PERMISSION_DENIED),
                (spec(pb2, method="magic"), AUTH, grpc.StatusCode.INVALID_ARGUMENT),
                (spec(pb2, bits=7), AUTH, grpc.StatusCode.INVALID_ARGUMENT),
                (spec(pb2, group_size=3), AUTH, grpc.StatusCode.INVALID_ARGUMENT),
                (spec(pb2, method="gptq"), AUTH, grpc.StatusCode.INVALID_ARGUMENT),  # needs a calibration_file
                (spec(pb2, target_model="../escape"), AUTH, grpc.StatusCode.INVALID_ARGUMENT),
                (spec(pb2, target_model="x" * 300), AUTH, grpc.StatusCode.INVALID_ARGUMENT),
                (spec(pb2, budget_seconds=-1), AUTH, grpc.StatusCode.INVALID_ARGUMENT),
                (spec(pb2, idempotency_key="\x01bad"), AUTH, grpc.StatusCode.INVALID_ARGUMENT),
            ]
            for req, md, code in cases:
                with pytest.raises(grpc.RpcError) as e:
                    stub.SubmitJob(req, metadata=md)
                assert e.value.code() == code, (req, e.value.code(), e.value.details())
                assert e.value.details(), "an error must say why"
            assert len(stub.ListJobs(pb2.ListJobsRequest()).jobs) == 0
            with pytest.raises(grpc.RpcError) as e:
                stub.GetJob(pb2.GetJobRequest(id="job-99"))
            assert e.value.code() == grpc.StatusCode.NOT_FOUND
            with pytest.raises(grpc.RpcError) as e:
                stub.CancelJob(pb2.CancelJobRequest(id="job-1"))
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        assert d.stop() == 0


def test_submit_watch_publish_cli_and_metrics(root):
    import grpc
    pb2, pb2_grpc = h.jobs_stubs()
    d = JobsProcess(root)
    try:
        with grpc.insecure_channel(d.address) as ch:
            stub = pb2_grpc.JobServiceStub(ch)
            job = stub.SubmitJob(spec(pb2, idempotency_key="k1"), metadata=AUTH)
            again = stub.SubmitJob(spec(pb2, idempotency_key="k1"), metadata=AUTH)
            assert again.id == job.id, "a retried submit made a second job"
            with pytest.raises(grpc.RpcError) as e:
                stub.SubmitJob(spec(pb2, idempotency_key="k1", bits=3), metadata=AUTH)
            assert e.value.code() == grpc.StatusCode.ALREADY_EXISTS
            events = list(stub.WatchJob(pb2.WatchJobRequest(id=job.id), timeout=120))
            assert [e.seq for e in events] == list(range(1, len(events) + 1))
            assert events[-1].state == pb2.JOB_STATE_SUCCEEDED, events[-1]
            assert any(e.phase == "quantize" for e in events)
            # Resume a watch from the middle: only the rest comes.
            tail = list(stub.WatchJob(pb2.WatchJobRequest(id=job.id, after_seq=events[2].seq), timeout=30))
            assert [e.seq for e in tail] == [e.seq for e in events[3:]]
            done = stub.GetJob(pb2.GetJobRequest(id=job.id))
            assert done.version == 1 and done.progress == 1.0
            assert os.path.exists(os.path.join(root, "artifacts", "tiny", "1", "manifest.json"))

        env = {**os.environ, "LCD_JOBS_TOKEN": TOKEN}
        r = subprocess.run([LCD_BIN, "jobs", "submit", "--server", d.address, "--source", "tiny-shakespeare",
                            "--target", "tiny", "--method", "kmeans", "--bits", "3", "--group-size", "64",
                            "--watch"], env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert "SUCCEEDED" in r.stdout
        r = subprocess.run([LCD_BIN, "jobs", "list", "--server", d.address], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode == 0 and r.stdout.count("SUCCEEDED") == 2, r.stdout
        r = subprocess.run([LCD_BIN, "jobs", "cancel", "job-1", "--server", d.address], capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == 1 and "UNAUTHENTICATED" in r.stderr, r.stderr
        assert sorted(os.listdir(os.path.join(root, "artifacts", "tiny"))) == ["1", "2"]
        m = d.metrics()
        assert 'lcd_jobs{state="SUCCEEDED"} 2' in m, m
        assert "lcd_job_duration_seconds_count" in m
        no_partials(root)
    finally:
        assert d.stop() == 0


def test_cancel_mid_job(root):
    import grpc
    pb2, pb2_grpc = h.jobs_stubs()
    d = JobsProcess(root, worker=slow_worker(root, 30))
    try:
        with grpc.insecure_channel(d.address) as ch:
            stub = pb2_grpc.JobServiceStub(ch)
            job = stub.SubmitJob(spec(pb2), metadata=AUTH)
            wait_state(stub, pb2, job.id, [pb2.JOB_STATE_RUNNING])
            t0 = time.time()
            stub.CancelJob(pb2.CancelJobRequest(id=job.id), metadata=AUTH)
            j = wait_state(stub, pb2, job.id, [pb2.JOB_STATE_CANCELLED, pb2.JOB_STATE_FAILED,
                                               pb2.JOB_STATE_SUCCEEDED], timeout=20)
            assert j.state == pb2.JOB_STATE_CANCELLED, j
            assert time.time() - t0 < 10
            with pytest.raises(grpc.RpcError) as e:
                stub.CancelJob(pb2.CancelJobRequest(id=job.id), metadata=AUTH)
            assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        no_partials(root)
        assert not os.listdir(os.path.join(root, "artifacts", "tiny"))
    finally:
        assert d.stop() == 0


def test_kill9_of_lcd_jobs_mid_job_then_restart_resumes(root):
    import grpc
    pb2, pb2_grpc = h.jobs_stubs()
    worker = slow_worker(root, 2)
    d = JobsProcess(root, worker=worker)
    with grpc.insecure_channel(d.address) as ch:
        stub = pb2_grpc.JobServiceStub(ch)
        job = stub.SubmitJob(spec(pb2), metadata=AUTH)
        wait_state(stub, pb2, job.id, [pb2.JOB_STATE_RUNNING])
    d.proc.kill()
    d.proc.wait()
    d.log.close()
    # The orphaned worker dies at its next progress write (SIGPIPE).
    d2 = JobsProcess(root, worker=worker)
    try:
        with grpc.insecure_channel(d2.address) as ch:
            stub = pb2_grpc.JobServiceStub(ch)
            j = wait_state(stub, pb2, job.id, [pb2.JOB_STATE_SUCCEEDED, pb2.JOB_STATE_FAILED], timeout=90)
            assert j.state == pb2.JOB_STATE_SUCCEEDED, j
            assert j.attempts == 2
            events = list(stub.WatchJob(pb2.WatchJobRequest(id=job.id), timeout=30))
            assert any("lcd-jobs stopped during attempt 1" in e.message for e in events)
        time.sleep(0.5)
        no_partials(root)
        assert os.listdir(os.path.join(root, "artifacts", "tiny")) == [str(j.version)]
    finally:
        assert d2.stop() == 0


def test_tls(root, tmp_path):
    """lcd-jobs with --tls-cert-file/--tls-key-file: a job submitted over TLS (with the token)
    succeeds; a plaintext client is refused at the transport; half a TLS configuration is a
    configuration error (exit 2, naming the missing setting)."""
    import grpc
    pb2, pb2_grpc = h.jobs_stubs()
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    d = JobsProcess(root, extra=["--tls-cert-file", str(cert), "--tls-key-file", str(key)],
                    root_cert=cert.read_bytes())
    try:
        with d.channel() as ch:
            stub = pb2_grpc.JobServiceStub(ch)
            job = stub.SubmitJob(spec(pb2), metadata=AUTH, timeout=30)
            assert wait_state(stub, pb2, job.id, {pb2.JOB_STATE_SUCCEEDED, pb2.JOB_STATE_FAILED}).state == \
                pb2.JOB_STATE_SUCCEEDED
        with grpc.insecure_channel(d.address) as ch:
            with pytest.raises(grpc.RpcError) as e:
                pb2_grpc.JobServiceStub(ch).ListJobs(pb2.ListJobsRequest(), timeout=5)
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        assert d.stop() == 0
    args = [JOBS_BIN, "--grpc-port", str(h.free_port()), "--metrics-port", str(h.free_port()),
            "--store", os.path.join(root, "other.db"), "--artifact-root", os.path.join(root, "artifacts"),
            "--model-roots", os.path.join(h.SOURCE_DIR, "models"), "--token-file", os.path.join(root, "token"),
            "--tls-cert-file", str(cert)]
    r = subprocess.run(args, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "tls_key_file" in r.stdout + r.stderr


def test_full_disk_mid_write_fails_the_job_and_leaves_no_version(root):
    """A worker whose artifact write fails partway (a full disk; here the file-size limit
    RLIMIT_FSIZE of 64 KiB with SIGXFSZ ignored, so write() fails with EFBIG as it fails with
    ENOSPC) is retried, then FAILED with the write error as its reason; no version and no
    partial directory is left, and the daemon goes on serving: with room again, the next job
    publishes (under the next unused version number: every attempt took one)."""
    import grpc
    pb2, pb2_grpc = h.jobs_stubs()
    full = os.path.join(root, "full_disk_worker.sh")
    with open(full, "w") as f:
        f.write("#!/bin/sh\ntrap '' XFSZ\nulimit -f 128\n" f"exec {LCD_BIN} \"$@\"\n")
    os.chmod(full, stat.S_IRWXU)
    d = JobsProcess(root, worker=full, extra=["--max-attempts", "2"])
    try:
        with d.channel() as ch:
            stub = pb2_grpc.JobServiceStub(ch)
            job = stub.SubmitJob(spec(pb2), metadata=AUTH, timeout=30)
            j = wait_state(stub, pb2, job.id, {pb2.JOB_STATE_SUCCEEDED, pb2.JOB_STATE_FAILED}, timeout=120)
            assert j.state == pb2.JOB_STATE_FAILED, j
            assert j.attempts == 2
            assert "File too large" in j.reason, j.reason
            assert not os.path.exists(os.path.join(root, "artifacts", "tiny")) or \
                os.listdir(os.path.join(root, "artifacts", "tiny")) == [], os.listdir(os.path.join(root, "artifacts"))
            no_partials(root)
            print(f"full disk: {job.id} FAILED after {j.attempts} attempts: {j.reason[:160]}")
    finally:
        assert d.stop() == 0
    # Room again (the real worker): the daemon and its store carry on.
    d = JobsProcess(root)
    try:
        with d.channel() as ch:
            stub = pb2_grpc.JobServiceStub(ch)
            job = stub.SubmitJob(spec(pb2), metadata=AUTH, timeout=30)
            j = wait_state(stub, pb2, job.id, {pb2.JOB_STATE_SUCCEEDED, pb2.JOB_STATE_FAILED}, timeout=120)
            assert j.state == pb2.JOB_STATE_SUCCEEDED, j
            assert os.listdir(os.path.join(root, "artifacts", "tiny")) == [str(j.version)]
    finally:
        assert d.stop() == 0
