"""Artifact format v1 in numpy, written from docs/ARTIFACT.md alone (no lcd code).

Two independent halves of the oracle:
  * dequantize(dir): reads manifest.json + model.safetensors, checks every
    sha256, and decodes each quantized tensor with the documented formulas
    into float32 (parameters widened from fp16, arithmetic in float32, as the
    page specifies);
  * write_artifact(src_dir, out_dir, plan): quantizes a Hugging Face
    checkpoint in numpy into the formats named by `plan` and lays the
    directory out as the page says (so lcd's reader and kernels are tested on
    bytes lcd did not write).
and to_hf_checkpoint(), which saves dequantized tensors as an fp32 Hugging
Face folder that transformers loads.
"""
import hashlib
import json
import os
import shutil

import numpy as np
from safetensors.numpy import load_file, save_file

FORMATS = ("codebook", "affine", "binary_coded", "lattice")


def params_per_group(fmt, bits):
    return {"codebook": 1 << bits, "affine": 2, "binary_coded": bits + 1}[fmt]


def unpack_codes(packed, cols, bits):
    """[rows][row_bytes] uint8 -> [rows][cols] codes (LSB-first bit stream per row)."""
    bits_le = np.unpackbits(packed, axis=1, bitorder="little")[:, : cols * bits]
    bits_le = bits_le.reshape(packed.shape[0], cols, bits).astype(np.int64)
    return (bits_le << np.arange(bits)).sum(axis=2)


def pack_codes(codes, bits):
    rows, cols = codes.shape
    planes = ((codes[:, :, None] >> np.arange(bits)) & 1).astype(np.uint8).reshape(rows, cols * bits)
    row_bytes = (cols * bits + 7) // 8
    pad = row_bytes * 8 - cols * bits
    planes = np.concatenate([planes, np.zeros((rows, pad), np.uint8)], axis=1)
    return np.packbits(planes, axis=1, bitorder="little")


def decode(fmt, bits, params, codes, group_size):
    """params: [rows][groups][P] float32, codes [rows][cols] -> [rows][cols] float32."""
    rows, cols = codes.shape
    g = np.arange(cols) // group_size
    p = params[:, g, :]  # [rows][cols][P]
    if fmt == "codebook":
        return np.take_along_axis(p, codes[:, :, None], axis=2)[:, :, 0]
    if fmt == "affine":
        return (p[:, :, 0] * (codes.astype(np.float32) - p[:, :, 1])).astype(np.float32)
    out = p[:, :, bits].copy()
    for i in range(bits):
        sign = (2 * ((codes >> i) & 1) - 1).astype(np.float32)
        out = out + p[:, :, i] * sign
    return out.astype(np.float32)


# ---- lattice (GLVQ) -----------------------------------------------------------

def unpack_lattice_codes(packed, cols, group_size, group_bits):
    """Variable-width rows: group k's columns take group_bits[k] bits each, groups back to back."""
    stream = np.unpackbits(packed, axis=1, bitorder="little").astype(np.int64)
    out = np.zeros((packed.shape[0], cols), np.int64)
    bit = 0
    for k, b in enumerate(group_bits):
        c0, c1 = k * group_size, min(cols, (k + 1) * group_size)
        n = (c1 - c0) * int(b)
        chunk = stream[:, bit:bit + n].reshape(-1, c1 - c0, int(b))
        out[:, c0:c1] = (chunk << np.arange(int(b))).sum(axis=2)
        bit += n
    assert not stream[:, bit:].any(), "padding bits after the last code must be zero"
    return out


def pack_lattice_codes(codes, group_size, group_bits):
    rows, cols = codes.shape
    planes = []
    for k, b in enumerate(group_bits):
        c = codes[:, k * group_size:min(cols, (k + 1) * group_size)]
        planes.append(((c[:, :, None] >> np.arange(int(b))) & 1).astype(np.uint8).reshape(rows, -1))
    planes = np.concatenate(planes, axis=1)
    pad = -planes.shape[1] % 8
    planes = np.concatenate([planes, np.zeros((rows, pad), np.uint8)], axis=1)
    return np.packbits(planes, axis=1, bitorder="little")


