"""BitDistiller's quantizers against an independent numpy / torch reference.

The C++ side runs through tests/python/cpp/bitdistiller_check.cc. Inputs are
fresh random (seeded from LCD_TEST_SEED when set, else from the clock; the
seed is printed): matrices of 6 x 40 with groups of 16 (the last one short,
8 columns), Gaussian weights with outliers, one all-positive row, one row
with a constant group, and a random positive-definite E[x x^T] from 300
correlated tokens.

What is compared (the formulas are in lcd/quantizer/bitdistiller.h; the
reference is written from LCD.md and the paper's code, not from lcd's):
  * clipping search (INT2, NF3, INT4, and without E[x x^T]): the chosen
    shrink steps (a, b) per (row, group) are numpy's first strict minimum of
    (w - w')^T H_gg (w - w') over the 10 x 10 grid, or tie with it (|err
    difference| <= 1e-12 relative: the sums are ordered differently); the
    error equals numpy's to 1e-9 relative; the clipped weights, the packed
    codes (LSB-first) and the fp16 parameters equal numpy's quantization of
    the clipped group exactly; clipping never raises the error over a = b = 0;
  * the training-loop quantizer: Decode of the clipped weights equals the
    stored artifact decoded by artifact_numpy.decode bit for bit (so the
    student at init is exactly the PTQ model); Decode and codes equal a torch
    float32 re-statement of the reference's SteInt2AsymQuantizer /
    SteN2F3Quantizer (fp16 parameters) exactly; Backward equals torch
    autograd through that graph (STE Round, clamp mask, gradient through
    amax/amin split over ties, fp16 rounding passed straight through) to
    1e-5 of the gradient's max, and accumulates onto init_dw; without the
    range gradient it is dŴ masked by the clamp. The clamp's gradient is
    inclusive (passes at t = 0 and t = maxq); current torch (2.15) zeroes
    it at the bounds, which would freeze every weight on an extreme code.
"""
import os
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import artifact_numpy  # noqa: E402
import bitdistiller_numpy as bdn  # noqa: E402
import lcd_paths  # noqa: E402
import lcd_skip  # noqa: E402

torch = lcd_skip.importorskip("torch")
st = lcd_skip.importorskip("safetensors.numpy")

SEED = int(os.environ.get("LCD_TEST_SEED", str(int(time.time()) % 100000)))
print(f"test_bitdistiller: LCD_TEST_SEED={SEED}")
R, C, G = 6, 40, 16
LEVELS, THRESH = bdn.LEVELS, bdn.THRESH
_round, _quant_group, _decode_group = bdn.round_away, bdn.quant_group, bdn.decode_group


@pytest.fixture
def rng(request):
    return np.random.default_rng([SEED, zlib.crc32(request.node.name.encode())])


def _weights(rng):
    w = rng.standard_normal((R, C)).astype(np.float32) * 0.1
    w[rng.random((R, C)) < 0.05] *= 6.0         # outliers, which clipping should trim
    w[1] = np.abs(w[1]) + 0.01                  # a one-signed row
    w[2, 16:32] = 0.037                         # a constant group
    return w


def _gram(rng):
    x = rng.standard_normal((300, C)) @ (np.eye(C) + 0.3 * rng.standard_normal((C, C)))
    x *= rng.uniform(0.2, 3.0, C)               # uneven channel scales
    return (x.T @ x / x.shape[0]).astype(np.float64)


def _run(op, inputs, tmp_path, *args):
    inp, out = tmp_path / f"{op}_in.safetensors", tmp_path / f"{op}_out.safetensors"
    st.save_file({k: np.ascontiguousarray(v) for k, v in inputs.items()}, str(inp))
    subprocess.run([lcd_paths.driver("bitdistiller_check"), "--op", op, "--in", str(inp), "--out", str(out),
                    "--threads", "2", *args], check=True)
    return st.load_file(str(out))


# ---- numpy reference (bitdistiller_numpy.py) ------------------------------------

