"""R2Q's math (lcd/quantizer/r2q.h, train/r2q_loop_quantizer.h) against numpy / torch float64.

The C++ side runs through the driver tests/python/cpp/r2q_check.cc. Inputs are
fresh random (seed from LCD_TEST_SEED when set, else the clock; printed).

Checked:
  * the closed form per (row, group) (alpha1 = mean|w|, B1 = sign w,
    alpha2 = mean|R|, B2 = sign R, sign(0) = +1) against numpy in float64,
    on shapes with a short last group, with and without importance;
  * the refinement (N rounds of importance-weighted 2x2 least-squares refit
    of (alpha1, alpha2), then nearest-of-four re-assignment): alphas, codes
    and the objective after every round against numpy; the objective never
    rises (C++ and numpy traces) and falls overall;
  * QuantizeR2q's stored kBinaryCoded matrix: fp16 (alpha1, alpha2, 0), codes
    (the closed form's, or with refit the nearest level of the fp16 alphas),
    the kernels' DequantizeRows and WeightedSquaredError against numpy's
    decode of the documented formula (bit 0 = B1, bit 1 = B2);
  * edge cases: all-zero groups and exact zeros (sign(0) = +1), a singular
    refit (B2 = B1 everywhere: minimum-norm split), all-zero importance;
  * bad input refused with a message: a NaN weight, negative importance;
  * the training-loop quantizer: one linear y = x W_hat^T with codes =
    Assign(latent w, alphas) (nearest of the four levels, also for alphas out
    of the closed form's order: alpha2 > alpha1, negative alphas), forward
    and the gradients dx, dW (straight-through) and dalphas (sums of dW_hat
    times B1 / B2 per group) against torch float64 autograd, accumulating
    into non-zero gradients.

Tolerances: alphas and objectives rel 1e-5 (C++ sums in double, stores fp32);
codes exactly, except where numpy's two nearest candidates are within 1e-5
of each other (a decision boundary at fp32 rounding); stored fp16 alphas
exactly, or one fp16 ulp apart where fp32 -> fp16 rounding of a value on
an fp16 midpoint may differ; loop forward/gradients max|lcd - torch| /
max|torch| <= 1e-4 (as test_train_parity).
"""
import os
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lcd_paths  # noqa: E402
import lcd_skip  # noqa: E402

st = lcd_skip.importorskip("safetensors.numpy")

SEED = int(os.environ.get("LCD_TEST_SEED", str(int(time.time()) % 100000)))
print(f"test_r2q: LCD_TEST_SEED={SEED}")
TIE = 1e-5


@pytest.fixture
def rng(request):
    return np.random.default_rng([SEED, zlib.crc32(request.node.name.encode())])


def _run(op, inputs, tmp_path, metadata, check=True):
    inp, out = tmp_path / f"{op}_in.safetensors", tmp_path / f"{op}_out.safetensors"
    st.save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in inputs.items()}, str(inp),
                 metadata={k: str(v) for k, v in metadata.items()})
    res = subprocess.run([lcd_paths.driver("r2q_check"), "--op", op, "--in", str(inp), "--out", str(out)],
                         capture_output=True, text=True)
    if not check:
        return res
    assert res.returncode == 0, res.stderr
    return st.load_file(str(out))


# ---- numpy reference -------------------------------------------------------

def level(q, a1, a2):
    return a1 * (2.0 * (q & 1) - 1) + a2 * (2.0 * ((q >> 1) & 1) - 1)


def nearest(w, a1, a2):
    """Codes of the nearest of the 4 levels (float64), and the gap to the runner-up."""
    d = np.abs(w[:, None] - level(np.arange(4)[None, :], a1, a2))
    order = np.argsort(d, axis=1, kind="stable")
    gap = np.take_along_axis(d, order[:, 1:2], 1)[:, 0] - np.take_along_axis(d, order[:, :1], 1)[:, 0]
    return order[:, 0], gap


def objective(w, h, a1, a2, codes):
    return float((h * (w - level(codes, a1, a2)) ** 2).sum())


