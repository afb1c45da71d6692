"""End-to-end tests of the real lcd-server binary through Python grpcio stubs
generated from proto/ (another implementation than our C++ server).

The model is a small random Llama written by the test (lcd_server_harness),
or models/tiny-shakespeare when LCD_E2E_MODEL points at it. Covered: unary,
streaming, token-id prompts, logprobs, stop ids, Tokenize/Detokenize,
cancellation mid-stream, deadline, concurrency, every bad-input status code,
queue-full backpressure, health, reflection, ModelService (status, hot swap,
unload), SIGTERM while requests run, and the batching proof.
"""
import os
import sys
import threading
import time

import pytest
import lcd_skip

sys.path.insert(0, os.path.dirname(__file__))
import lcd_server_harness as h  # noqa: E402

grpc = lcd_skip.importorskip("grpc")
h.require_server()
g, gg, m, mg = h.stubs()

MODEL = "rand"
MAX_MESSAGE = 65536


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    env_model = os.environ.get("LCD_E2E_MODEL")
    if env_model:
        return env_model
    return h.write_random_model(str(tmp_path_factory.mktemp("model")))


ADMIN_TOKEN = "e2e-admin-token-0123456789"
ADMIN = (("authorization", "Bearer " + ADMIN_TOKEN),)


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    token_file = tmp_path_factory.mktemp("secret") / "token"
    token_file.write_text(ADMIN_TOKEN)
    s = h.ServerProcess({MODEL: model_dir}, ["--max-message-bytes", str(MAX_MESSAGE), "--admin-token-file",
                                             str(token_file), "--model-root", os.path.dirname(model_dir)])
    try:
        s.wait_serving()
        yield s
    finally:
        rc = s.terminate()
        assert rc == 0, s.log_text()[-3000:]


@pytest.fixture(scope="module")
def stub(server):
    ch = grpc.insecure_channel(server.address)
    yield gg.GenerationServiceStub(ch)
    ch.close()


def greedy(n, **kw):
    return g.SamplingParams(temperature=0.0, max_new_tokens=n, ignore_eos=True, **kw)


def generate(stub, text, n, timeout=60, **kw):
    return stub.Generate(g.GenerateRequest(model=MODEL, text=text, sampling=greedy(n), **kw), timeout=timeout)


def test_unary(stub):
    r = generate(stub, "Hello world", 8, request_id="unary-1")
    assert r.finish_reason == g.FINISH_REASON_LENGTH
    assert len(r.token_ids) == 8
    assert r.usage.completion_tokens == 8
    assert r.usage.prompt_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + 8
    assert r.request_id == "unary-1"
    assert r.model_version == "load-1"
    ttft = r.timing.time_to_first_token.ToTimedelta().total_seconds()
    total = r.timing.total_time.ToTimedelta().total_seconds()
    assert 0 < ttft <= total
    detok = stub.Detokenize(g.DetokenizeRequest(model=MODEL, token_ids=r.token_ids))
    assert detok.text == r.text
    # Greedy is deterministic.
    assert generate(stub, "Hello world", 8).token_ids == r.token_ids


def test_stream_matches_unary(stub):
    unary = generate(stub, "The quick brown fox", 12)
    chunks = list(stub.GenerateStream(g.GenerateRequest(model=MODEL, text="The quick brown fox",
                                                        sampling=greedy(12), request_id="s-1"), timeout=60))
    assert len(chunks) >= 2
    assert all(c.finish_reason == g.FINISH_REASON_UNSPECIFIED for c in chunks[:-1])
    assert all(c.request_id == "s-1" for c in chunks)
    last = chunks[-1]
    assert last.finish_reason == g.FINISH_REASON_LENGTH
    assert last.usage.completion_tokens == 12
    assert last.timing.time_to_first_token.ToTimedelta().total_seconds() > 0
    assert [t for c in chunks for t in c.token_ids] == list(unary.token_ids)
    assert "".join(c.text for c in chunks) == unary.text


