"""Shared helpers for the lcd-server end-to-end tests (test_server_*.py).

- stubs(): Python gRPC stubs generated from proto/ with grpc_tools.protoc into
  a temporary directory (nothing generated is checked in).
- write_random_model(dir): a tiny random Llama checkpoint (numpy +
  safetensors, no torch) using the GPT-2 tokenizer from shared/data.
- ServerProcess: starts the real lcd-server binary on 127.0.0.1 with free
  ports and waits until its health service reports it ready.
"""
import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np
import lcd_skip

SOURCE_DIR = os.environ.get("LCD_SOURCE_DIR", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
BUILD_DIR = os.environ.get("LCD_BUILD_DIR", os.path.join(SOURCE_DIR, "build"))
SERVER_BIN = os.path.join(BUILD_DIR, "server", "lcd-server")
GPT2_TOKENIZER = os.path.join(SOURCE_DIR, "..", "shared", "data", "tokenizers", "gpt2", "tokenizer.json")
TINY_SHAKESPEARE = os.path.join(SOURCE_DIR, "models", "tiny-shakespeare")

# The grpc.health.v1 name that is SERVING once a model is ready to serve.
READINESS_SERVICE = "lcd.v1.GenerationService"

_STUBS = None


def stubs():
    """Returns (generate_pb2, generate_pb2_grpc, model_pb2, model_pb2_grpc)."""
    global _STUBS
    if _STUBS is not None:
        return _STUBS
    from grpc_tools import protoc
    import grpc_tools
    out = tempfile.mkdtemp(prefix="lcd_stubs_")
    proto_dir = os.path.join(SOURCE_DIR, "proto")
    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    for name in ("generate", "model", "jobs"):
        rc = protoc.main(["grpc_tools.protoc", f"-I{proto_dir}", f"-I{well_known}", f"--python_out={out}",
                          f"--grpc_python_out={out}", os.path.join(proto_dir, "lcd", "v1", f"{name}.proto")])
        assert rc == 0, f"protoc failed for {name}.proto"
    for pkg in ("lcd", os.path.join("lcd", "v1")):
        open(os.path.join(out, pkg, "__init__.py"), "a").close()
    sys.path.insert(0, out)
    from lcd.v1 import generate_pb2, generate_pb2_grpc, model_pb2, model_pb2_grpc
    _STUBS = (generate_pb2, generate_pb2_grpc, model_pb2, model_pb2_grpc)
    return _STUBS


def jobs_stubs():
    """Returns (jobs_pb2, jobs_pb2_grpc); generated with the others."""
    stubs()
    from lcd.v1 import jobs_pb2, jobs_pb2_grpc
    return jobs_pb2, jobs_pb2_grpc


def require_server():
    if not os.path.exists(SERVER_BIN):
        lcd_skip.skip(f"{SERVER_BIN} not built", allow_module_level=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_random_model(out_dir, seed=0):
    """A 2-layer Llama (GQA, untied lm_head) over the GPT-2 vocabulary with
    weights spread wide enough that greedy argmax has clear margins."""
    from safetensors.numpy import save_file
    if not os.path.exists(GPT2_TOKENIZER):
        lcd_skip.skip("GPT-2 tokenizer not in shared/data")
    os.makedirs(out_dir, exist_ok=True)
    vocab, hidden, inter, layers, heads, kv_heads = 50257, 64, 128, 2, 4, 2
    head_dim = hidden // heads
    rng = np.random.default_rng(seed)

    def mat(rows, cols, scale=None):
        scale = scale if scale is not None else 1.0 / np.sqrt(cols)
        return (rng.standard_normal((rows, cols)) * scale).astype(np.float32)

    t = {"model.embed_tokens.weight": mat(vocab, hidden, 1.0),
         "lm_head.weight": mat(vocab, hidden, 0.5),
         "model.norm.weight": (1.0 + 0.1 * rng.standard_normal(hidden)).astype(np.float32)}
    for i in range(layers):
        p = f"model.layers.{i}."
        t[p + "self_attn.q_proj.weight"] = mat(heads * head_dim, hidden)
        t[p + "self_attn.k_proj.weight"] = mat(kv_heads * head_dim, hidden)
        t[p + "self_attn.v_proj.weight"] = mat(kv_heads * head_dim, hidden)
        t[p + "self_attn.o_proj.weight"] = mat(hidden, heads * head_dim)
        t[p + "mlp.gate_proj.weight"] = mat(inter, hidden)
        t[p + "mlp.up_proj.weight"] = mat(inter, hidden)
        t[p + "mlp.down_proj.weight"] = mat(hidden, inter)
        t[p + "input_layernorm.weight"] = (1.0 + 0.1 * rng.standard_normal(hidden)).astype(np.float32)
        t[p + "post_attention_layernorm.weight"] = (1.0 + 0.1 * rng.standard_normal(hidden)).astype(np.float32)
    save_file(t, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": vocab,
              "hidden_size": hidden, "intermediate_size": inter, "num_hidden_layers": layers,
              "num_attention_heads": heads, "num_key_value_heads": kv_heads, "max_position_embeddings": 256,
              "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": False,
              "bos_token_id": 50256, "eos_token_id": 50256, "torch_dtype": "float32"}
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f)
    shutil.copy(GPT2_TOKENIZER, os.path.join(out_dir, "tokenizer.json"))
    return out_dir


class ServerProcess:
    """The real lcd-server on 127.0.0.1 with free gRPC and metrics ports."""

    def __init__(self, models, extra_args=(), env=None, log_path=None, root_cert=None):
        require_server()
        self.root_cert = root_cert  # PEM bytes: the server speaks TLS.
        self.grpc_port = free_port()
        self.metrics_port = free_port()
        args = [SERVER_BIN, "--grpc-address", "127.0.0.1", "--grpc-port", str(self.grpc_port),
                "--metrics-address", "127.0.0.1", "--metrics-port", str(self.metrics_port),
                "--threads", "1", "--kv-cache-bytes", "16MiB"]
        for name, path in models.items():
            args += ["--model", f"{name}={path}"]
        args += list(extra_args)
        self.log_path = log_path or tempfile.mktemp(prefix="lcd_server_", suffix=".log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})})
        self.address = f"127.0.0.1:{self.grpc_port}"

    def log_text(self):
        if not self.log.closed:
            self.log.flush()
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def channel(self):
        import grpc
        if self.root_cert is None:
            return grpc.insecure_channel(self.address)
        return grpc.secure_channel(self.address, grpc.ssl_channel_credentials(root_certificates=self.root_cert))

    def wait_serving(self, timeout=60.0):
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc
        deadline = time.time() + timeout
        with self.channel() as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            while time.time() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"lcd-server exited with {self.proc.returncode}:\n{self.log_text()}")
                try:
                    # Readiness (server/include/lcd/server/health.h): a model is ready.
                    r = stub.Check(health_pb2.HealthCheckRequest(service=READINESS_SERVICE), timeout=1.0)
                    if r.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.1)
        raise RuntimeError(f"lcd-server not SERVING after {timeout}s:\n{self.log_text()}")

    def metrics(self):
        import urllib.request
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            return r.read().decode()

    def terminate(self, timeout=30.0):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


