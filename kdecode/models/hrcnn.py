"""HR-CNN (Niu, "End-to-end JPEG decoding and artifacts suppression using heterogeneous residual
convolutional neural network"): pixels straight from the coefficients, no separate decode.

The input is the file's "k-space code": each component's coefficient blocks laid out on the
image grid (block ``(r, c)`` of the grid occupies samples ``8r..8r+7, 8c..8c+7``, coefficient
``[v, u]`` at row ``8r + v``, column ``8c + u``; :func:`~kdecode.ops.blocks_to_plane`). Two
input scalings (``input=``):

- ``"quantized"``: the integer coefficients as stored in the file (what the paper feeds), in
  steps of the training quality's table: a file with another table is rescaled to them;
- ``"dequantized"``: ``coefficients * qtable / 255`` with the file's real table: the orthonormal
  DCT coefficients of the level-shifted image on the 0..1 scale, so one model sees every
  quality's coefficients on the same scale.

The network (Sec. II-B, eq. 1-8), ``HRCNNNet``:

1. channel extraction: 64 fixed one-hot 8x8 masks, stride 8, no bias (eq. 2, 4): channel
   ``ch = 8 v + u`` is coefficient ``[v, u]`` of every block, a ``[64, H/8, W/8]`` tensor;
2. spectral reconstruction: a 64 -> 64 transposed convolution, 8x8, stride 8 (eq. 5);
3. decoding: 5x5 conv to 8 channels, 3x3 conv to 1 channel, ReLU (eq. 6);
4. four residual blocks ``64(11) - 16(7) - 1(1)`` with identity skips (eq. 7) and a final
   ReLU (eq. 8). Eq. (7) has no activation inside a block; none is added here.

Trainable parameters: decoding 275,089 + detail enhancement 232,068 = 507,157 (Table III); the
masks are a constant buffer, not parameters, so no optimizer can change them and their
gradient is the mask itself (eq. 3). Output: the luma plane on the 0..1 scale; the loss is
the MSE against the original (eq. 9).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..jpeg.quality import ijg_table
from ..ops import blocks_to_plane, dct_matrix
from .coefficient import CoefficientRestorer
from .pixel import _init_last_small

INPUTS = ("quantized", "dequantized")
INITS = ("random", "idct")
#: activations inside the residual blocks: "none" (eq. 7 as printed) or "relu" (after the
#: 11x11 and 7x7 convolutions). As printed, every layer between the decoding ReLU and the
#: final one is linear, so the network is one linear filter of the coefficients followed by a
#: clamp at 0; trained, it stops gaining within a few hundred steps (model card). "relu" is the
#: usual residual block and the only change.
ACTIVATIONS = ("none", "relu")


def coded_masks() -> torch.Tensor:
    """The 64 binary coded masks of eq. (2) as conv weights ``[64, 1, 8, 8]``: mask ``ch`` has
    its single 1 at row ``ch // 8``, column ``ch % 8`` (coefficient ``[v, u]``, natural order)."""
    return torch.eye(64).reshape(64, 1, 8, 8)


class ResidualBlock(nn.Module):
    """``x + W3 * (W2 * (W1 * x))`` with ``64(11) - 16(7) - 1(1)``: no activation (eq. 7), or
    ``activation="relu"``: ``x + W3 * relu(W2 * relu(W1 * x))``."""

    def __init__(self, activation: str = "none"):
        super().__init__()
        act = [nn.ReLU()] if activation == "relu" else []
        self.layers = nn.Sequential(nn.Conv2d(1, 64, 11, padding=5), *act, nn.Conv2d(64, 16, 7, padding=3), *act,
                                    nn.Conv2d(16, 1, 1))
        # Each block starts as (nearly) the identity: with random blocks the cascade drives the
        # output below zero, where the final ReLU passes no gradient at all (measured: training
        # never moves). The paper gives no initialisation.
        _init_last_small(self.layers[-1])

    def forward(self, x):
        # The running image stays float32 under bf16 autocast: a bf16 plane holds only ~256
        # levels between 0.5 and 1, i.e. about one grey level of rounding noise.
        return x + self.layers(x).float()