def test_token_id_prompt_and_tokenize(stub):
    tok = stub.Tokenize(g.TokenizeRequest(model=MODEL, text="Hello world", add_bos=True))
    assert len(tok.token_ids) == len(tok.tokens) > 0
    assert "".join(tok.tokens).endswith("Hello world")
    by_ids = stub.Generate(g.GenerateRequest(model=MODEL, token_ids=g.TokenIds(ids=tok.token_ids),
                                             sampling=greedy(6)), timeout=60)
    assert by_ids.token_ids == generate(stub, "Hello world", 6).token_ids


def test_logprobs_and_stop_token(stub):
    r = stub.Generate(g.GenerateRequest(model=MODEL, text="Once upon a time", sampling=greedy(6),
                                        num_logprobs=3), timeout=60)
    assert len(r.logprobs) == 6
    for lp, tid in zip(r.logprobs, r.token_ids):
        assert lp.token_id == tid
        assert len(lp.top) == 3
        assert lp.top[0].token_id == tid  # Greedy picks the most likely token.
        assert lp.logprob <= 0 and lp.top[0].logprob >= lp.top[1].logprob >= lp.top[2].logprob
    stop_id = r.token_ids[2]
    first = list(r.token_ids).index(stop_id)
    s = stub.Generate(g.GenerateRequest(model=MODEL, text="Once upon a time",
                                        sampling=greedy(6, stop_token_ids=[stop_id])), timeout=60)
    assert s.finish_reason == g.FINISH_REASON_STOP
    assert list(s.token_ids) == list(r.token_ids[:first + 1])


def test_model_info(stub):
    info = stub.GetModelInfo(g.GetModelInfoRequest(model=MODEL))
    assert info.name == MODEL and info.architecture == "llama"
    assert info.vocab_size > 0 and info.max_context > 0


def test_cancel_mid_stream(server, stub):
    before = h.metric_value(server.metrics(), "lcd_requests_total", {"status": "cancelled"}) or 0
    call = stub.GenerateStream(g.GenerateRequest(model=MODEL, text="Cancel me", sampling=greedy(200)), timeout=60)
    got = 0
    for chunk in call:
        got += len(chunk.token_ids)
        if got >= 2:
            call.cancel()
            break
    with pytest.raises(grpc.RpcError) as e:
        for _ in call:
            pass
    assert e.value.code() == grpc.StatusCode.CANCELLED
    deadline = time.time() + 10
    while time.time() < deadline:
        now = h.metric_value(server.metrics(), "lcd_requests_total", {"status": "cancelled"}) or 0
        if now > before:
            break
        time.sleep(0.1)
    assert now == before + 1
    assert generate(stub, "still alive", 2).finish_reason == g.FINISH_REASON_LENGTH


def test_deadline(server, stub):
    # A deadline that expires mid-generation: a fraction of what the whole
    # request takes on this machine, smaller on each try (a loaded machine
    # may still finish within the first one).
    t0 = time.time()
    generate(stub, "slow", 240)
    full = time.time() - t0
    before = h.metric_value(server.metrics(), "lcd_requests_total", {"status": "cancelled"}) or 0
    code = None
    for k in range(2, 8):
        try:
            stub.Generate(g.GenerateRequest(model=MODEL, text="slow", sampling=greedy(240)),
                          timeout=max(full / 2 ** k, 0.001))
        except grpc.RpcError as e:
            code = e.code()
            break
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    # The server saw the deadline and stopped the request.
    deadline = time.time() + 10
    while time.time() < deadline:
        cancelled = h.metric_value(server.metrics(), "lcd_requests_total", {"status": "cancelled"}) or 0
        if cancelled > before:
            break
        time.sleep(0.1)
    assert cancelled == before + 1
    assert generate(stub, "still alive", 2).finish_reason == g.FINISH_REASON_LENGTH


