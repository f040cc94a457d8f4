"""From :class:`JpegCoefficients` to pixels: the stages every decoder shares.

``component_planes`` turns each component's blocks into its sample plane (exact islow IDCT or
float IDCT), cropped to the component's real size; ``assemble`` upsamples chroma and converts
colour. The exact decode is these two with integer arithmetic; a restoring model replaces
(some of) the planes between them.
"""
from __future__ import annotations

import numpy as np
import torch

from .jpeg.coefficients import JpegCoefficients
from .ops import blocks_to_planes, exact_cpu, upsample_to_rgb


def component_blocks(coeffs: JpegCoefficients, index: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(int16 blocks ``[bh, bw, 8, 8]``, int32 qtable ``[8, 8]``) of one component on ``device``."""
    comp = coeffs.components[index]
    blocks = torch.from_numpy(comp.blocks)
    qtable = torch.from_numpy(comp.qtable.astype("int32"))
    if device is not None and torch.device(device).type == "cuda":
        # Through pinned memory, the copy runs asynchronously on the current stream: the CPU
        # goes on (reading the next file in decode_batch) while the GPU copies and computes.
        return (blocks.pin_memory().to(device, non_blocking=True),
                qtable.pin_memory().to(device, non_blocking=True))
    return blocks.to(device), qtable.to(device)


def component_plane(coeffs: JpegCoefficients, index: int, device=None, exact: bool = True) -> torch.Tensor:
    """Sample plane ``[comp_h, comp_w]`` of one component: uint8 (exact islow) or float32
    (orthonormal float IDCT, level-shifted, unclamped; what pixel-domain models see)."""
    blocks, qtable = component_blocks(coeffs, index, device)
    plane = blocks_to_planes(blocks, qtable, exact=exact)
    ch, cw = coeffs.component_size(index)
    return plane[:ch, :cw]


def assemble(coeffs: JpegCoefficients, planes: list[torch.Tensor]) -> torch.Tensor:
    """Upsample chroma to full size and convert to RGB (or keep gray): uint8 ``[C, H, W]``.

    ``planes`` are uint8 component planes at their real sizes (see ``component_plane``)."""
    factors = [(coeffs.max_h_samp // c.h_samp, coeffs.max_v_samp // c.v_samp) for c in coeffs.components]
    return upsample_to_rgb(planes, factors, (coeffs.height, coeffs.width), convert=coeffs.color_space == "ycbcr")


def to_samples(plane: torch.Tensor) -> torch.Tensor:
    """A float plane on the 0..1 scale -> uint8 samples (rounded, clamped)."""
    return (plane * 255.0).round_().clamp_(0, 255).to(torch.uint8)


def decode_restoring_luma(coeffs: JpegCoefficients, restore_luma, device=None) -> torch.Tensor:
    """The exact decode with the luma plane replaced by ``restore_luma(coeffs, device)`` (uint8
    ``[comp_h, comp_w]``): uint8 ``[C, H, W]``. Luma is component 0 of gray and YCbCr files;
    other colour spaces (RGB, CMYK JPEGs) have no luma and are decoded exactly, whole."""
    restore = coeffs.color_space in ("gray", "ycbcr")
    planes = [None if i == 0 and restore else component_plane(coeffs, i, device)
              for i in range(len(coeffs.components))]
    if restore:
        planes[0] = restore_luma(coeffs, device)
    return assemble(coeffs, planes)


def decode_exact(coeffs: JpegCoefficients, device=None) -> torch.Tensor:
    """Bit-exact libjpeg-turbo decode (what Pillow returns): uint8 ``[C, H, W]``, C = 1 or 3.

    On CPU the C fast path (:mod:`kdecode.ops.exact_cpu`) runs when it is built; on a GPU the
    CUDA kernels; both compute exactly what the torch reference ops compute."""
    if exact_cpu.usable(device):
        return exact_cpu.decode_exact(coeffs)
    indices = range(len(coeffs.components))
    blocks, qtables = zip(*(component_blocks(coeffs, i, device) for i in indices))
    planes = blocks_to_planes(list(blocks), torch.stack(qtables), exact=True)  # one launch on a GPU
    sizes = [coeffs.component_size(i) for i in indices]
    return assemble(coeffs, [p[:h, :w] for p, (h, w) in zip(planes, sizes)])


def _geometry(coeffs: JpegCoefficients) -> tuple:
    """What images must share to be decoded as one batch: size, colour space and, per
    component, sampling and block grid."""
    return (coeffs.height, coeffs.width, coeffs.color_space,
            tuple((c.h_samp, c.v_samp, *c.blocks.shape[:2]) for c in coeffs.components))


def decode_exact_many(coeffs: list[JpegCoefficients], device=None) -> list[torch.Tensor]:
    """:func:`decode_exact` of many images, those of the same geometry as one batch: their
    blocks stacked into one pinned buffer per component, copied in one transfer and decoded by
    one launch of each kernel (one IDCT for all components, one upsampling+colour), instead of
    a handful of small copies and launches per image. Results in input order, each a view of
    its batch."""
    groups: dict[tuple, list[int]] = {}
    for i, c in enumerate(coeffs):
        groups.setdefault(_geometry(c), []).append(i)
    out: list = [None] * len(coeffs)
    cuda = device is not None and torch.device(device).type == "cuda"
    for indices in groups.values():
        first = coeffs[indices[0]]
        n_comp = len(first.components)
        blocks = []
        for k in range(n_comp):
            stacked = torch.empty((len(indices), *first.components[k].blocks.shape), dtype=torch.int16,
                                  pin_memory=cuda)
            for j, i in enumerate(indices):
                stacked[j].copy_(torch.from_numpy(coeffs[i].components[k].blocks))
            blocks.append(stacked.to(device, non_blocking=True) if device is not None else stacked)
        tables = torch.from_numpy(np.stack([coeffs[i].qtables for i in indices]).astype(np.int32))
        tables = tables.pin_memory() if cuda else tables
        tables = tables.to(device, non_blocking=True) if device is not None else tables
        planes = blocks_to_planes(blocks, tables, exact=True)
        sizes = [first.component_size(k) for k in range(n_comp)]
        images = assemble(first, [p[..., :h, :w] for p, (h, w) in zip(planes, sizes)])  # [n, C, H, W]
        for j, i in enumerate(indices):
            out[i] = images[j]
    return out