def _clip_search(w, h, bits):
    """-> per (row, group): list of (err, a, b) over the grid in the reference's order."""
    out = {}
    for r in range(R):
        for g in range(-(-C // G)):
            sl = slice(g * G, min(C, (g + 1) * G))
            wg = w[r, sl]
            hg = h[sl, sl]
            lo, hi = wg.min(), wg.max()
            cands = []
            for a in range(10):
                hi_c = np.float32(hi * np.float32(1 - a / 20))
                for b in range(10):
                    lo_c = np.float32(lo * np.float32(1 - b / 20))
                    cur = np.minimum(np.maximum(wg, lo_c), hi_c)
                    codes, params = _quant_group(cur, bits)
                    d = _decode_group(codes, params, bits).astype(np.float64) - wg.astype(np.float64)
                    cands.append((float(d @ hg @ d), a, b, lo_c, hi_c))
            out[(r, g)] = cands
    return out


@pytest.mark.parametrize("bits,with_h", [(2, True), (3, True), (4, True), (2, False), (3, False)])
def test_clip_search_and_quantizer(rng, tmp_path, bits, with_h):
    w, h = _weights(rng), _gram(rng)
    inputs = {"w": w, **({"h": h} if with_h else {})}
    got = _run("clip", inputs, tmp_path, "--bits", str(bits), "--group-size", str(G))
    groups = -(-C // G)
    clipped = w.copy()
    worst_tie = 0.0
    if with_h:
        ref = _clip_search(w, h, bits)
        for (r, g), cands in ref.items():
            errs = np.array([c[0] for c in cands])
            best = int(np.argmin(errs))  # the first strict minimum
            a, b = int(got["a_step"][r, g]), int(got["b_step"][r, g])
            mine = errs[a * 10 + b]
            tie = abs(mine - errs[best]) / max(errs[best], 1e-300)
            worst_tie = max(worst_tie, tie)
            assert (a, b) == cands[best][1:3] or tie <= 1e-12, ((r, g), (a, b), cands[best][1:3], mine, errs[best])
            assert abs(got["err"][r, g] - mine) <= 1e-9 * max(mine, 1e-300), ((r, g), got["err"][r, g], mine)
            assert mine <= errs[0] * (1 + 1e-12)  # never worse than no clipping
            lo_c, hi_c = cands[a * 10 + b][3:5]
            assert got["lo"][r, g] == lo_c and got["hi"][r, g] == hi_c
            sl = slice(g * G, min(C, (g + 1) * G))
            clipped[r, sl] = np.minimum(np.maximum(w[r, sl], lo_c), hi_c)
        # The search must actually clip the outliers somewhere.
        assert (got["a_step"] + got["b_step"]).sum() > 0
    else:
        assert not got["a_step"].any() and not got["b_step"].any()
    np.testing.assert_array_equal(got["clipped"], clipped)
    # Codes and parameters: numpy's quantization of the clipped groups, exactly.
    fmt = "codebook" if bits == 3 else "affine"
    assert int(got["format"][0]) == (0 if bits == 3 else 1)
    P = 8 if bits == 3 else 2
    codes_ref = np.zeros((R, C), np.int64)
    params_ref = np.zeros((R, groups, P), np.float16)
    for r in range(R):
        for g in range(groups):
            sl = slice(g * G, min(C, (g + 1) * G))
            codes_ref[r, sl], params_ref[r, g] = _quant_group(clipped[r, sl], bits)
    packed = got["packed"].astype(np.uint8)
    np.testing.assert_array_equal(packed, artifact_numpy.pack_codes(codes_ref, bits))
    np.testing.assert_array_equal(got["params"].astype(np.uint16), params_ref.view(np.uint16))
    print(f"bits {bits} H {with_h}: worst tie {worst_tie:.2g}, "
          f"mean a {got['a_step'].mean() * .05:.3f} b {got['b_step'].mean() * .05:.3f}")

    # The training-loop quantizer decodes the clipped weights exactly as the artifact stores them.
    loop = _run("loop", {"w": clipped, "dw_hat": np.zeros_like(clipped)}, tmp_path, "--bits", str(bits),
                "--group-size", str(G))
    stored = artifact_numpy.decode(fmt, bits, params_ref.astype(np.float32),
                                   artifact_numpy.unpack_codes(packed, C, bits), G)
    np.testing.assert_array_equal(loop["w_hat"], stored)
    np.testing.assert_array_equal(loop["codes"], codes_ref)


# ---- the STE quantizer against torch autograd ---------------------------------

def _t_round(x):
    x64 = x.detach().double()
    return (torch.sign(x64) * torch.floor(torch.abs(x64) + 0.5)).float()


class _Round(torch.autograd.Function):
    """The reference's STE Round: exact rounding forward, identity backward."""

    @staticmethod
    def forward(ctx, x):
        return _t_round(x)

    @staticmethod
    def backward(ctx, g):
        return g


class _Clamp(torch.autograd.Function):
    """clamp(t, 0, maxq) whose gradient passes where 0 <= t <= maxq (inclusive, our
    contract). torch 2.15's own clamp zeroes it AT the bounds, i.e. for every weight on
    the extreme codes 0 and maxq (half of them at 2 bits); we keep the inclusive mask."""

    @staticmethod
    def forward(ctx, t, maxq):
        ctx.save_for_backward(t)
        ctx.maxq = maxq
        return torch.clamp(t, 0, maxq)

    @staticmethod
    def backward(ctx, g):
        (t,) = ctx.saved_tensors
        return g * ((t >= 0) & (t <= ctx.maxq)).to(g.dtype), None


def _fp16_ste(x):
    return x + (x.detach().half().float() - x.detach())


def _torch_group(wg, bits, range_grad):
    """The reference's forward for one group in float32 (fp16 parameters)."""
    mx, mn = wg.amax(), wg.amin()
    if not range_grad:
        mx, mn = mx.detach(), mn.detach()
    if bits == 3:
        sp, sn = mx.abs(), mn.abs()
        zero = torch.zeros_like(wg)
        x_pos, x_neg = torch.where(wg >= 0, wg, zero), torch.where(wg < 0, wg, zero)
        q_pos, q_neg = x_pos / sp, x_neg / sn
        lv = torch.tensor(LEVELS)
        th = torch.tensor(THRESH)
        k_pos = 3 + (q_pos.detach()[:, None] >= th[None, 3:]).sum(1)
        k_neg = (q_neg.detach()[:, None] >= th[None, :3]).sum(1)
        y_pos = (lv[k_pos] - q_pos).detach() + q_pos
        y_neg = (lv[k_neg] - q_neg).detach() + q_neg
        codes = torch.where(wg.detach() >= 0, k_pos, k_neg)
        # fp16(level * scale): only one of the two terms is non-zero per weight.
        out = torch.where(wg.detach() >= 0, _fp16_ste(y_pos * sp), _fp16_ste(y_neg * sn))
        return out, codes
    maxq = (1 << bits) - 1
    s = _fp16_ste((mx - mn).clamp(min=1e-5) / maxq)
    z = (-_t_round(mn.detach() / s.detach())).clamp(0, maxq)
    u = wg / s
    r = _Round.apply(u)
    c = _Clamp.apply(r + z, maxq)
    return (c - z) * s, c.detach().long()


@pytest.mark.parametrize("bits,range_grad", [(2, True), (3, True), (4, True), (2, False), (3, False)])
def test_loop_quantizer_against_torch(rng, tmp_path, bits, range_grad):
    w = _weights(rng)
    w[3, :16] = np.clip(w[3, :16], -0.05, 0.04)  # ties at the group's max and min, as after clipping
    w[0, 0] = 0.0                                # a weight exactly 0
    dw_hat = rng.standard_normal((R, C)).astype(np.float32)
    init = rng.standard_normal((R, C)).astype(np.float32)
    args = ["--bits", str(bits), "--group-size", str(G)] + ([] if range_grad else ["--no-range-grad"])
    got = _run("loop", {"w": w, "dw_hat": dw_hat, "init_dw": init}, tmp_path, *args)
    wt = torch.tensor(w, requires_grad=True)
    outs, codes = [], []
    for r in range(R):
        row_o, row_c = [], []
        for g in range(-(-C // G)):
            o, c = _torch_group(wt[r, g * G:min(C, (g + 1) * G)], bits, range_grad)
            row_o.append(o)
            row_c.append(c)
        outs.append(torch.cat(row_o))
        codes.append(torch.cat(row_c))
    out = torch.stack(outs)
    out.backward(torch.tensor(dw_hat))
    np.testing.assert_array_equal(got["w_hat"], out.detach().numpy())
    np.testing.assert_array_equal(got["codes"], torch.stack(codes).numpy())
    want = wt.grad.double().numpy() + init
    err = np.abs(got["dw"] - want).max() / np.abs(want).max()
    print(f"bits {bits} range_grad {range_grad}: dw max rel err {err:.2g}")
    assert err <= 1e-5, err
    if not range_grad and bits == 3:
        np.testing.assert_allclose(got["dw"], dw_hat + init, rtol=0, atol=1e-6)  # pure straight-through
