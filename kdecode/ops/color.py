"""YCbCr <-> RGB, JFIF full-range (ITU-R BT.601), as libjpeg does it; Adobe CMYK/YCCK as
Pillow reads it.

Integer inputs use libjpeg's 16-bit fixed-point tables (jdcolor.c), bit-exact; float inputs
use the real-valued matrix (differentiable). Channels are on ``dim`` (default -3, i.e. CHW).
"""
from __future__ import annotations

import torch

# jdcolor.c: FIX(x) = round(x * 2^16), ONE_HALF = 2^15.
_FIX_1_40200 = 91881
_FIX_1_77200 = 116130
_FIX_0_71414 = 46802
_FIX_0_34414 = 22554


def ycbcr_to_rgb(ycbcr: torch.Tensor, dim: int = -3) -> torch.Tensor:
    """``ycbcr`` with 3 channels on ``dim`` -> RGB. uint8/int in: exact libjpeg result as uint8."""
    if ycbcr.is_floating_point():
        y, cb, cr = ycbcr.unbind(dim)
        cb, cr = cb - 128, cr - 128
        r = y + 1.402 * cr
        g = y - 0.344136286 * cb - 0.714136286 * cr
        b = y + 1.772 * cb
        return torch.stack([r, g, b], dim)
    moved = ycbcr.movedim(dim, 0)
    flat = moved.reshape(3, -1)
    out = torch.empty(flat.shape, dtype=torch.uint8, device=flat.device)
    # Chunks keep the int32 temporaries in cache on CPU (a GPU takes everything at once).
    chunk = flat.shape[1] if flat.is_cuda else 1 << 16
    for s in range(0, flat.shape[1], chunk):
        y, cb, cr = flat[:, s:s + chunk].to(torch.int32)
        cb, cr = cb - 128, cr - 128
        out[0, s:s + chunk] = (y + ((_FIX_1_40200 * cr + 32768) >> 16)).clamp_(0, 255)
        out[1, s:s + chunk] = (y + ((-_FIX_0_34414 * cb - _FIX_0_71414 * cr + 32768) >> 16)).clamp_(0, 255)
        out[2, s:s + chunk] = (y + ((_FIX_1_77200 * cb + 32768) >> 16)).clamp_(0, 255)
    return out.reshape(moved.shape).movedim(0, dim)


def adobe_cmyk(samples: torch.Tensor, color_space: str, dim: int = -3) -> torch.Tensor:
    """What Pillow returns for a 4-component JPEG (mode CMYK), from its upsampled uint8 samples
    (C, M, Y, K or Y, Cb, Cr, K on ``dim``).

    Pillow takes every 4-component JPEG as Adobe's inverted CMYK (raw mode ``CMYK;I``): it
    inverts what libjpeg outputs. libjpeg outputs a CMYK file's samples as stored, and for a
    YCCK file ``255 - R, 255 - G, 255 - B`` (R, G, B as for YCbCr) and K as stored. So the
    image is ``255 - C, 255 - M, 255 - Y, 255 - K``, or ``R, G, B, 255 - K``."""
    if color_space not in ("cmyk", "ycck"):
        raise ValueError(f"color_space must be 'cmyk' or 'ycck', got {color_space!r}")
    moved = samples.movedim(dim, 0)
    if moved.shape[0] != 4 or moved.dtype != torch.uint8:
        raise ValueError(f"expected uint8 samples with 4 channels on dim {dim}, got {samples.dtype} "
                         f"{tuple(samples.shape)}")
    if color_space == "cmyk":
        return (255 - moved).movedim(0, dim)
    return torch.cat([ycbcr_to_rgb(moved[:3], dim=0), 255 - moved[3:]]).movedim(0, dim)


def rgb_to_ycbcr(rgb: torch.Tensor, dim: int = -3) -> torch.Tensor:
    """RGB -> YCbCr (float math; integer input is rounded back to uint8 like jccolor.c)."""
    x = rgb.to(torch.float64) if not rgb.is_floating_point() else rgb
    r, g, b = x.unbind(dim)
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = -0.168735892 * r - 0.331264108 * g + 0.5 * b + 128
    cr = 0.5 * r - 0.418687589 * g - 0.081312411 * b + 128
    out = torch.stack([y, cb, cr], dim)
    if rgb.is_floating_point():
        return out
    return torch.floor(out + 0.5).clamp_(0, 255).to(torch.uint8)
