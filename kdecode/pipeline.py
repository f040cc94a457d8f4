"""From :class:`JpegCoefficients` to pixels: the stages every decoder shares.

``component_planes`` turns each component's blocks into its sample plane (exact islow IDCT or
float IDCT), cropped to the component's real size; ``assemble`` upsamples chroma and converts
colour. The exact decode is these two with integer arithmetic; a restoring model replaces
(some of) the planes between them.
"""
from __future__ import annotations

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
