"""DMCNN (Zhang et al., "DMCNN: Dual-domain multi-scale convolutional neural network for
compression artifacts removal", ICIP 2018), with the box constraint from each file's real table.

Eq. (2): ``O_D = IDCT([f(DCT(C))]_DRU)``, ``O_0 = g(C, O_D) + r O_D + (1 - r) C``.

- ``DCT(C)``: the decoded plane ``C`` is the float IDCT of the dequantized blocks, so its
  blockwise DCT *is* ``blocks * qtable`` (no transform to compute): the DCT branch gets the
  file's dequantized coefficients, ``/ 255`` (the 0..1 pixel scale), as 64 channels on the
  block grid (channel ``8 v + u`` is coefficient ``[v, u]`` of every block), so every channel
  is one frequency and its convolutions see the same frequency in neighbouring blocks.
- ``f``: the DCT auto-encoder, 9 convolutions (paper: depth 9): two at full grid, a stride-2
  encoder, two at half grid, a stride-2 transposed decoder with a symmetric skip, two more and
  the output; it predicts a residual on the coefficients (residual learning, Sec. 2.1).
- ``[.]_DRU`` (eq. 6): clamp every coefficient into ``[C - Q/2, C + Q/2]`` with the file's real
  table ``Q`` and integer coefficients ``C`` (:func:`kdecode.ops.clamp_blocks`: the CUDA kernel
  on GPUs). ``dru=False`` drops it (the ablation the issue asks for).
- ``g``: the pixel auto-encoder, 15 convolutions (paper: depth 15) on ``[C, O_D]``: full
  resolution, two stride-2 encoders down to a quarter, then dilated 3x3 convolutions with
  dilations 2, 4, 8 (Sec. 2.2), two stride-2 transposed decoders with symmetric skips, and
  side outputs at 1/4 and 1/2 for the multi-scale loss.
- ``r``: one learnable scalar, initialised to 0.5 (Sec. 3.1); PReLU everywhere, slopes 0.1.

Loss (eq. 7): ``sum_i theta^i MSE(O_i, O_i*) + lambda MSE(O_D, O*)`` with ``theta = 0.618``,
``lambda = 0.9``. The paper writes ``theta_i``; we read it as powers of ``theta`` (weights 1,
0.618, 0.382 for scales 1, 1/2, 1/4). ``O_i*`` is the original average-pooled by ``2^i``; the
side output ``O_i`` is the residual of its decoder level added to the pooled base
``r O_D + (1 - r) C``. Layer widths are not in the paper's text: ``features`` (default 64)
at full resolution and for the DCT branch, twice that below.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import blocks_to_planes, clamp_blocks
from .coefficient import CoefficientRestorer
from .pixel import _init_last_small

THETA, LAMBDA = 0.618, 0.9
#: the output scales of the pixel branch, full first: the multi-scale loss's ``O_0, O_1, O_2``
SCALES = (1, 2, 4)


def _conv(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    """3x3 convolution + PReLU (slope 0.1, Sec. 3.1), padded to keep the grid."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation),
                         nn.PReLU(cout, init=0.1))


def _up(cin: int, cout: int) -> nn.Sequential:
    """Stride-2 transposed convolution (exact 2x upsampling of an even grid) + PReLU."""
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1), nn.PReLU(cout, init=0.1))


class DCTBranch(nn.Module):
    """``f``: coefficient channels ``[N, 64, bh, bw]`` (bh, bw even) -> their residual."""

    def __init__(self, features: int = 64):
        super().__init__()
        f = features
        self.head = nn.Sequential(_conv(64, f), _conv(f, f))                 # 1-2
        self.down = nn.Sequential(_conv(f, f, stride=2), _conv(f, f), _conv(f, f))  # 3-5
        self.up = _up(f, f)                                                     # 6
        self.tail = nn.Sequential(_conv(f, f), _conv(f, f))                    # 7-8
        self.out = nn.Conv2d(f, 64, 3, padding=1)                               # 9
        _init_last_small(self.out)

    def forward(self, x):
        skip = self.head(x)
        return self.out(self.tail(self.up(self.down(skip)) + skip))