def test_concurrent_requests(stub):
    prompts = [f"Request number {i} says" for i in range(6)]
    results, errors = {}, []

    def run(p):
        try:
            results[p] = generate(stub, p, 10)
        except Exception as ex:  # noqa: BLE001
            errors.append(ex)

    threads = [threading.Thread(target=run, args=(p,)) for p in prompts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all(len(results[p].token_ids) == 10 for p in prompts)


def expect_code(fn, code, fragment=None):
    with pytest.raises(grpc.RpcError) as e:
        fn()
    assert e.value.code() == code, e.value.details()
    if fragment:
        assert fragment in e.value.details()


def test_bad_inputs(server, stub):
    GR = g.GenerateRequest
    INV = grpc.StatusCode.INVALID_ARGUMENT
    expect_code(lambda: stub.Generate(GR(model=MODEL, text=""), timeout=10), INV, "empty")
    expect_code(lambda: stub.Generate(GR(model=MODEL), timeout=10), INV, "prompt")
    expect_code(lambda: stub.Generate(GR(model="no-such-model", text="hi"), timeout=10),
                grpc.StatusCode.NOT_FOUND, "no-such-model")
    expect_code(lambda: stub.Generate(GR(model="", text="hi"), timeout=10), INV, "model")
    ctx = stub.GetModelInfo(g.GetModelInfoRequest(model=MODEL)).max_context
    long_ids = g.TokenIds(ids=[100] * (ctx + 10))
    expect_code(lambda: stub.Generate(GR(model=MODEL, token_ids=long_ids), timeout=10), INV, "context")
    expect_code(lambda: stub.Generate(GR(model=MODEL, text="hi", sampling=g.SamplingParams(max_new_tokens=100000)),
                                      timeout=10), INV, "context")
    expect_code(lambda: stub.Generate(GR(model=MODEL, token_ids=g.TokenIds(ids=[10 ** 9])), timeout=10), INV,
                "token id")
    for bad in (g.SamplingParams(temperature=-1), g.SamplingParams(temperature=float("nan")),
                g.SamplingParams(top_p=2.0), g.SamplingParams(top_k=-3), g.SamplingParams(min_p=7),
                g.SamplingParams(repetition_penalty=0), g.SamplingParams(max_new_tokens=0),
                g.SamplingParams(presence_penalty=1e9)):
        expect_code(lambda: stub.Generate(GR(model=MODEL, text="hi", sampling=bad), timeout=10), INV)
    expect_code(lambda: stub.Generate(GR(model=MODEL, text="hi", num_logprobs=50), timeout=10), INV, "num_logprobs")
    # Invalid UTF-8 through the bytes variant reaches the server's check.
    expect_code(lambda: stub.Generate(GR(model=MODEL, text_bytes=b"ok \xff\xfe"), timeout=10), INV, "UTF-8")
    # Through the string field, the protobuf runtime refuses to parse it; the
    # call fails and the daemon keeps serving.
    raw = server_raw_call(server)
    with pytest.raises(grpc.RpcError) as e:
        raw(b"\x0a" + bytes([len(MODEL)]) + MODEL.encode() + b"\x12\x03a\xff\xfe", timeout=10)
    assert e.value.code() != grpc.StatusCode.OK
    # Oversized message: refused by gRPC's receive limit.
    expect_code(lambda: stub.Generate(GR(model=MODEL, text="x" * (MAX_MESSAGE + 1000)), timeout=10),
                grpc.StatusCode.RESOURCE_EXHAUSTED)
    expect_code(lambda: stub.Tokenize(g.TokenizeRequest(model="nope", text="x"), timeout=10),
                grpc.StatusCode.NOT_FOUND)
    expect_code(lambda: stub.Detokenize(g.DetokenizeRequest(model=MODEL, token_ids=[-5]), timeout=10), INV)
    assert generate(stub, "still alive", 2).finish_reason == g.FINISH_REASON_LENGTH
    assert server.proc.poll() is None


def server_raw_call(server):
    ch = grpc.insecure_channel(server.address)
    return ch.unary_unary("/lcd.v1.GenerationService/Generate", request_serializer=lambda b: b,
                          response_deserializer=lambda b: b)


def test_health(server):
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    with grpc.insecure_channel(server.address) as ch:
        hs = health_pb2_grpc.HealthStub(ch)
        assert hs.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status == \
            health_pb2.HealthCheckResponse.SERVING
        assert hs.Check(health_pb2.HealthCheckRequest(service=MODEL), timeout=5).status == \
            health_pb2.HealthCheckResponse.SERVING
        expect_code(lambda: hs.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=5),
                    grpc.StatusCode.NOT_FOUND)
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/healthz", timeout=5) as r:
        assert r.status == 200


