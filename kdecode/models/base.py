"""The decoder interface every model implements."""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from ..jpeg.coefficients import JpegCoefficients
from ..ops import exact_cpu
from ..pipeline import (component_blocks, decode_exact, decode_exact_many, decode_restoring_luma,
                        decode_restoring_luma_many)


#: what :meth:`Decoder.set_precision` accepts
PRECISIONS = ("float32", "bfloat16")


class Decoder(nn.Module):
    """A model that turns :class:`JpegCoefficients` into pixels.

    ``decode(coeffs, device)`` returns uint8 ``[C, H, W]`` (C = 1 for gray files, 3 for colour),
    the same shape the exact decode returns.
    """

    name = "decoder"
    #: ``"float32"``, or ``"bfloat16"``: the learned layers run under bf16 autocast (tensor
    #: cores on a GPU), while what carries the image itself (decoded planes, residual sums) or
    #: exact intervals stays float32 (each model's code says where). Set with
    #: :meth:`set_precision`; ``kdecode eval --precision`` measures what it costs in quality.
    precision = "float32"

    def set_precision(self, precision: str) -> "Decoder":
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.precision = precision
        return self

    def autocast(self, device_type: str):
        """The context the learned layers run in: bf16 autocast for ``precision="bfloat16"``;
        otherwise none of its own, so training's autocast (or a caller's) still applies."""
        if self.precision == "bfloat16":
            return torch.autocast(device_type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def decode(self, coeffs: JpegCoefficients, device=None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def decode_many(self, coeffs: list[JpegCoefficients], device=None, placed: tuple | None = None) -> list[torch.Tensor]:
        """Decode a group of images (``decode_batch`` on a GPU hands over its groups): one uint8
        ``[C, H, W]`` per image, in order, each what :meth:`decode` gives it. This default
        decodes them one by one; the decoders override it to run the images of one geometry
        as one batch (:func:`kdecode.pipeline.decode_restoring_luma_many`). ``placed``: their
        blocks and tables already on ``device`` (:func:`kdecode.pipeline.decode_exact_many`),
        which a decoder may read instead of uploading ``coeffs``' arrays."""
        return [self.decode(c, device) for c in coeffs]


class ExactDecoder(Decoder):
    """No learned parameters: libjpeg-turbo's integer pipeline, bit-exact with Pillow."""

    name = "exact"

    def decode(self, coeffs: JpegCoefficients, device=None) -> torch.Tensor:
        return decode_exact(coeffs, device)

    def decode_many(self, coeffs: list[JpegCoefficients], device=None, placed: tuple | None = None) -> list[torch.Tensor]:
        if exact_cpu.usable(device):  # the C path: image by image, already at full speed
            return [decode_exact(c, device) for c in coeffs]
        return decode_exact_many(coeffs, device, placed)


class LumaRestorer(Decoder):
    """A decoder that restores the luma plane (component 0 of gray and YCbCr files) and keeps
    the exact decode of chroma (and of files without luma). A model implements
    :meth:`restore_blocks`; one image and a batch of one geometry go through it alike, so
    ``decode_many`` gives what ``decode`` gives (up to the last bit of a batched convolution)."""

    #: the training patches' symmetries (:data:`~kdecode.train.data.AUGMENTATIONS`): a pixel
    #: model sees no table, so transposed patches are more of the same kind of artifact
    augment = "dihedral"
    #: blocks of mirrored image put around the block grid at inference and cropped off after
    #: (:func:`~kdecode.ops.mirror_blocks`): the convolutions' zero padding then falls outside
    #: the image, and the samples at its edge are restored with context, as the training
    #: patches' were. Set per model from its measured gain (a multiple of its tile_multiple).
    edge_blocks = 0

    def restore_blocks(self, blocks: torch.Tensor, qtables: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Luma blocks int16 ``[N, bh, bw, 8, 8]`` of images of one geometry, their tables
        ``[N, 8, 8]`` and the plane's real size ``(h, w)`` -> restored uint8 ``[N, h, w]``."""
        raise NotImplementedError  # pragma: no cover

    def _device(self, device) -> torch.device:
        device = torch.device(device) if device is not None else next(self.parameters()).device
        self.to(device)
        return device

    def decode(self, coeffs: JpegCoefficients, device=None) -> torch.Tensor:
        return decode_restoring_luma(coeffs, self._restore_luma, self._device(device))

    def decode_many(self, coeffs: list[JpegCoefficients], device=None, placed: tuple | None = None) -> list[torch.Tensor]:
        """Images of one geometry restored as one batch (:meth:`restore_blocks` once)."""
        return decode_restoring_luma_many(coeffs, self.restore_blocks, self._device(device), placed)

    def _restore_luma(self, coeffs: JpegCoefficients, device) -> torch.Tensor:
        blocks, qtable = component_blocks(coeffs, 0, device)
        return self.restore_blocks(blocks[None], qtable[None], coeffs.component_size(0))[0]
