"""Decoders that restore the luma plane from its coefficient blocks and the file's real table.

A :class:`CoefficientRestorer` implements ``forward(blocks, qtable)``: integer blocks
``[N, bh, bw, 8, 8]`` and their tables (``[8, 8]`` or ``[N, 8, 8]``) -> luma ``[N, 1, 8 bh,
8 bw]`` on the 0..1 scale. Inference takes the blocks and tables from the file (and clamps the
result into their quantization box, :attr:`LumaRestorer.output_box`). Training
(:meth:`restore`) gets the float planes the zoo's pipeline stores: the plane is an exact linear
image of the dequantized blocks, so the forward DCT and rounding with the training quality's
table give back the file's integer coefficients (exactly for whole-block planes such as the
block-aligned training patches; at a cropped image edge the padded blocks are approximated).
"""
from __future__ import annotations

import torch

from ..jpeg.quality import ijg_table
from ..ops import mirror_blocks, pad_to_blocks, planes_to_blocks
from .base import LumaRestorer


class CoefficientRestorer(LumaRestorer):
    """Restores luma from coefficient blocks + real table (see the module docstring).

    ``quality``: the quality the weights were trained for; only :meth:`restore` (training and
    validation on stored planes) uses its IJG table, inference uses each file's own tables."""

    quality: int | None = None
    #: samples (batch x height x width) of one inference call: a larger input runs in tiles
    #: (:meth:`tiled`), so memory stays bounded on any image size
    max_call_samples = 1 << 22
    #: blocks of context a tile needs on every side (the receptive field's reach); 0: never tiled
    margin_blocks = 0
    #: tile origins stay on multiples of this many blocks (the strides of the network's levels)
    tile_multiple = 1
    #: flips only: a transposed patch's coefficients are not those of any file with the
    #: training table (:class:`~kdecode.train.data.PatchSampler`)
    augment = "flips"

    def tiled(self, run, blocks: torch.Tensor, qtable: torch.Tensor) -> torch.Tensor:
        """``run(blocks, qtable)`` (the forward pass) on the block grid, in parts when the input
        is larger than :attr:`max_call_samples` and no gradient is needed: first whole images,
        as many a call as fit (nothing is computed twice); an image larger than that alone runs
        in tiles that carry :attr:`margin_blocks` of context on every side, so every output
        sample still sees its whole receptive field. Either way the result is the one-call one."""
        n, bh, bw = blocks.shape[:3]
        if torch.is_grad_enabled() or not self.margin_blocks or n * bh * bw * 64 <= self.max_call_samples:
            return run(blocks, qtable)
        if n > 1:
            # Tiling a batch would recompute every tile's margins in every image (64 images of
            # 512x768: 1.86x HR-CNN's work); splitting it by images recomputes nothing.
            step = max(1, self.max_call_samples // (64 * bh * bw))
            return torch.cat([self.tiled(run, blocks[i:i + step], qtable if qtable.dim() == 2 else qtable[i:i + step])
                              for i in range(0, n, step)])
        k = self.tile_multiple
        m = -(-self.margin_blocks // k) * k
        side = int((self.max_call_samples / 64) ** 0.5)  # blocks, tile + margins
        core = max(k, (side - 2 * m) // k * k)
        out = torch.empty(n, 1, 8 * bh, 8 * bw, device=blocks.device)
        for r in range(0, bh, core):
            for c in range(0, bw, core):
                r0, c0 = max(0, r - m), max(0, c - m)
                tile = run(blocks[:, r0:min(bh, r + core + m), c0:min(bw, c + core + m)], qtable)
                out[..., 8 * r:8 * (r + core), 8 * c:8 * (c + core)] = \
                    tile[..., 8 * (r - r0):8 * (r - r0 + core), 8 * (c - c0):8 * (c - c0 + core)]
        return out

    def training_table(self, device) -> torch.Tensor:
        if self.quality is None:
            raise ValueError(f"this {self.name} has no training quality: build it with quality=Q to use restore()")
        return torch.from_numpy(ijg_table(self.quality).astype("float32")).to(device)

    def plane_blocks(self, plane: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Float decoded plane ``[N, 1, H, W]`` (0..1) -> (its integer blocks, the training table)."""
        table = self.training_table(plane.device)
        return planes_to_blocks(pad_to_blocks(plane[:, 0].float() * 255.0), table), table

    def restore(self, plane: torch.Tensor) -> torch.Tensor:
        """Float decoded plane ``[N, 1, H, W]`` (0..1) -> restored plane, same shape."""
        h, w = plane.shape[-2:]
        return self(*self.plane_blocks(plane))[..., :h, :w]

    def restore_grid(self, blocks: torch.Tensor, qtables: torch.Tensor, window: tuple[int, int, int, int]) -> torch.Tensor:
        """The forward pass on the luma blocks with each file's own table (calls split by whole
        images, :meth:`tiled`), on the grid extended by :attr:`edge_blocks`; the whole grid is
        restored, padding included (:class:`LumaRestorer`)."""
        (bh, bw), (grid, (rows, cols)) = blocks.shape[1:3], mirror_blocks(blocks, self.edge_blocks)
        return self(grid, qtables)[:, 0, 8 * rows:8 * (rows + bh), 8 * cols:8 * (cols + bw)].float() * 255.0