def metric_value(text, name, labels=None):
    """Sum of the samples of `name` whose labels include `labels`."""
    total, found = 0.0, False
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, value = line.rsplit(" ", 1)
        metric = head.split("{", 1)[0]
        if metric != name:
            continue
        lbl = {}
        if "{" in head:
            for part in head[head.index("{") + 1:-1].split(","):
                k, v = part.split("=", 1)
                lbl[k] = v.strip('"')
        if all(lbl.get(k) == v for k, v in (labels or {}).items()):
            total += float(value)
            found = True
    return total if found else None


# The subset of grpc/reflection/v1alpha/reflection.proto needed to list
# services (field numbers as upstream), so no grpcio-reflection install is
# needed.
_REFLECTION_PROTO = """
syntax = "proto3";
package grpc.reflection.v1alpha;
service ServerReflection {
  rpc ServerReflectionInfo(stream ServerReflectionRequest) returns (stream ServerReflectionResponse);
}
message ServerReflectionRequest {
  string host = 1;
  oneof message_request {
    string file_by_filename = 3;
    string file_containing_symbol = 4;
    string list_services = 7;
  }
}
message ServerReflectionResponse {
  string valid_host = 1;
  ServerReflectionRequest original_request = 2;
  oneof message_response {
    FileDescriptorResponse file_descriptor_response = 4;
    ListServiceResponse list_services_response = 6;
    ErrorResponse error_response = 7;
  }
}
message FileDescriptorResponse { repeated bytes file_descriptor_proto = 1; }
message ListServiceResponse { repeated ServiceResponse service = 1; }
message ServiceResponse { string name = 1; }
message ErrorResponse { int32 error_code = 1; string error_message = 2; }
"""


def run_with_progress_fd(args, timeout=600):
    """Runs `args + ["--progress-fd", N]` with a pipe on N; returns (CompletedProcess, the JSON progress lines)."""
    r, w = os.pipe()
    try:
        res = subprocess.run([*args, "--progress-fd", str(w)], capture_output=True, text=True, timeout=timeout,
                             pass_fds=(w,))
        os.close(w)
        w = None
        with os.fdopen(r) as f:
            lines = [json.loads(x) for x in f.read().splitlines()]
    finally:
        if w is not None:
            os.close(w)
    return res, lines


def reflection_stubs():
    from grpc_tools import protoc
    out = tempfile.mkdtemp(prefix="lcd_reflection_")
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    with open(os.path.join(out, "lcd_test_reflection.proto"), "w") as f:
        f.write(_REFLECTION_PROTO)
    rc = protoc.main(["grpc_tools.protoc", f"-I{out}", f"--python_out={out}", f"--grpc_python_out={out}",
                      os.path.join(out, "lcd_test_reflection.proto")])
    assert rc == 0
    sys.path.insert(0, out)
    import lcd_test_reflection_pb2 as pb2
    import lcd_test_reflection_pb2_grpc as pb2_grpc
    return pb2, pb2_grpc
