"""Moving between block grids ``[..., bh, bw, 8, 8]`` and sample planes ``[..., bh*8, bw*8]``."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def blocks_to_plane(blocks: torch.Tensor) -> torch.Tensor:
    """``[..., bh, bw, 8, 8]`` -> ``[..., bh*8, bw*8]``."""
    *lead, bh, bw, _, _ = blocks.shape
    return blocks.transpose(-3, -2).reshape(*lead, bh * 8, bw * 8)


def plane_to_blocks(plane: torch.Tensor) -> torch.Tensor:
    """``[..., H, W]`` (H, W multiples of 8) -> ``[..., H/8, W/8, 8, 8]``."""
    *lead, h, w = plane.shape
    if h % 8 or w % 8:
        raise ValueError(f"plane size {h}x{w} is not a multiple of 8; pad it first (pad_to_blocks)")
    return plane.reshape(*lead, h // 8, 8, w // 8, 8).transpose(-3, -2)


def pad_to_blocks(plane: torch.Tensor, multiple: int = 8) -> torch.Tensor:
    """Pad ``[..., H, W]`` on the bottom/right by edge replication to a multiple of ``multiple``
    (what a JPEG encoder does at the image edge)."""
    h, w = plane.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if not ph and not pw:
        return plane
    lead = plane.shape[:-2]
    x = plane.reshape(-1, 1, h, w)
    dtype = x.dtype
    if not x.is_floating_point():
        x = x.float()
    x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    return x.to(dtype).reshape(*lead, h + ph, w + pw)