class PixelBranch(nn.Module):
    """``g``: ``[N, 2, H, W]`` (C and O_D; H, W multiples of 4) -> residuals at full, 1/2 and 1/4
    resolution (the last two only for the multi-scale loss)."""

    def __init__(self, features: int = 64):
        super().__init__()
        f, f2 = features, 2 * features
        self.enc1 = _conv(2, f)                                                 # 1 (full)
        self.enc2 = nn.Sequential(_conv(f, f2, stride=2), _conv(f2, f2))       # 2-3 (1/2)
        self.enc4 = nn.Sequential(_conv(f2, f2, stride=2), _conv(f2, f2))      # 4-5 (1/4)
        self.dilated = nn.Sequential(*(_conv(f2, f2, dilation=d) for d in (2, 4, 8)), _conv(f2, f2))  # 6-9
        self.dec2 = _up(f2, f2)                                                 # 10 (1/2) + skip 3
        self.mid2 = _conv(f2, f2)                                               # 11
        self.dec1 = _up(f2, f)                                                  # 12 (full) + skip 1
        self.tail = nn.Sequential(_conv(f, f), _conv(f, f))                    # 13-14
        self.out = nn.Conv2d(f, 1, 3, padding=1)                                # 15
        self.side4 = nn.Conv2d(f2, 1, 3, padding=1)
        self.side2 = nn.Conv2d(f2, 1, 3, padding=1)
        for layer in (self.out, self.side4, self.side2):
            _init_last_small(layer)

    def forward(self, x, side_outputs: bool = False):
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        m4 = self.dilated(self.enc4(e2))
        m2 = self.mid2(self.dec2(m4) + e2)
        out = self.out(self.tail(self.dec1(m2) + e1))
        return (out, self.side2(m2), self.side4(m4)) if side_outputs else (out,)


class DMCNNNet(nn.Module):
    """Both branches and ``r``: what a weights file holds."""

    def __init__(self, features: int = 64, dru: bool = True):
        super().__init__()
        self.dru = dru
        self.dct = DCTBranch(features)
        self.pixel = PixelBranch(features)
        self.r = nn.Parameter(torch.tensor(0.5))

    def coefficients(self, blocks: torch.Tensor, qtable: torch.Tensor, intervals=None) -> torch.Tensor:
        """The DCT branch: integer blocks ``[N, bh, bw, 8, 8]`` + real tables (``[8, 8]`` or
        ``[N, 8, 8]``) -> restored float coefficients, dequantized scale, same shape; inside
        every coefficient's quantization interval when the DRU is on. ``intervals``: (integer
        coefficients, table) of those intervals; default the blocks' own, ``(blocks, qtable)``."""
        n, bh, bw = blocks.shape[:3]
        q = qtable.float()
        q = q if q.dim() == 2 else q[:, None, None]
        # The coefficients stay float32 under autocast: the DRU's interval is exact arithmetic.
        with torch.autocast(blocks.device.type, enabled=False):
            coefficients = blocks.float() * q / 255.0                              # DCT(C), 0..1 scale
            channels = coefficients.reshape(n, bh, bw, 64).permute(0, 3, 1, 2)
            # The stride-2 level needs an even grid: repeat the last block row/column, crop after.
            ph, pw = bh % 2, bw % 2
            x = F.pad(channels, (0, pw, 0, ph), mode="replicate") if ph or pw else channels
        residual = self.dct(x.contiguous(memory_format=torch.channels_last)).float()[..., :bh, :bw]
        with torch.autocast(blocks.device.type, enabled=False):
            estimate = (coefficients + residual.permute(0, 2, 3, 1).reshape(n, bh, bw, 8, 8)) * 255.0
            return clamp_blocks(estimate, *(intervals or (blocks, qtable))) if self.dru else estimate

    def forward(self, blocks: torch.Tensor, qtable: torch.Tensor, side_outputs: bool = False, intervals=None):
        """Integer blocks ``[N, bh, bw, 8, 8]`` + real tables -> ``(O_0, [O_1, O_2,] O_D)``:
        planes ``[N, 1, ...]`` on the 0..1 scale (``O_1, O_2`` with ``side_outputs`` only)."""
        estimate = self.coefficients(blocks, qtable, intervals)
        with torch.autocast(blocks.device.type, enabled=False):
            plane_c = blocks_to_planes(blocks, qtable)[:, None] / 255.0  # C: the float decode
            plane_d = blocks_to_planes(estimate)[:, None] / 255.0         # O_D
            base = self.r * plane_d + (1 - self.r) * plane_c
        residuals = self.pixel(torch.cat([plane_c, plane_d], 1).contiguous(memory_format=torch.channels_last),
                               side_outputs)
        outputs = [(F.avg_pool2d(base, s) if s > 1 else base) + res.float() for s, res in zip(SCALES, residuals)]
        return (*outputs, plane_d)