def ref_fit_group(w, h, refit):
    """Returns alphas (float32 pair), codes, objective trace, and the per-weight decision margins."""
    w = w.astype(np.float64)
    h = np.ones_like(w) if h is None or not np.any(h) else h.astype(np.float64)
    a1 = np.abs(w).mean()
    b1 = w >= 0
    r = w - np.where(b1, a1, -a1)
    a2 = np.abs(r).mean()
    codes = b1.astype(np.int64) | ((r >= 0).astype(np.int64) << 1)
    margin = np.minimum(np.abs(w), np.abs(r))
    a = np.float32([a1, a2]).astype(np.float64)
    trace = [objective(w, h, a[0], a[1], codes)]
    for _ in range(refit):
        s1, s2 = 2.0 * (codes & 1) - 1, 2.0 * ((codes >> 1) & 1) - 1
        H, C = h.sum(), (h * s1 * s2).sum()
        r1, r2 = (h * w * s1).sum(), (h * w * s2).sum()
        if H - abs(C) <= 1e-9 * H:
            x = r1 / (2 * H)
            a = np.array([x, x if C >= 0 else -x])
        else:
            a = np.linalg.solve(np.array([[H, C], [C, H]]), np.array([r1, r2]))
        a = a.astype(np.float32).astype(np.float64)
        codes, gap = nearest(w, a[0], a[1])
        margin = np.minimum(margin, gap)
        trace.append(objective(w, h, a[0], a[1], codes))
    return a.astype(np.float32), codes, np.array(trace), margin


def _groups(cols, gs):
    return [(c0, min(cols, c0 + gs)) for c0 in range(0, cols, gs)]


def _weights(rng, rows, cols):
    w = rng.standard_normal((rows, cols)) * 0.05
    w *= np.where(rng.random((rows, cols)) < 0.02, 8.0, 1.0)  # a few outliers, like trained weights
    return w.astype(np.float32)


# ---- the closed form, the refit and the stored matrix ----------------------

@pytest.mark.parametrize("rows,cols,gs,refit,weighted", [
    (6, 172, 64, 0, False), (5, 200, 64, 0, True), (4, 172, 64, 3, True), (3, 130, 32, 5, False),
    (4, 256, 128, 2, True)])
