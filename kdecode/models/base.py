"""The decoder interface every model implements."""
from __future__ import annotations

import torch
from torch import nn

from ..jpeg.coefficients import JpegCoefficients
from ..ops import exact_cpu
from ..pipeline import decode_exact, decode_exact_many


class Decoder(nn.Module):
    """A model that turns :class:`JpegCoefficients` into pixels.

    ``decode(coeffs, device)`` returns uint8 ``[C, H, W]`` (C = 1 for gray files, 3 for colour),
    the same shape the exact decode returns.
    """

    name = "decoder"

    def decode(self, coeffs: JpegCoefficients, device=None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def decode_many(self, coeffs: list[JpegCoefficients], device=None) -> list[torch.Tensor]:
        """Decode a group of images of similar size (``decode_batch`` forms the groups; see
        :func:`kdecode.batch.group_by_size`): one uint8 ``[C, H, W]`` per image, in order.
        This default decodes them one by one; a model that runs faster on a padded batch
        overrides it."""
        return [self.decode(c, device) for c in coeffs]


class ExactDecoder(Decoder):
    """No learned parameters: libjpeg-turbo's integer pipeline, bit-exact with Pillow."""

    name = "exact"

    def decode(self, coeffs: JpegCoefficients, device=None) -> torch.Tensor:
        return decode_exact(coeffs, device)

    def decode_many(self, coeffs: list[JpegCoefficients], device=None) -> list[torch.Tensor]:
        if exact_cpu.usable(device):  # the C path: image by image, already at full speed
            return [decode_exact(c, device) for c in coeffs]
        return decode_exact_many(coeffs, device)
