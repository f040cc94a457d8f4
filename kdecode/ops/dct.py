"""Blockwise 8x8 DCT / IDCT on tensors ``[..., 8, 8]`` (natural order, ``[v, u]``).

Two inverses: the orthonormal float IDCT (differentiable, what models use) and libjpeg's
integer "islow" IDCT (jidctint.c), bit-exact, what the exact decode uses.
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch


@lru_cache(maxsize=None)
@torch.inference_mode(False)  # cached: made under inference_mode it could never be used in training
def _dct_matrix_cpu(dtype: torch.dtype) -> torch.Tensor:
    # C[k, n] = a(k) cos((2n + 1) k pi / 16): rows are the 1-D basis functions.
    k = torch.arange(8, dtype=torch.float64).unsqueeze(1)
    n = torch.arange(8, dtype=torch.float64).unsqueeze(0)
    c = torch.cos((2 * n + 1) * k * math.pi / 16) * math.sqrt(2 / 8)
    c[0] = math.sqrt(1 / 8)
    return c.to(dtype)


def dct_matrix(dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """The 8x8 orthonormal DCT-II matrix ``C`` (``F = C f C^T``, ``f = C^T F C``)."""
    return _dct_matrix_cpu(dtype).to(device)


def dct_blocks(pixels: torch.Tensor) -> torch.Tensor:
    """Forward orthonormal DCT of float blocks ``[..., 8, 8]`` (level shift is the caller's)."""
    c = dct_matrix(pixels.dtype, pixels.device)
    return c @ pixels @ c.T


def idct_blocks(coefficients: torch.Tensor) -> torch.Tensor:
    """Inverse orthonormal DCT of float blocks ``[..., 8, 8]``."""
    c = dct_matrix(coefficients.dtype, coefficients.device)
    return c.T @ coefficients @ c


# jidctint.c constants: FIX(x) = round(x * 2^13).
_CONST_BITS = 13
_PASS1_BITS = 2
_F0_298631336 = 2446
_F0_390180644 = 3196
_F0_541196100 = 4433
_F0_765366865 = 6270
_F0_899976223 = 7373
_F1_175875602 = 9633
_F1_501321110 = 12299
_F1_847759065 = 15137
_F1_961570560 = 16069
_F2_053119869 = 16819
_F2_562915447 = 20995
_F3_072711026 = 25172


def _islow_1d(x, shift: int):
    """One pass of jidctint.c on the 8 inputs ``x[0..7]`` (int32 tensors); returns the 8
    outputs descaled by ``shift`` with libjpeg's rounding (add half, arithmetic shift)."""
    # Even part.
    z2, z3 = x[2], x[6]
    z1 = (z2 + z3) * _F0_541196100
    tmp2 = z1 - z3 * _F1_847759065
    tmp3 = z1 + z2 * _F0_765366865
    z2, z3 = x[0], x[4]
    tmp0 = (z2 + z3) << _CONST_BITS
    tmp1 = (z2 - z3) << _CONST_BITS
    tmp10, tmp13 = tmp0 + tmp3, tmp0 - tmp3
    tmp11, tmp12 = tmp1 + tmp2, tmp1 - tmp2
    # Odd part.
    t0, t1, t2, t3 = x[7], x[5], x[3], x[1]
    z1, z2, z3, z4 = t0 + t3, t1 + t2, t0 + t2, t1 + t3
    z5 = (z3 + z4) * _F1_175875602
    t0 = t0 * _F0_298631336
    t1 = t1 * _F2_053119869
    t2 = t2 * _F3_072711026
    t3 = t3 * _F1_501321110
    z1 = z1 * -_F0_899976223
    z2 = z2 * -_F2_562915447
    z3 = z3 * -_F1_961570560 + z5
    z4 = z4 * -_F0_390180644 + z5
    t0 = t0 + z1 + z3
    t1 = t1 + z2 + z4
    t2 = t2 + z2 + z3
    t3 = t3 + z1 + z4
    half = 1 << (shift - 1)
    outs = (tmp10 + t3, tmp11 + t2, tmp12 + t1, tmp13 + t0,
            tmp13 - t0, tmp12 - t1, tmp11 - t2, tmp10 - t3)
    return [(o + half) >> shift for o in outs]


def idct_islow(coefficients: torch.Tensor, qtable: torch.Tensor) -> torch.Tensor:
    """libjpeg's accurate integer IDCT with dequantization and level shift, bit-exact.

    ``coefficients``: integer ``[..., 8, 8]`` quantized blocks; ``qtable``: integer tensor
    broadcastable to it. Returns uint8 ``[..., 8, 8]`` samples. Arithmetic is int32, like
    libjpeg-turbo's SIMD code that Pillow runs; out-of-range results saturate to 0..255.
    """
    shape = coefficients.shape
    x = (coefficients.to(torch.int32) * qtable.to(torch.int32)).reshape(-1, 8, 8)
    out = torch.empty(x.shape, dtype=torch.uint8, device=x.device)
    # Chunks keep the ~40 int32 temporaries of a pass in cache on CPU (3x faster than one
    # pass over a 2000x1500 image); a GPU takes everything at once.
    chunk = x.shape[0] if x.is_cuda else 4096
    for start in range(0, x.shape[0], chunk):
        xc = x[start:start + chunk].permute(1, 0, 2).contiguous()  # [v, n, u]
        # Pass 1: columns (along v), keep PASS1_BITS of extra precision.
        ws = torch.stack(_islow_1d(list(xc), _CONST_BITS - _PASS1_BITS))  # [v, n, u]
        ws = ws.permute(2, 0, 1).contiguous()  # [u, v, n]
        # Pass 2: rows (along u), remove the 2^3 DCT gain and the pass-1 scale.
        samples = torch.stack(_islow_1d(list(ws), _CONST_BITS + _PASS1_BITS + 3))  # [u, v, n]
        out[start:start + chunk] = (samples + 128).clamp_(0, 255).permute(2, 1, 0)
    return out.reshape(shape)
