"""Tensor ops on JPEG blocks, batched over leading dimensions and device-agnostic.

Shapes: blocks are ``[..., 8, 8]`` in natural order (``[v, u]``); planes are ``[..., H, W]``;
colour images are ``[..., 3, H, W]``. The ops of ``dct``, ``quant``, ``upsample``, ``color`` and
``blocks`` are the torch references; the fused ops of ``fused`` (one call for every component of
a batch) run the CUDA kernels of ``csrc/`` on GPUs and those references elsewhere (``dispatch``).
"""
from .blocks import blocks_to_plane, flip_blocks, mirror_blocks, pad_to_blocks, plane_to_blocks
from .color import adobe_cmyk, rgb_to_ycbcr, ycbcr_to_rgb
from .dct import dct_blocks, dct_matrix, idct_blocks, idct_islow
from .dispatch import FORCE_TORCH_ENV, force_torch, use_kernels
from .fused import blocks_to_planes, clamp_blocks, clamp_planes, planes_to_blocks, upsample_to_rgb
from .quant import clamp_to_interval, dequantize, quantize
from .upsample import upsample

__all__ = ["adobe_cmyk", "blocks_to_plane", "flip_blocks", "mirror_blocks", "pad_to_blocks", "plane_to_blocks",
           "rgb_to_ycbcr", "ycbcr_to_rgb", "dct_blocks", "dct_matrix", "idct_blocks", "idct_islow",
           "clamp_to_interval", "dequantize", "quantize", "upsample", "blocks_to_planes", "planes_to_blocks",
           "clamp_blocks", "clamp_planes", "upsample_to_rgb", "force_torch", "use_kernels", "FORCE_TORCH_ENV"]