def test_reflection_lists_services(server):
    pb2, pb2_grpc = h.reflection_stubs()
    with grpc.insecure_channel(server.address) as ch:
        rs = pb2_grpc.ServerReflectionStub(ch)
        responses = list(rs.ServerReflectionInfo(iter([pb2.ServerReflectionRequest(list_services="")]), timeout=5))
        names = {s.name for s in responses[0].list_services_response.service}
        assert {"lcd.v1.GenerationService", "lcd.v1.ModelService", "grpc.health.v1.Health"} <= names
        desc = list(rs.ServerReflectionInfo(
            iter([pb2.ServerReflectionRequest(file_containing_symbol="lcd.v1.GenerationService")]), timeout=5))
        assert desc[0].file_descriptor_response.file_descriptor_proto


def test_model_service(server, stub, model_dir):
    with grpc.insecure_channel(server.address) as ch:
        ms = mg.ModelServiceStub(ch)
        missing = os.path.join(os.path.dirname(model_dir), "nonexistent")
        models = ms.ListModels(m.ListModelsRequest(), metadata=ADMIN, timeout=10).models
        assert [x.name for x in models] == [MODEL]
        st = ms.GetModelStatus(m.GetModelStatusRequest(name=MODEL), metadata=ADMIN, timeout=10)
        assert st.state == m.MODEL_STATE_READY
        assert st.source_path == model_dir
        assert st.memory_bytes > 0
        assert st.quantization.method == "none"
        expect_code(lambda: ms.GetModelStatus(m.GetModelStatusRequest(name="nope"), metadata=ADMIN, timeout=10),
                    grpc.StatusCode.NOT_FOUND)
        expect_code(lambda: ms.LoadModel(m.LoadModelRequest(name="y", path=missing), metadata=ADMIN, timeout=30),
                    grpc.StatusCode.NOT_FOUND)
        # A directory that exists but holds no model: the load fails and the
        # name stays listed as FAILED (a refused path leaves no entry).
        broken = os.path.join(os.path.dirname(model_dir), "broken")
        os.makedirs(broken, exist_ok=True)
        expect_code(lambda: ms.LoadModel(m.LoadModelRequest(name="x", path=broken), metadata=ADMIN, timeout=30),
                    grpc.StatusCode.NOT_FOUND)
        expect_code(lambda: ms.LoadModel(m.LoadModelRequest(name="bad name!", path=model_dir), metadata=ADMIN,
                                         timeout=30), grpc.StatusCode.INVALID_ARGUMENT)
        # Hot swap while a stream runs: the stream finishes on the old version.
        before = generate(stub, "swap", 5).token_ids
        stream = stub.GenerateStream(g.GenerateRequest(model=MODEL, text="during swap", sampling=greedy(40)),
                                     timeout=60)
        first = next(stream)
        swapped = ms.LoadModel(m.LoadModelRequest(name=MODEL, path=model_dir, version="v2"), metadata=ADMIN, timeout=60)
        assert swapped.state == m.MODEL_STATE_READY and swapped.version == "v2"
        rest = list(stream)
        assert len(first.token_ids) + sum(len(c.token_ids) for c in rest) == 40
        assert rest[-1].finish_reason == g.FINISH_REASON_LENGTH
        after = generate(stub, "swap", 5)
        assert after.model_version == "v2" and after.token_ids == before
        # A second name, then unload it.
        ms.LoadModel(m.LoadModelRequest(name="second", path=model_dir), metadata=ADMIN, timeout=60)
        assert stub.Generate(g.GenerateRequest(model="second", text="hi", sampling=greedy(2)),
                             timeout=30).usage.completion_tokens == 2
        un = ms.UnloadModel(m.UnloadModelRequest(name="second"), metadata=ADMIN, timeout=60)
        assert un.state == m.MODEL_STATE_UNLOADED
        expect_code(lambda: stub.Generate(g.GenerateRequest(model="second", text="hi"), timeout=10),
                    grpc.StatusCode.NOT_FOUND)
        expect_code(lambda: ms.UnloadModel(m.UnloadModelRequest(name="second"), metadata=ADMIN, timeout=10),
                    grpc.StatusCode.NOT_FOUND)
        # A failed LoadModel of an extra model does not take the server out of rotation.
        from grpc_health.v1 import health_pb2, health_pb2_grpc
        assert health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status \
            == health_pb2.HealthCheckResponse.SERVING
        assert ms.GetModelStatus(m.GetModelStatusRequest(name="x"), metadata=ADMIN,
                                 timeout=10).state == m.MODEL_STATE_FAILED


