"""BitDistiller's group quantizers in numpy, written from LCD.md and the paper's code
(DD-DuDa/BitDistiller quantization/quantizer.py), for the oracle tests: INT-b asymmetric
(s = fp16(max(max-min, 1e-5) / (2^b-1)), z = clamp(-round(min/s)), q = clamp(round(w/s)+z))
and NF3 asymmetric (levels scaled by |min| and |max|, nearest level, ties up), parameters
in fp16 exactly as the artifact stores them (formats affine and codebook)."""
import numpy as np

LEVELS = np.array([-1.0, -0.5350227355957031, -0.2469314038753510, 0.0,
                   0.1833375245332718, 0.3819939494132996, 0.6229856610298157, 1.0], np.float32)
THRESH = ((LEVELS[1:].astype(np.float64) + LEVELS[:-1]) / 2).astype(np.float32)  # the reference's midpoints


def round_away(x):
    """std::round (ties away from zero) of float32 values, exactly."""
    x = np.asarray(x, np.float64)
    return (np.sign(x) * np.floor(np.abs(x) + 0.5)).astype(np.float32)


def quant_group(w, bits):
    """One group -> (codes int, params as fp16) in BitDistiller's formats."""
    w = np.asarray(w, np.float32)
    lo, hi = w.min(), w.max()
    if bits == 3:
        sp, sn = np.float32(abs(hi)), np.float32(abs(lo))
        params = np.array([LEVELS[k] * (sn if k < 3 else sp) for k in range(8)], np.float32).astype(np.float16)
        codes = np.zeros(w.shape, np.int64)
        for i, v in enumerate(w):
            if v >= 0:
                r = v / sp if sp > 0 else np.float32(0)
                codes[i] = 3 + int(np.sum(r >= THRESH[3:]))
            else:
                codes[i] = int(np.sum((v / sn) >= THRESH[:3]))
        return codes, params
    maxq = (1 << bits) - 1
    s16 = (np.maximum(np.float32(hi - lo), np.float32(1e-5)) / np.float32(maxq)).astype(np.float16)
    if s16 == 0:
        s16 = np.float16(2.0 ** -24)
    s = np.float32(s16)
    z = np.clip(-round_away(lo / s), 0, maxq).astype(np.float32)
    codes = np.clip(round_away(w / s) + z, 0, maxq).astype(np.int64)
    return codes, np.array([s16, np.float16(z)], np.float16)


def decode_group(codes, params, bits):
    p = params.astype(np.float32)
    if bits == 3:
        return p[codes]
    return (p[0] * (codes.astype(np.float32) - p[1])).astype(np.float32)
