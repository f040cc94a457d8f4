"""Tensor ops on JPEG blocks, batched over leading dimensions and device-agnostic.

Shapes: blocks are ``[..., 8, 8]`` in natural order (``[v, u]``); planes are ``[..., H, W]``;
colour images are ``[..., 3, H, W]``. Every op here is the torch reference; the CUDA kernels in
``csrc/`` are checked against these.
"""
from .blocks import blocks_to_plane, pad_to_blocks, plane_to_blocks
from .color import rgb_to_ycbcr, ycbcr_to_rgb
from .dct import dct_blocks, dct_matrix, idct_blocks, idct_islow
from .quant import clamp_to_interval, dequantize, quantize
from .upsample import upsample

__all__ = ["blocks_to_plane", "pad_to_blocks", "plane_to_blocks", "rgb_to_ycbcr", "ycbcr_to_rgb",
           "dct_blocks", "dct_matrix", "idct_blocks", "idct_islow", "clamp_to_interval", "dequantize",
           "quantize", "upsample"]
