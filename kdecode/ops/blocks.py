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


def mirror_blocks(blocks: torch.Tensor, count: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Extend a coefficient block grid ``[..., bh, bw, 8, 8]`` by mirrored blocks on every side:
    the coefficients of the image reflected about its block-grid edges (half-sample symmetric,
    the edge samples repeated). Mirroring a block's columns multiplies coefficient ``u`` by
    ``(-1)^u`` (rows: ``v``), so the result is exact and integers stay integers.

    ``count`` blocks a side, at most the grid's own size on each axis. Returns the grid and the
    blocks added on each side ``(rows, columns)``, to crop the result by."""
    if count <= 0:
        return blocks, (0, 0)
    *_, bh, bw, _, _ = blocks.shape
    rows, cols = min(count, bh), min(count, bw)
    odd = torch.tensor([1, -1] * 4, dtype=blocks.dtype, device=blocks.device)  # (-1)^u, (-1)^v

    def mirrored(part: torch.Tensor, axis: int) -> torch.Tensor:
        """``part`` in reverse block order along ``axis`` (-3: columns, -4: rows), each block mirrored."""
        return torch.flip(part, [axis]) * (odd if axis == -3 else odd[:, None])

    grid = torch.cat([mirrored(blocks[..., :cols, :, :], -3), blocks, mirrored(blocks[..., bw - cols:, :, :], -3)], -3)
    grid = torch.cat([mirrored(grid[..., :rows, :, :, :], -4), grid, mirrored(grid[..., bh - rows:, :, :, :], -4)], -4)
    return grid, (rows, cols)
