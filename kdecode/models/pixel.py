"""Pixel-domain restoring decoders: decode (float IDCT), then restore the luma plane.

A :class:`PixelRestorer` is a :class:`Decoder` whose learned part ``net`` maps a float luma
plane ``[N, 1, H, W]`` scaled to 0..1 (the float IDCT of the file's blocks with its real
qtable, level-shifted, unclamped: exactly ``component_plane(..., exact=False) / 255``) to a
residual; the restored plane is ``plane + net(plane)``, clamped into the file's quantization box
(:attr:`LumaRestorer.output_box`) and rounded to uint8. Chroma keeps the exact decode; a gray
file is restored whole. Training calls :meth:`restore` on the same float planes, so the network
learns on what inference feeds it (the box, applied after it, is not trained through).
"""
from __future__ import annotations

import torch
from torch import nn

from ..ops import blocks_to_planes, mirror_blocks
from .base import LumaRestorer


class PixelRestorer(LumaRestorer):
    """Residual restoration of the luma plane by ``net`` (see the module docstring)."""

    #: the side lengths the net needs (padding by edge replication is done in :meth:`restore`)
    multiple = 1
    #: mirrored context at the image edge (:attr:`LumaRestorer.edge_blocks`), LIVE1_gray q10:
    #: AR-CNN 29.101 -> 29.119 dB, Fast AR-CNN 29.053 -> 29.062, DCSC 29.127 -> 29.135
    edge_blocks = 1

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def restore(self, plane: torch.Tensor) -> torch.Tensor:
        """float ``[N, 1, H, W]`` (0..1 scale) -> restored float plane, same shape.

        The residual is added in float32 even when ``net`` runs under autocast: a bf16 plane
        would lose a grey level near white."""
        h, w = plane.shape[-2:]
        x = plane
        ph, pw = (-h) % self.multiple, (-w) % self.multiple
        if ph or pw:
            x = nn.functional.pad(x, (0, pw, 0, ph), mode="replicate")
        # channels_last: about 1.5x faster convolutions on CPU (measured), no loss on GPU.
        with self.autocast(x.device.type):
            residual = self.net(x.contiguous(memory_format=torch.channels_last))[..., :h, :w]
        return plane + residual.float()

    def restore_grid(self, blocks: torch.Tensor, qtables: torch.Tensor, window: tuple[int, int, int, int]) -> torch.Tensor:
        """The float IDCT of the luma blocks with their tables (the grid extended by
        :attr:`edge_blocks`), restored (:class:`LumaRestorer`)."""
        (bh, bw), (grid, (rows, cols)) = blocks.shape[1:3], mirror_blocks(blocks, self.edge_blocks)
        luma = blocks_to_planes(grid, qtables, exact=False)
        if self.edge_blocks:
            restored = self.restore(luma[:, None] / 255.0)
            return restored[:, 0, 8 * rows:8 * (rows + bh), 8 * cols:8 * (cols + bw)].float() * 255.0
        # The image's own edge, not the encoder's padding: the image alone is restored, then
        # padded as the encoder pads, by repeating its edge samples.
        top, left, h, w = window
        plane = self.restore(luma[:, None, top:top + h, left:left + w] / 255.0).float() * 255.0
        return nn.functional.pad(plane, (left, 8 * bw - w - left, top, 8 * bh - h - top), mode="replicate")[:, 0]


class ARCNN(nn.Module):
    """AR-CNN ``64(9)-32(7)-16(1)-1(5)`` with PReLU (Dong et al., Sec. III-B): feature
    extraction, feature enhancement, mapping, reconstruction. Output: the residual."""

    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(1, 64, 9, padding=4), nn.PReLU(64),
            nn.Conv2d(64, 32, 7, padding=3), nn.PReLU(32),
            nn.Conv2d(32, 16, 1), nn.PReLU(16),
            nn.Conv2d(16, 1, 5, padding=2),
        )
        _init_last_small(self.layers[-1])

    def forward(self, x):
        return self.layers(x)