def decode_lattice(scales, lattice, group_bits, codes, group_size, d):
    """scales [rows][groups] f32, lattice [groups][d*d+1] f32 -> [rows][cols] float32.

    Sub-vectors of d columns inside each group (the last of a short group has
    n < d columns and uses G's leading n x n block): y = G (q - 2^(b-1) + 1/2),
    w = s * sign(y) * ((1 + mu)^|y| - 1) / mu, in float32."""
    rows, cols = codes.shape
    out = np.zeros((rows, cols), np.float32)
    for k, b in enumerate(group_bits):
        G = lattice[k, :d * d].reshape(d, d).astype(np.float32)
        mu = np.float32(lattice[k, d * d])
        c0, c1 = k * group_size, min(cols, (k + 1) * group_size)
        for t in range(c0, c1, d):
            n = min(d, c1 - t)
            c = (codes[:, t:t + n] - (1 << (int(b) - 1))).astype(np.float32) + np.float32(0.5)
            y = c @ G[:n, :n].T
            mag = np.expm1(np.abs(y) * np.log1p(mu)) / mu
            out[:, t:t + n] = scales[:, k:k + 1] * np.sign(y) * mag
    return out


def _mu_law(x, mu):
    return np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)


def quantize_lattice(w, bits, group_size, d):
    """A plain numpy lattice quantizer (not GLVQ's training): per column group a
    scaled Cholesky factor of the companded sub-vectors' second moment, mu = 50,
    s = max |w| per (row, group), Babai-rounded codes; group widths alternate
    bits, bits + 1 so variable-width rows are exercised."""
    rows, cols = w.shape
    groups = -(-cols // group_size)
    group_bits = np.array([bits + (k % 2) for k in range(groups)], np.uint8)
    scales = np.zeros((rows, groups), np.float16)
    lattice = np.zeros((groups, d * d + 1), np.float16)
    codes = np.zeros((rows, cols), np.int64)
    for k in range(groups):
        b = int(group_bits[k])
        c0, c1 = k * group_size, min(cols, (k + 1) * group_size)
        s = _fp16(np.maximum(np.abs(w[:, c0:c1]).max(axis=1), 1e-6))
        scales[:, k] = s
        u = _mu_law(w[:, c0:c1] / s.astype(np.float32)[:, None], 50.0)
        full = (c1 - c0) // d * d
        sub = u[:, :full].reshape(-1, d) if full else u[:, :d].reshape(-1, min(d, c1 - c0))
        cov = sub.T.astype(np.float64) @ sub / len(sub) if full else np.eye(d) / 3
        cov += 1e-2 * np.trace(cov) / d * np.eye(d)
        G = _fp16(np.linalg.cholesky(cov) * 2.0 / (1 << b))
        lattice[k, :d * d] = G.reshape(-1)
        lattice[k, d * d] = 50.0
        Gf = G.astype(np.float64)
        for t in range(c0, c1, d):
            n = min(d, c1 - t)
            z = np.round(np.linalg.solve(Gf[:n, :n], u[:, t - c0:t - c0 + n].T).T - 0.5)
            codes[:, t:t + n] = np.clip(z, -(1 << (b - 1)), (1 << (b - 1)) - 1).astype(np.int64) + (1 << (b - 1))
    return pack_lattice_codes(codes, group_size, group_bits), scales[:, :, None], lattice, group_bits


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def dequantize(artifact_dir):
    with open(os.path.join(artifact_dir, "manifest.json")) as f:
        manifest = json.load(f)
    assert manifest["format"] == "lcd-artifact" and manifest["format_version"] == 1
    for entry in manifest["files"]:
        path = os.path.join(artifact_dir, entry["path"])
        assert os.path.getsize(path) == entry["bytes"], path
        assert sha256(path) == entry["sha256"], path
    stored = load_file(os.path.join(artifact_dir, "model.safetensors"))
    out = {}
    for name, t in manifest["tensors"].items():
        if t["format"] == "dense":
            out[name] = stored[name].astype(np.float32)
            continue
        rows, cols = t["shape"]
        bits, gs = t["bits"], t["group_size"]
        if t["format"] == "lattice":
            d = t["lattice_dim"]
            group_bits = stored[name + ".group_bits"]
            lattice = stored[name + ".lattice"].astype(np.float32)
            params = stored[name + ".params"].astype(np.float32)
            assert params.shape == (rows, -(-cols // gs), 1) and lattice.shape == (len(group_bits), d * d + 1)
            codes = unpack_lattice_codes(stored[name + ".codes"], cols, gs, group_bits)
            out[name] = decode_lattice(params[:, :, 0], lattice, group_bits, codes, gs, d)
            continue
        codes = unpack_codes(stored[name + ".codes"], cols, bits)
        params = stored[name + ".params"].astype(np.float32)
        assert params.shape == (rows, -(-cols // gs), params_per_group(t["format"], bits))
        out[name] = decode(t["format"], bits, params, codes, gs)
    return manifest, out


def activation_bits(manifest):
    """The manifest's "activations" field (ARTIFACT.md): 8, or 0 when absent."""
    a = manifest.get("activations")
    if a is None:
        return 0
    assert isinstance(a, dict) and set(a) == {"bits", "granularity", "scheme"}, a
    assert a["bits"] == 8 and a["granularity"] == "per_token" and a["scheme"] == "symmetric_absmax", a
    return 8


def fake_quant_int8_per_token(x):
    """Per row: s = max|x| / 127, round(x / s) (half to even) * s; a zero row stays zero. float32 in,
    float32 arithmetic, as ARTIFACT.md says."""
    x = np.asarray(x, np.float32)
    s = (np.abs(x).max(axis=-1, keepdims=True) / np.float32(127)).astype(np.float32)
    safe = np.where(s > 0, s, np.float32(1))
    return np.where(s > 0, np.round(x / safe) * s, np.float32(0)).astype(np.float32)


def install_activation_hooks(model, manifest):
    """On a transformers model of the dequantized artifact: with activations 8, every quantized
    linear's input goes through the per-token int8 quantize-dequantize first (in the model's dtype;
    float64 for the oracle). Returns the number of hooked linears."""
    if activation_bits(manifest) == 0:
        return 0
    import torch

    def fq(module, args):
        x = args[0]
        s = x.abs().amax(-1, keepdim=True) / 127.0
        q = torch.where(s > 0, torch.round(x / torch.where(s > 0, s, torch.ones_like(s))), torch.zeros_like(x))
        return (q * s,) + tuple(args[1:])

    quantized = {n[:-len(".weight")] for n, t in manifest["tensors"].items() if t["format"] != "dense"}
    hooked = 0
    for name, module in model.named_modules():
        if name in quantized:
            module.register_forward_pre_hook(fq)
            hooked += 1
    return hooked


def to_hf_checkpoint(manifest, tensors, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    config = dict(manifest["model_config"])
    config["torch_dtype"] = "float32"
    config.pop("dtype", None)
    # A quantized lm_head stored apart from the embedding unties the model.
    if config.get("tie_word_embeddings") and "lm_head.weight" in tensors:
        config["tie_word_embeddings"] = False
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f)
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, os.path.join(out_dir, "model.safetensors"))
    return out_dir


# ---- the writer half --------------------------------------------------------

def _fp16(x):
    return np.asarray(x, np.float32).astype(np.float16)


def quantize_group(fmt, bits, w):
    """One group's weights (float32 vector) -> (params fp16 [P], codes int)."""
    k = 1 << bits
    if fmt == "codebook":
        c = _fp16(np.quantile(w, (np.arange(k) + 0.5) / k))
        codes = np.abs(w[:, None] - c.astype(np.float32)[None, :]).argmin(axis=1)
        return c, codes
    if fmt == "affine":
        lo, hi = float(w.min()), float(w.max())
        scale = (hi - lo) / (k - 1) if hi > lo else 1.0
        zero = float(np.clip(np.round(-lo / scale), 0, k - 1))
        p = _fp16([scale, zero])
        s, z = p.astype(np.float32)
        codes = np.clip(np.round(w / s + z), 0, k - 1).astype(np.int64)
        return p, codes
    # binary_coded: residual 1-bit quantizers, alpha_i = mean|R|, B_i = sign R.
    r = w.astype(np.float64).copy()
    alphas, codes = [], np.zeros(w.shape, np.int64)
    for i in range(bits):
        a = float(np.abs(r).mean())
        b = (r >= 0).astype(np.int64)
        codes |= b << i
        alphas.append(a)
        r -= a * (2 * b - 1)
    return _fp16(alphas + [0.05 * float(w.mean())]), codes


def quantize_matrix(fmt, bits, group_size, w):
    rows, cols = w.shape
    groups = -(-cols // group_size)
    params = np.zeros((rows, groups, params_per_group(fmt, bits)), np.float16)
    codes = np.zeros((rows, cols), np.int64)
    for r in range(rows):
        for g in range(groups):
            sl = slice(g * group_size, min(cols, (g + 1) * group_size))
            params[r, g], codes[r, sl] = quantize_group(fmt, bits, w[r, sl])
    return pack_codes(codes, bits), params


def write_artifact(src_dir, out_dir, plan):
    """plan: {tensor name: (format, bits, group_size) or ("lattice", bits, group_size, d)};
    other tensors stay dense."""
    os.makedirs(out_dir)
    src = load_file(os.path.join(src_dir, "model.safetensors"))
    with open(os.path.join(src_dir, "config.json")) as f:
        config = json.load(f)
    stored, tensors = {}, {}
    for name, w in src.items():
        if name not in plan:
            stored[name] = w
            tensors[name] = {"format": "dense", "shape": list(w.shape)}
            continue
        if plan[name][0] == "lattice":
            _, bits, gs, d = plan[name]
            codes, params, lattice, group_bits = quantize_lattice(w.astype(np.float32), bits, gs, d)
            stored[name + ".codes"], stored[name + ".params"] = codes, params
            stored[name + ".lattice"], stored[name + ".group_bits"] = lattice, group_bits
            tensors[name] = {"format": "lattice", "shape": list(w.shape), "bits": bits, "group_size": gs,
                             "lattice_dim": d}
            continue
        fmt, bits, gs = plan[name]
        codes, params = quantize_matrix(fmt, bits, gs, w.astype(np.float32))
        stored[name + ".codes"], stored[name + ".params"] = codes, params
        tensors[name] = {"format": fmt, "shape": list(w.shape), "bits": bits, "group_size": gs}
    save_file(stored, os.path.join(out_dir, "model.safetensors"))
    names = ["model.safetensors"]
    tokenizer_files = []
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        if os.path.exists(os.path.join(src_dir, name)):
            shutil.copy(os.path.join(src_dir, name), os.path.join(out_dir, name))
            names.append(name)
            if name.startswith("tokenizer"):
                tokenizer_files.append(name)
    files = [{"path": n, "bytes": os.path.getsize(os.path.join(out_dir, n)),
              "sha256": sha256(os.path.join(out_dir, n))} for n in sorted(names)]
    manifest = {
        "format": "lcd-artifact", "format_version": 1, "model_config": config,
        "method": {"name": "numpy-oracle", "bits": 0, "group_size": 0, "params": {}},
        "tensors": tensors, "files": files, "tokenizer_files": tokenizer_files,
        "provenance": {"source_model": src_dir, "tool": "tests/python/artifact_numpy.py"},
    }
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
    return manifest