def test_batching_proof(server, stub):
    """8 concurrent greedy streams: the batch-size histogram shows iterations
    with more than one sequence, and each stream's output equals its
    single-request output (batching does not change results)."""
    prompts = [f"Prompt {i}: the {w} of the" for i, w in
               enumerate(["king", "sea", "night", "city", "war", "heart", "sun", "door"])]
    n = 24
    single = {p: list(generate(stub, p, n).token_ids) for p in prompts}
    text = server.metrics()
    count0 = h.metric_value(text, "lcd_batch_size_count", {"model": MODEL})
    le1_0 = h.metric_value(text, "lcd_batch_size_bucket", {"model": MODEL, "le": "1"})

    barrier = threading.Barrier(len(prompts))
    out, errors = {}, []

    def run(p):
        try:
            barrier.wait()
            ids = []
            for c in stub.GenerateStream(g.GenerateRequest(model=MODEL, text=p, sampling=greedy(n)), timeout=120):
                ids.extend(c.token_ids)
            out[p] = ids
        except Exception as ex:  # noqa: BLE001
            errors.append(ex)

    threads = [threading.Thread(target=run, args=(p,)) for p in prompts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    text = server.metrics()
    count1 = h.metric_value(text, "lcd_batch_size_count", {"model": MODEL})
    le1_1 = h.metric_value(text, "lcd_batch_size_bucket", {"model": MODEL, "le": "1"})
    multi = (count1 - le1_1) - (count0 - le1_0)  # Iterations with > 1 sequence.
    assert multi > 0, text
    le4 = h.metric_value(text, "lcd_batch_size_bucket", {"model": MODEL, "le": "4"})
    assert count1 - le4 > 0, "no iteration batched more than 4 of the 8 streams"
    for p in prompts:
        assert out[p] == single[p], p


def test_prompt_byte_cap(model_dir):
    """One prompt cap (1 MiB) for Generate (text and text_bytes) and Tokenize, below the default
    4 MiB message limit, so the answer names it; a prompt of exactly 1 MiB is tokenized (on the
    call queue) and the server keeps serving."""
    s = h.ServerProcess({MODEL: model_dir}, [])
    try:
        s.wait_serving()
        INV = grpc.StatusCode.INVALID_ARGUMENT
        over = "y" * (1024 * 1024 + 1)
        with grpc.insecure_channel(s.address, options=[("grpc.max_receive_message_length", 8 << 20),
                                                       ("grpc.max_send_message_length", 8 << 20)]) as ch:
            st = gg.GenerationServiceStub(ch)
            GR = g.GenerateRequest
            expect_code(lambda: st.Generate(GR(model=MODEL, text=over), timeout=60), INV,
                        "text: is 1048577 bytes; prompts are at most 1048576 bytes")
            expect_code(lambda: st.Generate(GR(model=MODEL, text_bytes=over.encode()), timeout=60), INV,
                        "prompts are at most 1048576")
            expect_code(lambda: st.Tokenize(g.TokenizeRequest(model=MODEL, text=over), timeout=60), INV,
                        "prompts are at most 1048576")
            assert len(st.Tokenize(g.TokenizeRequest(model=MODEL, text=over[:-1]), timeout=120).token_ids) > 0
            assert st.Generate(GR(model=MODEL, text="still", sampling=greedy(3)),
                               timeout=60).finish_reason == g.FINISH_REASON_LENGTH
    finally:
        assert s.terminate() == 0


def test_queue_full(model_dir):
    s = h.ServerProcess({MODEL: model_dir}, ["--max-num-seqs", "1", "--max-waiting", "1"])
    try:
        s.wait_serving()
        codes = []
        lock = threading.Lock()

        def run():
            with grpc.insecure_channel(s.address) as ch:
                st = gg.GenerationServiceStub(ch)
                try:
                    st.Generate(g.GenerateRequest(model=MODEL, text="queue", sampling=greedy(60)), timeout=60)
                    code = grpc.StatusCode.OK
                except grpc.RpcError as e:
                    code = e.code()
                with lock:
                    codes.append(code)

        threads = [threading.Thread(target=run) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes, codes
        assert grpc.StatusCode.OK in codes, codes
        assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
        assert h.metric_value(s.metrics(), "lcd_requests_total", {"status": "rejected"}) >= 1
        # It recovers: once the burst is over the queue is empty and requests are served again.
        with grpc.insecure_channel(s.address) as ch:
            st = gg.GenerationServiceStub(ch)
            for _ in range(3):
                assert st.Generate(g.GenerateRequest(model=MODEL, text="after", sampling=greedy(4)),
                                   timeout=60).finish_reason == g.FINISH_REASON_LENGTH
        print(f"overload: {codes.count(grpc.StatusCode.OK)} served, "
              f"{codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED)} refused of {len(codes)}; recovered")
    finally:
        assert s.terminate() == 0


def test_sigterm_drains_running_requests(model_dir):
    s = h.ServerProcess({MODEL: model_dir}, ["--drain-timeout-seconds", "30"])
    s.wait_serving()
    results, errors = [], []
    started = threading.Semaphore(0)

    def run(i):
        try:
            with grpc.insecure_channel(s.address) as ch:
                st = gg.GenerationServiceStub(ch)
                ids, last = [], None
                for c in st.GenerateStream(g.GenerateRequest(model=MODEL, text=f"drain {i}", sampling=greedy(60)),
                                           timeout=60):
                    if not ids:
                        started.release()
                    ids.extend(c.token_ids)
                    last = c
                results.append((len(ids), last.finish_reason))
        except Exception as ex:  # noqa: BLE001
            errors.append(ex)
            started.release()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for _ in threads:
        assert started.acquire(timeout=30)
    rc = s.terminate(timeout=60)
    for t in threads:
        t.join()
    assert rc == 0, s.log_text()[-3000:]
    assert not errors, errors
    assert results == [(60, g.FINISH_REASON_LENGTH)] * 4
    log = s.log_text()
    assert "received SIGTERM" in log and "lcd-server: stopped" in log
    assert log.count("request id=") >= 4


def test_bad_startup_exits_with_clear_message(tmp_path):
    s = h.ServerProcess({MODEL: str(tmp_path / "missing")})
    assert s.proc.wait(timeout=30) == 1
    assert "does not exist" in s.log_text()
    s.terminate()
    s = h.ServerProcess({}, ["--block-size", "0"])
    assert s.proc.wait(timeout=30) == 2
    assert "block_size" in s.log_text()
    s.terminate()
