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


def flip_blocks(blocks: torch.Tensor, rows: bool = False, cols: bool = False) -> torch.Tensor:
    """The coefficient grid ``[..., bh, bw, 8, 8]`` of the image mirrored left-right (``cols``)
    and/or upside down (``rows``), padded blocks included: the block order reversed along that
    axis and each block mirrored, which multiplies coefficient ``u`` by ``(-1)^u`` (columns) or
    ``v`` by ``(-1)^v`` (rows). Exact: integers stay integers and the table is unchanged."""
    if not (rows or cols):  # the one-pass decode's grid: nothing to make (a copy to the GPU)
        return blocks
    odd = torch.tensor([1, -1] * 4, dtype=blocks.dtype, device=blocks.device)
    if cols:
        blocks = torch.flip(blocks, [-3]) * odd
    if rows:
        blocks = torch.flip(blocks, [-4]) * odd[:, None]
    return blocks


def mirror_blocks(blocks: torch.Tensor, count: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Extend a coefficient block grid ``[..., bh, bw, 8, 8]`` by mirrored blocks on every side:
    the coefficients of the image reflected about its block-grid edges (half-sample symmetric,
    the edge samples repeated), exact as :func:`flip_blocks` is.

    ``count`` blocks a side, at most the grid's own size on each axis. Returns the grid and the
    blocks added on each side ``(rows, columns)``, to crop the result by."""
    if count <= 0:
        return blocks, (0, 0)
    *_, bh, bw, _, _ = blocks.shape
    rows, cols = min(count, bh), min(count, bw)
    grid = torch.cat([flip_blocks(blocks[..., :cols, :, :], cols=True), blocks,
                      flip_blocks(blocks[..., bw - cols:, :, :], cols=True)], -3)
    grid = torch.cat([flip_blocks(grid[..., :rows, :, :, :], rows=True), grid,
                      flip_blocks(grid[..., bh - rows:, :, :, :], rows=True)], -4)
    return grid, (rows, cols)