class HRCNNNet(nn.Module):
    """k-space code ``[N, 1, H, W]`` (H, W multiples of 8) -> pixels ``[N, 1, H, W]`` (0..1)."""

    def __init__(self, activation: str = "none"):
        super().__init__()
        # A constant, not a parameter: never trained, not stored with the weights.
        self.register_buffer("masks", coded_masks(), persistent=False)
        self.spectral = nn.ConvTranspose2d(64, 64, 8, stride=8)
        self.decode5 = nn.Conv2d(64, 8, 5, padding=2)
        self.decode3 = nn.Conv2d(8, 1, 3, padding=1)
        self.blocks = nn.ModuleList(ResidualBlock(activation) for _ in range(4))
        # Start the decoded image at mid-grey: a negative start would sit in the ReLU's flat
        # part and pass no gradient to the decoding layers.
        nn.init.constant_(self.decode3.bias, 0.5)

    def extract(self, kspace: torch.Tensor) -> torch.Tensor:
        """Channel extraction (eq. 4): ``[N, 1, H, W]`` -> ``[N, 64, H/8, W/8]``."""
        return F.conv2d(kspace, self.masks.to(kspace.dtype), stride=8)

    def forward(self, kspace: torch.Tensor) -> torch.Tensor:
        # The decoding layers run in float32 even under bf16 autocast: they carry the image
        # itself (bf16 holds ~256 levels between 0.5 and 1: a grey level of noise) and cost
        # 7% of the network; the residual blocks (93%) run in bf16 on detail maps.
        with torch.autocast(kspace.device.type, enabled=False):
            # channels_last: about 1.6x faster convolutions on CPU (measured, 256x256, 2 threads).
            channels = self.extract(kspace.float()).contiguous(memory_format=torch.channels_last)
            x = torch.relu(self.decode3(self.decode5(self.spectral(channels))))
        for block in self.blocks:
            x = block(x)
        return torch.relu(x)


