"""From :class:`JpegCoefficients` to pixels: the stages every decoder shares.

``component_planes`` turns each component's blocks into its sample plane (exact islow IDCT or
float IDCT), cropped to the component's real size; ``assemble`` upsamples chroma and converts
colour. The exact decode is these two with integer arithmetic; a restoring model replaces
(some of) the planes between them.
"""
from __future__ import annotations

import torch

from .jpeg.coefficients import JpegCoefficients
from .ops import exact_cpu
from .ops import blocks_to_plane, dequantize, idct_blocks, idct_islow, upsample, ycbcr_to_rgb


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
    if exact:
        plane = blocks_to_plane(idct_islow(blocks, qtable))
    else:
        plane = blocks_to_plane(idct_blocks(dequantize(blocks, qtable))) + 128.0
    ch, cw = coeffs.component_size(index)
    return plane[:ch, :cw]


def assemble(coeffs: JpegCoefficients, planes: list[torch.Tensor]) -> torch.Tensor:
    """Upsample chroma to full size and convert to RGB (or keep gray): uint8 ``[C, H, W]``.

    ``planes`` are uint8 component planes at their real sizes (see ``component_plane``)."""
    hmax, vmax = coeffs.max_h_samp, coeffs.max_v_samp
    full = []
    for comp, plane in zip(coeffs.components, planes):
        up = upsample(plane, hmax // comp.h_samp, vmax // comp.v_samp)
        full.append(up[: coeffs.height, : coeffs.width])
    image = torch.stack(full)
    if coeffs.color_space == "ycbcr":
        image = ycbcr_to_rgb(image)
    return image


def decode_exact(coeffs: JpegCoefficients, device=None) -> torch.Tensor:
    """Bit-exact libjpeg-turbo decode (what Pillow returns): uint8 ``[C, H, W]``, C = 1 or 3.

    On CPU the C fast path (:mod:`kdecode.ops.exact_cpu`) runs when it is built; it computes
    exactly what the torch ops below compute."""
    if exact_cpu.usable(device):
        return exact_cpu.decode_exact(coeffs)
    planes = [component_plane(coeffs, i, device) for i in range(len(coeffs.components))]
    return assemble(coeffs, planes)
