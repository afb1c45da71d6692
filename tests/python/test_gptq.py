"""lcd's GPTQ (quantizer/include/lcd/quantizer/gptq.h) against a float64 numpy GPTQ.

The reference below is written from the paper's algorithm (Frantar et al.
2023, Algorithm 1) and the reference code's conventions (dead columns, 1%
dampening of the mean diagonal, U = the upper Cholesky factor of H^-1 taken
as cholesky(inv(H)).T, act-order by descending diag(H)), WITHOUT lazy
batching: every column's error is applied to all later columns at once. The
group grid is QuantizeRtn's (quantize_matrix.h) in fp32 arithmetic; without
act-order it is computed from the error-updated weights when the loop
reaches the group's first column, with act-order from the original weights
before the loop (static groups), the decisions documented in gptq.h.

On fresh random layers (seed printed; replay with LCD_TEST_SEED) and a
correlated random H = E[x x^T] (x = z A with 5% of the columns 3x louder),
through the gptq_dump driver:
  * perm equal; damp and U (prepared factor) within 1e-9 relative;
  * codes equal in >= 99.9% of the weights and (scale, zero) in >= 99.9% of
    the groups (lcd's lazy batches sum the same updates in another order, so
    a weight within rounding of a code boundary may flip; in practice all
    agree), and the layer output error tr((W-Q)H(W-Q)^T) within 1e-3
    relative of the reference's;
  * lcd's reported output error equals numpy's on lcd's own decoded weights
    (1e-9 relative), and it is below 0.85x RTN's on the same layer and groups.
Shapes cover a short last group, g = 48 (groups not aligned with the
128-column blocks), dead input columns, block size 37, 2/3/4 bits.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lcd_paths  # noqa: E402
import lcd_skip  # noqa: E402

st = lcd_skip.importorskip("safetensors.numpy")

SEED = int(os.environ.get("LCD_TEST_SEED", int.from_bytes(os.urandom(4), "little")))
print(f"test_gptq seed {SEED} (replay with LCD_TEST_SEED={SEED})")


def round_half_away(x):
    """std::round on float32 values, exactly (in float64)."""
    y = np.asarray(x, dtype=np.float64)
    a = np.abs(y)
    f = np.floor(a)
    return np.sign(y) * (f + (a - f >= 0.5))


def rtn_grid(wg, maxq):
    """QuantizeRtn's (scale, zero) of one group, fp32 arithmetic; wg float32."""
    lo = np.minimum(np.float32(0), wg.min())
    hi = np.maximum(np.float32(0), wg.max())
    s16 = np.float16((hi - lo) / np.float32(maxq))
    assert np.isfinite(s16)
    if s16 == 0:
        s16 = np.float16(2.0 ** -24)
    scale = np.float32(s16)
    zero = np.float32(np.clip(round_half_away(np.float32(-lo) / scale), 0, maxq))
    return scale, zero


def code_of(w32, scale, zero, maxq):
    return np.clip(round_half_away(w32 / scale) + zero, 0, maxq)


def rtn_ref(w, bits, group):
    rows, cols = w.shape
    maxq = 2 ** bits - 1
    deq = np.zeros((rows, cols))
    for r in range(rows):
        for c0 in range(0, cols, group):
            g = w[r, c0:c0 + group].astype(np.float32)
            s, z = rtn_grid(g, maxq)
            deq[r, c0:c0 + group] = np.float64(s) * (code_of(g, s, z, maxq) - z)
    return deq


def gptq_ref(w, h, bits, group, act_order, percdamp=0.01):
    """Unblocked float64 GPTQ. Returns codes, scale, zero [rows][groups], perm, damp, U."""
    rows, cols = w.shape
    maxq = 2 ** bits - 1
    groups = (cols + group - 1) // group
    W = w.astype(np.float64).copy()
    H = h.copy()
    dead = np.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    perm = np.argsort(-np.diag(H), kind="stable") if act_order else np.arange(cols)
    scale = np.zeros((rows, groups), np.float32)
    zero = np.zeros((rows, groups), np.float32)
    if act_order:  # static groups: grids of the original weights, before the loop
        for r in range(rows):
            for g in range(groups):
                scale[r, g], zero[r, g] = rtn_grid(W[r, g * group:(g + 1) * group].astype(np.float32), maxq)
    W = W[:, perm]
    H = H[np.ix_(perm, perm)]
    damp = percdamp * np.mean(np.diag(H))
    H[np.diag_indices(cols)] += damp
    U = np.linalg.cholesky(np.linalg.inv(H)).T
    codes = np.zeros((rows, cols), np.int64)
    for i in range(cols):
        col = perm[i]
        g = col // group
        if not act_order and i % group == 0:
            for r in range(rows):
                scale[r, g], zero[r, g] = rtn_grid(W[r, i:i + group].astype(np.float32), maxq)
        q = code_of(W[:, i].astype(np.float32), scale[:, g], zero[:, g], maxq)
        dq = scale[:, g].astype(np.float64) * (q - zero[:, g])
        err = (W[:, i] - dq) / U[i, i]
        W[:, i + 1:] -= np.outer(err, U[i, i + 1:])
        codes[:, col] = q
    return codes, scale, zero, perm, damp, U