class DMCNN(CoefficientRestorer):
    """DMCNN as a :class:`Decoder` (luma restored from its blocks and the file's real table;
    chroma exact). ``quality``: the training quality (see :class:`CoefficientRestorer`)."""

    name = "dmcnn"
    loss_description = f"multi-scale MSE (theta {THETA}: weights 1, {THETA}, {THETA ** 2:.3f}) + {LAMBDA} x DCT-branch MSE"
    input_description = "quantized coefficient blocks and the file's real qtable"

    def __init__(self, features: int = 64, dru: bool = True, quality: int | None = None):
        super().__init__()
        self.quality = quality
        self.net = DMCNNNet(features, dru)
        self.net.to(memory_format=torch.channels_last)

    #: measured reach of one block's change: 168 samples (21 blocks); the DCT branch's stride-2
    #: level needs tile origins on even blocks
    margin_blocks, tile_multiple = 22, 2
    #: mirrored context at the image edge: LIVE1_gray q10 29.411 -> 29.418 dB with 2 blocks, 29.417
    #: with 4 or 8 (docs/dual_domain.md)
    edge_blocks = 2

    def forward(self, blocks: torch.Tensor, qtable: torch.Tensor) -> torch.Tensor:
        """Integer blocks ``[N, bh, bw, 8, 8]`` + tables -> restored luma ``[N, 1, 8 bh, 8 bw]``
        (large inputs in tiles: :meth:`~CoefficientRestorer.tiled`)."""
        with self.autocast(blocks.device.type):
            return self.tiled(lambda b, q: self.net(b, q, intervals=self.interval_blocks(b, q))[0], blocks, qtable)

    def training_loss(self, plane: torch.Tensor, target: torch.Tensor, side_weight: float = 1.0,
                      output_loss=F.mse_loss) -> torch.Tensor:
        """Eq. (7) for float decoded planes and originals ``[N, 1, H, W]`` (H, W multiples of 8:
        the block-aligned training patches). ``side_weight`` scales the terms other than the
        output's MSE (1: the paper's loss; 0: the output alone, which is what PSNR measures, with
        ``output_loss`` in place of its MSE)."""
        target = target.float()
        if side_weight == 0:
            return output_loss(self.net(*self.plane_blocks(plane))[0], target)
        if output_loss is not F.mse_loss:
            raise ValueError("another output loss than eq. 7's MSE needs side_weight 0")
        *outputs, plane_d = self.net(*self.plane_blocks(plane), side_outputs=True)
        loss = side_weight * LAMBDA * F.mse_loss(plane_d, target)
        for i, (s, out) in enumerate(zip(SCALES, outputs)):
            weight = THETA ** i * (side_weight if i else 1.0)
            loss = loss + weight * F.mse_loss(out, F.avg_pool2d(target, s) if s > 1 else target)
        return loss
