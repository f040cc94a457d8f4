"""Dequantization and the quantization-interval ("box") constraint."""
from __future__ import annotations

import torch


def dequantize(coefficients: torch.Tensor, qtable: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """``coefficients * qtable`` as ``dtype``; both broadcast over ``[..., 8, 8]``."""
    return coefficients.to(dtype) * qtable.to(dtype)


def quantize(coefficients: torch.Tensor, qtable: torch.Tensor) -> torch.Tensor:
    """Round float DCT coefficients to quantized integers (int16), as a JPEG encoder does
    (round half away from zero, like libjpeg's jcdctmgr.c)."""
    q = qtable.to(coefficients.dtype)
    return (torch.sign(coefficients) * torch.floor(coefficients.abs() / q + 0.5)).to(torch.int16)


def clamp_to_interval(coefficients: torch.Tensor, quantized: torch.Tensor, qtable: torch.Tensor) -> torch.Tensor:
    """Clamp float (dequantized-scale) coefficients into the interval each one was quantized
    from: ``[(c - 1/2) q, (c + 1/2) q]`` with the file's real table ``q``.

    ``coefficients``: float ``[..., 8, 8]``; ``quantized``: the integer ``c``, same shape;
    ``qtable``: broadcastable. Gradient: straight through inside the interval, zero outside
    (the usual gradient of clamp).
    """
    q = qtable.to(coefficients.dtype)
    c = quantized.to(coefficients.dtype)
    return torch.clamp(coefficients, (c - 0.5) * q, (c + 0.5) * q)
