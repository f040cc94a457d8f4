"""Chroma upsampling as libjpeg-turbo does it (jdsample.c).

``upsample(plane, h_factor, v_factor)`` takes a component plane cropped to its real size
(``ceil(width * h_samp / max_h_samp)`` columns, likewise rows) and returns it ``h_factor`` times
wider and ``v_factor`` times taller. 2x1, 1x2 and 2x2 use libjpeg's "fancy" triangular filter
(3/4 nearer sample, 1/4 farther one, edges replicated at the real size); everything else, and
2x1/2x2 when the plane is at most 2 samples wide, is plain replication, as libjpeg does.

Integer tensors get libjpeg's exact rounding biases; float tensors get the same filter without
rounding (differentiable, for models).
"""
from __future__ import annotations

import torch


def _shift(x: torch.Tensor, dim: int, step: int) -> torch.Tensor:
    """Neighbour along ``dim`` (step -1: previous, +1: next) with the edge sample replicated."""
    n = x.shape[dim]
    if n == 1:
        return x
    if step < 0:
        return torch.cat([x.narrow(dim, 0, 1), x.narrow(dim, 0, n - 1)], dim)
    return torch.cat([x.narrow(dim, 1, n - 1), x.narrow(dim, n - 1, 1)], dim)


def _pairs(a: torch.Tensor, b: torch.Tensor, dim: int) -> torch.Tensor:
    d = dim if dim >= 0 else a.dim() + dim
    out = torch.stack([a, b], dim=d + 1)
    shape = list(a.shape)
    shape[d] *= 2
    return out.reshape(shape)


def _triangle(x: torch.Tensor, dim: int, bias_prev, bias_next, shift: int) -> torch.Tensor:
    """2x upsampling along ``dim``: 3*x + neighbour, then (+bias) >> shift for integers."""
    prev, nxt = _shift(x, dim, -1), _shift(x, dim, +1)
    a, b = 3 * x + prev, 3 * x + nxt
    if x.is_floating_point():
        if shift:
            a, b = a / (1 << shift), b / (1 << shift)
    elif shift:
        a, b = (a + bias_prev) >> shift, (b + bias_next) >> shift
    return _pairs(a, b, dim)


def plane_geometry(height: int, width: int, sampling: list[tuple[int, int]]) -> list[tuple[int, int, int, int, int]]:
    """``(ch, cw, hf, vf, mode)`` of each component (``(h_samp, v_samp)`` each) of a ``height x
    width`` image: its plane's real size as libjpeg computes it, its upsampling factors and its
    filter (:func:`fancy_mode`)."""
    h_max, v_max = max(h for h, _ in sampling), max(v for _, v in sampling)
    geometry = []
    for h_samp, v_samp in sampling:
        hf, vf = h_max // h_samp, v_max // v_samp
        ch, cw = -(-height * v_samp // v_max), -(-width * h_samp // h_max)
        geometry.append((ch, cw, hf, vf, fancy_mode(hf, vf, cw)))
    return geometry


def fancy_mode(h_factor: int, v_factor: int, width: int, fancy: bool = True) -> int:
    """Which filter libjpeg-turbo uses for a plane ``width`` samples wide: 0 replication,
    1 fancy h2v1, 2 fancy h1v2, 3 fancy h2v2 (the codes of csrc/color.cu)."""
    if fancy and h_factor == 2 and v_factor == 1 and width > 2:
        return 1
    if fancy and h_factor == 1 and v_factor == 2:
        return 2
    if fancy and h_factor == 2 and v_factor == 2 and width > 2:
        return 3
    return 0


def upsample(plane: torch.Tensor, h_factor: int, v_factor: int, fancy: bool = True) -> torch.Tensor:
    """Upsample ``[..., h, w]`` by integer factors; see the module docstring for the rules."""
    if h_factor == 1 and v_factor == 1:
        return plane
    integer = not plane.is_floating_point()
    x = plane.to(torch.int32) if integer else plane
    mode = fancy_mode(h_factor, v_factor, x.shape[-1], fancy)
    if mode == 1:
        out = _triangle(x, -1, 1, 2, 2)  # h2v1_fancy_upsample
    elif mode == 2:
        out = _triangle(x, -2, 1, 2, 2)  # h1v2_fancy_upsample (libjpeg-turbo)
    elif mode == 3:
        # h2v2_fancy_upsample: vertical 3:1 column sums (no rounding), then horizontal 3:1
        # with biases 8 and 7 and a single >> 4.
        cols = _triangle(x, -2, 0, 0, 0)
        out = _triangle(cols, -1, 8, 7, 4)
    else:
        out = x.repeat_interleave(v_factor, dim=-2).repeat_interleave(h_factor, dim=-1)
    return out.to(plane.dtype) if integer else out
