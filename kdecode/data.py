"""torch data pipelines that read JPEGs: a :class:`JpegFolder` dataset of coefficients and
:func:`collate_coefficients`, which batches them for a ``DataLoader``.

    loader = DataLoader(JpegFolder("photos/"), batch_size=32, num_workers=2,
                        collate_fn=collate_coefficients, pin_memory=True)
    for batch in loader:                       # CoefficientBatch
        batch = batch.to("cuda", non_blocking=True)
        batch.blocks[0]                        # int16 [N, bh, bw, 8, 8]: luma blocks, zero-padded
        images = decode_coefficient_batch(batch, model=None, device="cuda")   # uint8 [C, H, W] each

Entropy decoding runs in the loader's worker processes; the coefficients travel as int16 (a
quarter of the float pixels' size) and the GPU does the rest, from the batch's blocks there (the
exact decode in two kernel launches for the batch).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .jpeg.coefficients import JpegCoefficients
from .jpeg.reader import read_coefficients

JPEG_SUFFIXES = {".jpg", ".jpeg", ".jpe", ".jfif"}


def jpeg_files(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """JPEG files named by ``inputs``: files as given, folders searched recursively (sorted)."""
    files = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.suffix.lower() in JPEG_SUFFIXES)
        else:
            files.append(p)
    return files


class JpegFolder(Dataset):
    """JPEG files of folders (recursively) or a list of files; item ``i`` is the
    :class:`JpegCoefficients` of file ``i`` (``transform`` applied when given).
    ``read_options`` go to :func:`read_coefficients`; a bad file raises its KdecodeError."""

    def __init__(self, inputs, transform=None, **read_options):
        self.files = jpeg_files([inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs))
        self.transform = transform
        self.read_options = read_options

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        coeffs = read_coefficients(self.files[index], **self.read_options)
        return self.transform(coeffs) if self.transform else coeffs


@dataclass
class CoefficientBatch:
    """A batch of JPEGs with the same colour space and sampling.

    ``blocks[c]``: int16 ``[N, bh_max, bw_max, 8, 8]`` for component ``c``, each image's grid at
    the top left, zero blocks after it (a zero block is flat mid-grey after the IDCT);
    ``qtables``: int32 ``[N, C, 8, 8]``; ``sizes``: int64 ``[N, 2]`` (height, width) of each
    image; ``coefficients``: the images themselves (for :meth:`Decoder.decode`).
    """

    blocks: list[torch.Tensor]
    qtables: torch.Tensor
    sizes: torch.Tensor
    coefficients: list[JpegCoefficients] = field(repr=False)

    def __len__(self) -> int:
        return len(self.coefficients)

    def pin_memory(self) -> "CoefficientBatch":  # called by DataLoader(pin_memory=True)
        return CoefficientBatch([b.pin_memory() for b in self.blocks], self.qtables.pin_memory(),
                                self.sizes.pin_memory(), self.coefficients)

    def to(self, device, non_blocking: bool = False) -> "CoefficientBatch":
        return CoefficientBatch([b.to(device, non_blocking=non_blocking) for b in self.blocks],
                                self.qtables.to(device, non_blocking=non_blocking),
                                self.sizes.to(device, non_blocking=non_blocking), self.coefficients)


def collate_coefficients(items: list[JpegCoefficients], pin_memory: bool = False) -> CoefficientBatch:
    """``collate_fn`` for a DataLoader over :class:`JpegFolder`: pads every component's block
    grid to the batch's largest (zero blocks) and stacks. All images must share colour space
    and sampling (group them with a batch sampler otherwise): a ValueError names the first
    image that differs. ``pin_memory``: the blocks and tables are stacked straight into pinned
    memory (for copies to a GPU without blocking)."""
    if not items:
        raise ValueError("empty batch")
    first = items[0]
    layout = (first.color_space, [(c.h_samp, c.v_samp) for c in first.components])
    for c in items[1:]:
        if (c.color_space, [(k.h_samp, k.v_samp) for k in c.components]) != layout:
            raise ValueError(f"{c.source}: {c.color_space} {c.sampling} cannot share a batch with "
                             f"{first.source} ({first.color_space} {first.sampling})")
    blocks = []
    for k in range(len(first.components)):
        grids = [c.components[k].blocks for c in items]
        bh = max(g.shape[0] for g in grids)
        bw = max(g.shape[1] for g in grids)
        same = all(g.shape[:2] == (bh, bw) for g in grids)  # nothing to pad: no zero fill
        out = (torch.empty if same else torch.zeros)((len(items), bh, bw, 8, 8), dtype=torch.int16,
                                                     pin_memory=pin_memory)
        for n, g in enumerate(grids):
            out[n, :g.shape[0], :g.shape[1]] = torch.from_numpy(g)
        blocks.append(out)
    qtables = torch.from_numpy(np.stack([c.qtables for c in items]).astype(np.int32))
    qtables = qtables.pin_memory() if pin_memory else qtables
    sizes = torch.tensor([[c.height, c.width] for c in items], dtype=torch.int64)
    return CoefficientBatch(blocks, qtables, sizes, list(items))


def decode_coefficient_batch(batch: CoefficientBatch, model: str | None = "auto", device=None,
                             precision: str = "float32", flips: int = 1) -> list[torch.Tensor]:
    """Decode (restore) every image of a batch with ``model`` on ``device``: uint8
    ``[C, H, W]`` tensors on ``device``, in batch order (what ``decode(..., output="torch",
    precision=precision, flips=flips)`` returns for each file). On the device the batch is on
    (``batch.to(device)``), the decoders read the batch's blocks there rather than each image's
    arrays (``batch.coefficients``)."""
    from .decode import check_model, decoder_for
    from .models.base import RunOptions

    options = RunOptions(precision, flips)
    check_model(model, device, options)
    by_decoder: dict = {}
    for i, coeffs in enumerate(batch.coefficients):
        by_decoder.setdefault(decoder_for(coeffs, model, device, options), []).append(i)
    out: list = [None] * len(batch)
    here = batch.blocks[0].device
    want = torch.device(device) if device is not None else torch.device("cpu")
    # On the device the batch is on, decoders read its blocks there (rows of the images they
    # decode) instead of uploading each image's arrays again (the exact decode on a CPU reads the
    # arrays: its C path wants them as they are).
    on_device = want.type == here.type and want.index in (None, here.index)
    with torch.inference_mode():
        for decoder, indices in by_decoder.items():
            placed = None
            if on_device:
                placed = (batch.blocks, batch.qtables.to(here))
                if len(indices) < len(batch):
                    pick = torch.tensor(indices, device=here)
                    placed = ([b.index_select(0, pick) for b in placed[0]], placed[1].index_select(0, pick))
            images = decoder.decode_many([batch.coefficients[i] for i in indices], device, placed=placed)
            for i, image in zip(indices, images):
                out[i] = image
    return out


__all__ = ["JpegFolder", "CoefficientBatch", "collate_coefficients", "decode_coefficient_batch", "jpeg_files",
           "JPEG_SUFFIXES"]
