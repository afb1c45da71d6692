"""Writes python_written.safetensors, the fixture read by
tests/runtime/safetensors_test.cc (PythonWrittenFixture).

Run from this directory:  python3 make_fixture.py
Values follow formulas the test recomputes; every float value is exactly
representable in its dtype so no rounding mode is involved.
"""
import torch
from safetensors.torch import save_file

n = torch.arange(24, dtype=torch.float64)
tensors = {
    "w.f32": ((n - 11.0) * 0.375).reshape(2, 3, 4).to(torch.float32),
    "w.f16": ((n[:12] - 5.0) * 0.125).reshape(3, 4).to(torch.float16),
    "w.bf16": ((n[:10] - 3.0) * 2.5).reshape(10).to(torch.bfloat16),
    "w.f64": ((n[:6] - 2.0) / 3.0).reshape(2, 3),
    "idx.u8": (torch.arange(16) * 13 % 256).to(torch.uint8).reshape(4, 4),
    "idx.i8": (torch.arange(8) * 17 - 60).to(torch.int8),
    "idx.i32": (torch.arange(6) * 100000 - 250000).to(torch.int32).reshape(3, 2),
    "idx.i64": (torch.arange(3) * 10**12 - 7).to(torch.int64),
    "empty": torch.zeros((0, 5), dtype=torch.float32),
    "scalar": torch.tensor(1.5, dtype=torch.float32),
}
save_file(tensors, "python_written.safetensors", metadata={"format": "pt", "note": "lcd fixture"})