class HRCNN(CoefficientRestorer):
    """HR-CNN as a :class:`Decoder`: restores the luma plane of gray and YCbCr files from its
    coefficient blocks; chroma (and files without luma) get the exact decode.

    ``quality`` is the quality the weights were trained for; :meth:`restore` uses its IJG table
    to turn training planes back into the file's coefficients (:class:`CoefficientRestorer`).
    Inference uses each file's own tables. ``init``: ``"random"`` (PyTorch's defaults, with the start conditions commented
    below) or ``"idct"`` (start at the float JPEG decode; see :meth:`_init_idct`)."""

    name = "hrcnn"
    # One inference call holds at most max_call_samples (batch x height x width; each of the
    # network's 64-channel float32 maps takes 256 bytes a sample, 1 GiB at the default) and tiles
    # carry the receptive field's reach: 2 + 1 (decoding) + 4 x (5 + 3) (residual blocks) = 35
    # samples, within 5 blocks (the spectral layer works inside each block).
    margin_blocks = 5
    # Mirrored context at the image edge: LIVE1_gray q10 29.189 -> 29.206 dB with one block, no
    # more with 2, 3, 5 or 8. With zero padding the samples of the outermost block gained 0.16 dB
    # less than the interior; mirrored, 0.2 dB more (docs/hrcnn.md).
    edge_blocks = 1

    def __init__(self, input: str = "quantized", quality: int | None = None, init: str = "random",
                 activation: str = "none"):
        super().__init__()
        if input not in INPUTS or init not in INITS or activation not in ACTIVATIONS:
            raise ValueError(f"input must be one of {INPUTS}, init one of {INITS} and activation one of "
                             f"{ACTIVATIONS}, got {input!r}, {init!r}, {activation!r}")
        self.input, self.quality = input, quality
        self.net = HRCNNNet(activation)
        if init == "idct":
            self._init_idct()
        # channels_last weights too: with contiguous ones the CPU convolutions stay slow.
        self.net.to(memory_format=torch.channels_last)

    @torch.no_grad()
    def _init_idct(self) -> None:
        """Start at the float JPEG decode instead of a grey image (the paper gives no
        initialisation; training time on a GPU is scarce): spectral output channel 0 is the
        8x8 IDCT of the input (its basis functions, times the training table for quantized
        input), passed through the decoding layers' centre taps, plus the level shift.
        The other 63 spectral channels and 7 decoding channels keep their random start."""
        net = self.net
        c = dct_matrix(torch.float64)
        basis = torch.einsum("vy,ux->vuyx", c, c).reshape(64, 8, 8)  # ch = 8v + u -> block [y, x]
        if self.input == "quantized":
            basis = basis * self.training_table("cpu").double().reshape(64, 1, 1) / 255.0
        net.spectral.weight[:, 0] = basis.float()
        net.spectral.bias[0] = 0.0
        net.decode5.weight[0] = 0.0
        net.decode5.weight[0, 0, 2, 2] = 1.0
        net.decode5.bias[0] = 0.0
        net.decode3.weight.zero_()
        net.decode3.weight[0, 0, 1, 1] = 1.0
        net.decode3.bias.fill_(0.5)

    @torch.no_grad()
    def transfer_from(self, source: dict) -> None:
        """Adapt weights trained as ``source`` (their card's ``arch_kwargs``: ``quality``,
        ``input``) to start training as this model: another quality (the easy-to-hard transfer)
        or the other input. Each input is the dequantized coefficient ``c x table / 255`` times a
        factor per coefficient (:meth:`input_factor`), so the spectral layer's weights for
        coefficient ``ch`` are scaled by ``old factor / new factor``: the start then restores
        every file exactly as the old weights do. Quantized input without a training quality
        (the raw integers) has no fixed factor: nothing is changed then."""
        old = self.input_factor(source.get("input", "quantized"), source.get("quality"))
        new = self.input_factor(self.input, self.quality)
        if old is None or new is None:
            return
        weight = self.net.spectral.weight  # ConvTranspose2d: [in = coefficient ch, out, 8, 8]
        weight.mul_((old / new).reshape(64, 1, 1, 1).to(weight))

    @staticmethod
    def input_factor(input: str, quality: int | None) -> torch.Tensor | None:
        """What :meth:`kspace` multiplies the dequantized coefficients (``c x table / 255``) by,
        per coefficient ``ch`` (float32 ``[64]``): 1 for dequantized input, ``255 / training
        table`` for quantized input (steps of the training table); None for quantized input
        with no training quality (the file's own integers: a factor that depends on the file)."""
        if input == "dequantized":
            return torch.ones(64)
        if quality is None:
            return None
        return 255.0 / torch.from_numpy(ijg_table(quality).astype("float32")).reshape(64)

    @property
    def input_description(self) -> str:
        return ("quantized coefficient blocks on the image grid" if self.input == "quantized"
                else "dequantized coefficient blocks (x qtable / 255) on the image grid")

    def kspace(self, blocks: torch.Tensor, qtable: torch.Tensor) -> torch.Tensor:
        """Integer blocks ``[N, bh, bw, 8, 8]`` and their tables (``[8, 8]`` or ``[N, 8, 8]``)
        -> the network's input ``[N, 1, 8 bh, 8 bw]`` float32."""
        x = blocks.float()
        q = qtable.float()
        q = q if q.dim() == 2 else q[:, None, None]
        if self.input == "dequantized":
            x = x * q / 255.0
        elif self.quality is not None:
            # The integers count steps of the file's table; the network learned steps of the
            # training table (its IDCT start even has that table in its weights). So a file
            # written with another table (another quality, another encoder) comes in as the same
            # coefficients in training-table steps, unrounded: for files with the training
            # table this is the integers themselves, as the paper feeds them.
            x = x * (q / self.training_table(x.device))
        return blocks_to_plane(x).unsqueeze(1)

    def forward(self, blocks: torch.Tensor, qtable: torch.Tensor) -> torch.Tensor:
        """Integer blocks ``[N, bh, bw, 8, 8]`` + tables -> luma ``[N, 1, 8 bh, 8 bw]`` (0..1)
        (large inputs in parts: :meth:`~CoefficientRestorer.tiled`)."""
        with self.autocast(blocks.device.type):
            return self.tiled(lambda b, q: self.net(self.kspace(b, q)), blocks, qtable)