def decode(codes, scale, zero, group):
    cols = codes.shape[1]
    gidx = np.arange(cols) // group
    return scale[:, gidx].astype(np.float64) * (codes - zero[:, gidx].astype(np.float64))


def output_error(w, deq, h):
    e = w.astype(np.float64) - deq
    return float(np.einsum("ri,ij,rj->", e, h, e))


def correlated_hessian(rng, cols, samples, dead=()):
    a = rng.standard_normal((cols, cols)) * np.where(np.eye(cols) > 0, 1.0, 0.3)
    loud = np.where(rng.random(cols) < 0.05, 3.0, 1.0)
    x = (rng.standard_normal((samples, cols)) @ a) * loud
    x[:, list(dead)] = 0.0
    return x.T @ x / samples


def random_weights(rng, rows, cols):
    w = rng.normal(0.0, 0.05, (rows, cols))
    w *= np.where(rng.random((rows, cols)) < 0.01, 8.0, 1.0)
    return w.astype(np.float32)


CASES = [
    # rows, cols, bits, group, act_order, block, dead columns
    (64, 200, 2, 64, False, 128, ()),
    (64, 200, 3, 128, True, 128, ()),
    (48, 300, 4, 48, False, 128, (5, 101)),
    (40, 172, 3, 64, True, 37, (0, 171)),
    (56, 256, 2, 128, False, 37, ()),
    (32, 130, 2, 64, True, 128, ()),
]


@pytest.mark.parametrize("case", CASES, ids=[f"r{c[0]}c{c[1]}b{c[2]}g{c[3]}{'act' if c[4] else ''}k{c[5]}"
                                             for c in CASES])
def test_gptq_matches_numpy_reference(case, tmp_path):
    rows, cols, bits, group, act_order, block, dead = case
    rng = np.random.default_rng([SEED, rows, cols, bits, group])
    w = random_weights(rng, rows, cols)
    h = correlated_hessian(rng, cols, 2 * cols, dead)
    inp, out = tmp_path / "in.safetensors", tmp_path / "out.safetensors"
    st.save_file({"w": w, "h": h.astype(np.float64)}, str(inp))
    cmd = [lcd_paths.driver("gptq_dump"), "--in", str(inp), "--out", str(out), "--bits", str(bits),
           "--group-size", str(group), "--block-size", str(block), "--threads", "2"]
    if act_order:
        cmd.append("--act-order")
    subprocess.run(cmd, check=True, timeout=120)
    got = st.load_file(str(out))

    codes, scale, zero, perm, damp, U = gptq_ref(w, h, bits, group, act_order)
    assert np.array_equal(got["perm"], perm)
    assert abs(got["damp"][0] - damp) <= 1e-12 * damp
    np.testing.assert_allclose(got["u"], U, rtol=0, atol=1e-9 * np.abs(U).max())

    same_codes = np.mean(got["codes"] == codes)
    same_groups = np.mean((got["scale"] == scale) & (got["zero"] == zero))
    assert same_codes >= 0.999, f"codes agree on {same_codes:.5f}"
    assert same_groups >= 0.999, f"group grids agree on {same_groups:.5f}"

    deq_ref = decode(codes, scale, zero, group)
    deq_lcd = decode(got["codes"], got["scale"], got["zero"], group)
    for c in dead:
        assert np.all(deq_lcd[:, c] == 0.0)
    e_ref = output_error(w, deq_ref, h)
    e_lcd = output_error(w, deq_lcd, h)
    assert abs(e_lcd - e_ref) <= 1e-3 * e_ref, (e_lcd, e_ref)
    assert abs(got["output_error"][0] - e_lcd) <= 1e-9 * e_lcd

    # Against RTN on the same layer and groups (numpy's RTN, checked equal to lcd's).
    deq_rtn = rtn_ref(w, bits, group)
    np.testing.assert_array_equal(decode(got["rtn_codes"], got["rtn_scale"], got["rtn_zero"], group), deq_rtn)
    e_rtn = output_error(w, deq_rtn, h)
    assert abs(got["output_error"][1] - e_rtn) <= 1e-9 * e_rtn
    print(f"{case}: codes agree {same_codes:.5f}, grids {same_groups:.5f}, gptq/rtn output error {e_lcd / e_rtn:.3f}")
    assert e_lcd < 0.85 * e_rtn, (e_lcd, e_rtn)