class FastARCNN(nn.Module):
    """Fast AR-CNN ``64(9)-32(1)-32(7)-64(1)-1[9]-s2`` (Sec. IV-B): stride-2 feature
    extraction, 1x1 shrinking, 7x7 enhancement, 1x1 expanding (mapping), stride-2 9x9
    deconvolution. The middle layers run on a quarter of the pixels. Needs even sizes.

    The deconvolution's parameters are a ``ConvTranspose2d``; it runs as the equivalent
    sub-pixel convolution (one 5x5 convolution to the 4 output phases, then a pixel shuffle),
    which CPU convolution libraries run several times faster than a strided transpose."""

    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(1, 64, 9, stride=2, padding=4), nn.PReLU(64),
            nn.Conv2d(64, 32, 1), nn.PReLU(32),
            nn.Conv2d(32, 32, 7, padding=3), nn.PReLU(32),
            nn.Conv2d(32, 64, 1), nn.PReLU(64),
        )
        self.deconv = nn.ConvTranspose2d(64, 1, 9, stride=2, padding=4, output_padding=1)
        _init_last_small(self.deconv)
        # Output phase p (0, 1) at low-res offset j (-2..2) reads deconvolution tap 4 + p - 2j.
        taps = torch.tensor([[4 + p - 2 * j for j in range(-2, 3)] for p in range(2)])
        self.register_buffer("_taps", taps, persistent=False)
        self._cached = (None, None)  # inference: (key of the deconvolution weights, subpixel weight)

    def subpixel_weight(self) -> torch.Tensor:
        """``[4, 64, 5, 5]``: the deconvolution as a convolution to the 2x2 output phases."""
        if torch.is_grad_enabled():
            return self._subpixel_weight()
        w = self.deconv.weight
        key = (w.data_ptr(), w._version, w.device, w.dtype)
        if self._cached[0] != key:
            self._cached = (key, self._subpixel_weight())
        return self._cached[1]

    def _subpixel_weight(self) -> torch.Tensor:
        w = nn.functional.pad(self.deconv.weight[:, 0], (0, 1, 0, 1))  # tap 9 = 0 (out of the 9x9 kernel)
        t = self._taps
        # [c, py, jy, px, jx] -> [py, px, c, jy, jx]
        w = w[:, t[:, :, None, None], t[None, None]].permute(1, 3, 0, 2, 4)
        return w.reshape(4, w.shape[2], 5, 5)

    def forward(self, x):
        features = self.layers(x)
        phases = nn.functional.conv2d(features, self.subpixel_weight().to(features.dtype),
                                      self.deconv.bias.to(features.dtype).expand(4), padding=2)
        return nn.functional.pixel_shuffle(phases, 2)


class DCSC(nn.Module):
    """Deep convolutional sparse coding (Fu et al., ICCV 2019), eq. (1), (3), (5):

    ``X = concat_d(W_d * J + b_d)`` for dilations 1, 2, 4 (32 maps each);
    ``U_0 = relu(G * X)``, ``U_r = relu(G * X + S * U_{r-1})`` with one ``S`` shared by all
    ``iterations`` (R) steps; residual ``H = W_R * U_R + b_R``. All kernels 3x3, 64 maps.
    """

    def __init__(self, iterations: int = 20, features: int = 64, dilated: int = 32):
        super().__init__()
        self.iterations = iterations
        self.extract = nn.ModuleList(nn.Conv2d(1, dilated, 3, padding=d, dilation=d) for d in (1, 2, 4))
        self.G = nn.Conv2d(3 * dilated, features, 3, padding=1)
        self.S = nn.Conv2d(features, features, 3, padding=1, bias=False)
        self.reconstruct = nn.Conv2d(features, 1, 3, padding=1)
        _init_last_small(self.reconstruct)

    def forward(self, x):
        gx = self.G(torch.cat([conv(x) for conv in self.extract], dim=1))
        u = torch.relu(gx)
        for _ in range(self.iterations):
            u = torch.relu(gx + self.S(u))
        return self.reconstruct(u)


def _init_last_small(layer: nn.Module) -> None:
    # The net starts as (nearly) the identity on the plane, so training begins at the JPEG's
    # PSNR instead of far below it.
    nn.init.normal_(layer.weight, std=1e-3)
    nn.init.zeros_(layer.bias)


#: architecture name -> (net class, the side-length multiple its input is padded to)
ARCHITECTURES = {
    "arcnn": (ARCNN, 1),
    "fast_arcnn": (FastARCNN, 2),
    "dcsc": (DCSC, 1),
}


def build(name: str, **kwargs) -> PixelRestorer:
    """A fresh (untrained) restorer of architecture ``name``."""
    cls, multiple = ARCHITECTURES[name]
    model = PixelRestorer(cls(**kwargs))
    model.multiple = multiple
    model.name = name
    return model