def test_fit_matches_numpy(rng, tmp_path, rows, cols, gs, refit, weighted):
    w = _weights(rng, rows, cols)
    inputs = dict(w=w)
    imp = None
    if weighted:
        imp = (rng.random(cols) ** 3 * 4).astype(np.float32)
        imp[:3] = 0.0  # columns that carry no weight
        inputs["importance"] = imp
    out = _run("fit", inputs, tmp_path, dict(group_size=gs, refit=refit))
    groups = _groups(cols, gs)
    assert out["alphas"].shape == (rows, len(groups), 2) and out["params"].shape == (rows, len(groups), 3)
    assert out["objective"].shape == (rows, len(groups), refit + 1)
    want_dequant = np.zeros((rows, cols), np.float64)
    total = 0.0
    for r in range(rows):
        for g, (c0, c1) in enumerate(groups):
            wg = w[r, c0:c1]
            hg = None if imp is None else imp[c0:c1]
            a, codes, trace, margin = ref_fit_group(wg, hg, refit)
            np.testing.assert_allclose(out["alphas"][r, g], a, rtol=1e-5, atol=1e-9)
            got = out["codes"][r, c0:c1]
            bad = (got != codes) & (margin > TIE * (abs(a[0]) + abs(a[1])))
            assert not bad.any(), (r, g, np.nonzero(bad))
            np.testing.assert_allclose(out["objective"][r, g], trace, rtol=1e-5, atol=1e-12)
            # The objective never rises from round to round (C++ and numpy).
            for t in (trace, out["objective"][r, g]):
                assert np.all(np.diff(t) <= 1e-6 * t[0] + 1e-12), (r, g, t)
            # The stored matrix: fp16 alphas, beta 0, codes per the contract.
            p16 = out["params"][r, g]
            want16 = a.astype(np.float16).astype(np.float32)
            ulp = np.abs(np.spacing(want16.astype(np.float16))).astype(np.float32)
            assert np.all(np.abs(p16[:2] - want16) <= ulp), (p16, want16)
            assert p16[2] == 0.0
            qcodes = out["qcodes"][r, c0:c1]
            if refit == 0:
                np.testing.assert_array_equal(qcodes, got)
            else:
                q16, gap = nearest(wg.astype(np.float64), float(p16[0]), float(p16[1]))
                bad = (qcodes != q16) & (gap > TIE * (abs(p16[0]) + abs(p16[1])))
                assert not bad.any(), (r, g)
            want_dequant[r, c0:c1] = level(qcodes, float(p16[0]), float(p16[1]))
            hh = np.ones(c1 - c0) if hg is None else hg.astype(np.float64)
            total += float((hh * (wg - want_dequant[r, c0:c1]) ** 2).sum())
    np.testing.assert_allclose(out["dequant"], want_dequant, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(out["error"][0], total, rtol=1e-5)
    if refit > 0:
        # The refit pays: less weighted error than the closed form, summed over all groups.
        obj = out["objective"]
        assert obj[:, :, -1].sum() < obj[:, :, 0].sum()


def test_edge_cases(tmp_path):
    # Row 0: an all-zero group (all codes +,+: 3; alphas 0), then a group of
    # exact zeros and +-1 (sign(0) = +1).
    # Row 1: a constant group (B2 = B1 everywhere: the refit is singular and
    # splits alpha1 + alpha2 evenly), then a group whose residuals are all 0.
    w = np.zeros((2, 8), np.float32)
    w[0, 4:] = [0.0, 1.0, -1.0, 0.0]
    w[1, :4] = 3.0
    w[1, 4:] = [1.0, -1.0, 1.0, -1.0]
    out = _run("fit", dict(w=w), tmp_path, dict(group_size=4, refit=0))
    np.testing.assert_array_equal(out["codes"][0, :4], [3, 3, 3, 3])
    np.testing.assert_array_equal(out["alphas"][0, 0], [0.0, 0.0])
    # group [0, 1, -1, 0]: alpha1 = 0.5; residuals -0.5, 0.5, -0.5, -0.5 -> codes 1, 3, 0, 1
    np.testing.assert_array_equal(out["codes"][0, 4:], [1, 3, 0, 1])
    np.testing.assert_allclose(out["alphas"][0, 1], [0.5, 0.5])
    np.testing.assert_array_equal(out["codes"][1, :4], [3, 3, 3, 3])
    np.testing.assert_array_equal(out["codes"][1, 4:], [3, 2, 3, 2])  # residual 0 -> B2 = +1
    np.testing.assert_allclose(out["alphas"][1], [[3.0, 0.0], [1.0, 0.0]])
    ref = _run("fit", dict(w=w), tmp_path, dict(group_size=4, refit=1))
    np.testing.assert_allclose(ref["alphas"][1, 0], [1.5, 1.5])  # singular: minimum-norm split of 3
    np.testing.assert_array_equal(ref["codes"][1, :4], [3, 3, 3, 3])
    assert ref["objective"][1, 0, 1] == 0.0
    # All-zero importance: fitted as if unweighted.
    rng = np.random.default_rng(SEED)
    w2 = _weights(rng, 3, 64)
    a = _run("fit", dict(w=w2, importance=np.zeros(64, np.float32)), tmp_path, dict(group_size=32, refit=2))
    b = _run("fit", dict(w=w2), tmp_path, dict(group_size=32, refit=2))
    np.testing.assert_array_equal(a["alphas"], b["alphas"])
    np.testing.assert_array_equal(a["codes"], b["codes"])


def test_bad_input_refused(tmp_path):
    w = np.ones((2, 8), np.float32)
    w[1, 5] = np.nan
    res = _run("fit", dict(w=w), tmp_path, dict(group_size=4, refit=0), check=False)
    assert res.returncode != 0 and "non-finite weight at row 1, column 5" in res.stderr, res.stderr
    imp = np.ones(8, np.float32)
    imp[2] = -1.0
    res = _run("fit", dict(w=np.ones((2, 8), np.float32), importance=imp), tmp_path, dict(group_size=4, refit=1),
               check=False)
    assert res.returncode != 0 and "importance of column 2" in res.stderr, res.stderr
    res = _run("fit", dict(w=np.ones((2, 8), np.float32)), tmp_path, dict(group_size=4, refit=-1), check=False)
    assert res.returncode != 0 and "refit rounds must be >= 0" in res.stderr, res.stderr


# ---- the training-loop quantizer against torch -----------------------------

def test_loop_quantizer_gradients_match_torch(rng, tmp_path):
    torch = lcd_skip.importorskip("torch")
    T, K, N, gs = 9, 70, 5, 32
    groups = _groups(K, gs)
    w = _weights(rng, N, K)
    alphas = np.zeros((N, len(groups), 2), np.float32)
    for r in range(N):
        for g, (c0, c1) in enumerate(groups):
            alphas[r, g] = ref_fit_group(w[r, c0:c1], None, 0)[0]
    alphas *= (1 + 0.3 * rng.standard_normal(alphas.shape)).astype(np.float32)  # trained away from the init
    alphas[0, 0] = alphas[0, 0, ::-1] * [1.0, 1.5]  # alpha2 > alpha1
    alphas[1, 1, 1] *= -1.0                            # a negative alpha
    x = rng.standard_normal((T, K)).astype(np.float32)
    dout = rng.standard_normal((T, N)).astype(np.float32)
    init_dw = rng.standard_normal((N, K)).astype(np.float32)
    init_da = rng.standard_normal(alphas.shape).astype(np.float32)
    out = _run("loop", dict(x=x, w=w, alphas=alphas, dout=dout, init_dw=init_dw, init_dalphas=init_da), tmp_path,
               dict(group_size=gs))

    gidx = np.arange(K) // gs
    codes = np.zeros((N, K), np.int64)
    for r in range(N):
        a = alphas[r, gidx].astype(np.float64)
        d = np.abs(w[r, :, None] - level(np.arange(4)[None, :], a[:, 0:1], a[:, 1:2]))
        codes[r] = d.argmin(axis=1)
        srt = np.sort(d, axis=1)
        bad = (out["codes"][r] != codes[r]) & (srt[:, 1] - srt[:, 0] > TIE)
        assert not bad.any(), (r, np.nonzero(bad))
    codes = out["codes"].astype(np.int64)  # identical up to boundary ties (checked above)

    W = torch.tensor(w.astype(np.float64), requires_grad=True)
    A = torch.tensor(alphas.astype(np.float64), requires_grad=True)
    X = torch.tensor(x.astype(np.float64), requires_grad=True)
    s1 = torch.tensor(2.0 * (codes & 1) - 1)
    s2 = torch.tensor(2.0 * ((codes >> 1) & 1) - 1)
    g = torch.tensor(gidx)
    rows = torch.arange(N)[:, None]
    w_hat = A[rows, g, 0] * s1 + A[rows, g, 1] * s2 + (W - W.detach())  # straight-through
    y = X @ w_hat.T
    y.backward(torch.tensor(dout.astype(np.float64)))

    def rel(a, b):
        return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))

    errs = {"out": rel(out["out"], y.detach().numpy()), "dx": rel(out["dx"], X.grad.numpy()),
            "dw": rel(out["dw"], W.grad.numpy() + init_dw), "dalphas": rel(out["dalphas"], A.grad.numpy() + init_da)}
    print("r2q loop quantizer max rel errors:", errs)
    assert all(e <= 1e-4 for e in errs.values()), errs
    # The alphas' gradient is not trivially the init: the linear contributes.
    assert np.abs(A.grad.numpy()).max() > 1e-3
