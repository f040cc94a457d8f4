"""The decoder interface every model implements."""
from __future__ import annotations

import contextlib
import functools
import platform
import warnings
from typing import NamedTuple

import torch
from torch import nn

from ..jpeg.coefficients import JpegCoefficients
from ..jpeg.quality import estimate_quality, ijg_table
from ..ops import clamp_planes, exact_cpu, flip_blocks, quantize
from ..pipeline import (component_blocks, decode_exact, decode_exact_many, decode_restoring_luma,
                        decode_restoring_luma_many, to_samples)


#: what :meth:`Decoder.set_precision` accepts
PRECISIONS = ("float32", "bfloat16")


@functools.lru_cache(maxsize=None)  # read once: Decoder.autocast asks on every forward
def native_bf16(device_type: str) -> bool | None:
    """Whether this machine's ``device_type`` ("cpu" or "cuda") has bf16 arithmetic of its own:
    CUDA GPUs do (tensor cores); an x86 CPU only with AVX512-BF16 or AMX. Without them torch
    converts every bf16 operand to float32 and back, and a bf16 step is several times slower
    than a float32 one (benchmarks/results/train_step_cpu_avx2.md). None where torch cannot tell
    (CPUs other than x86, torch builds without these probes)."""
    if device_type != "cpu":
        return True
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686") or None in probes:
        return None
    return any(probe() for probe in probes)


def compute_info() -> dict:
    """What the learned layers run on here (``kdecode info --backend``, the benchmarks' headers):
    the CPU's vector units as torch dispatches to them, whether bf16 is native there, the GPU."""
    bf16 = {True: "native", False: "emulated (float32 is faster)", None: "unknown"}[native_bf16("cpu")]
    return {"cpu": torch.backends.cpu.get_cpu_capability(), "cpu_bf16": bf16,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"}


def warn_if_emulated_bf16(device_type: str, what: str) -> None:
    """A RuntimeWarning (once per caller) when bf16 was asked for on a CPU that would emulate it."""
    if native_bf16(device_type) is False:
        warnings.warn(f"{what}: this CPU ({torch.backends.cpu.get_cpu_capability()}) has no bf16 arithmetic "
                      "(AVX512-BF16 or AMX), so bf16 runs several times slower than float32 "
                      "(benchmarks/results/train_step_cpu_avx2.md): use float32 on this CPU",
                      RuntimeWarning, stacklevel=3)


#: the flip ensemble's grids, in order: as is, left-right, upside down, both (rows, columns)
FLIPS = ((False, False), (False, True), (True, False), (True, True))
#: what :meth:`Decoder.set_flips` accepts
FLIP_COUNTS = (1, 2, 4)


class RunOptions(NamedTuple):
    """How a model runs, what :func:`kdecode.decode` and its batch forms take beside the model's
    name: :attr:`Decoder.precision` and :attr:`Decoder.flips` (the exact decode ignores both)."""

    precision: str = "float32"
    flips: int = 1

    def check(self) -> "RunOptions":
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.flips not in FLIP_COUNTS:
            raise ValueError(f"flips must be one of {FLIP_COUNTS}, got {self.flips!r}")
        return self


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
        self.precision = RunOptions(precision=precision).check().precision
        return self

    #: the flip ensemble of the restoring decoders (1, 2 or 4 passes; the exact decode ignores
    #: it): the model also restores the image mirrored left-right (2) and upside down (4), from
    #: the mirrored coefficient grid (exact, :func:`~kdecode.ops.flip_blocks`); the outputs,
    #: mirrored back, are averaged before the box and rounding. ``flips`` times the work for a
    #: little more quality (docs/dual_domain.md, "Flip ensemble"). Set with :meth:`set_flips`.
    flips = 1

    def set_flips(self, flips: int) -> "Decoder":
        self.flips = RunOptions(flips=flips).check().flips
        return self

    def autocast(self, device_type: str):
        """The context the learned layers run in: bf16 autocast for ``precision="bfloat16"``;
        otherwise none of its own, so training's autocast (or a caller's) still applies."""
        if self.precision == "bfloat16":
            warn_if_emulated_bf16(device_type, f"{self.name}: precision='bfloat16'")
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
    #: clamp the restored luma into the file's quantization box before rounding
    #: (:func:`~kdecode.ops.clamp_planes`): every block's DCT coefficients back inside the
    #: interval the file says they were quantized from. A projection onto a set the original
    #: lies in, so it can only bring the output closer to it: HR-CNN q10 29.216 -> 29.224 dB on
    #: LIVE1_gray, every image better (docs/dual_domain.md, "The output box").
    output_box = True
    #: where box constraints take their intervals: ``"real"`` (the file's table, the product) or
    #: ``"assumed"`` (the IJG table of the nearest quality, for the comparison the issue asks for)
    intervals = "real"

    def interval_blocks(self, blocks: torch.Tensor, qtable: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(integer coefficients, table) that define the quantization intervals of ``blocks``.

        ``"real"``: the file's own. ``"assumed"``: what a decoder that assumes an IJG quality
        would use: the table of the quality nearest the real one (:func:`estimate_quality`) and
        the decoded coefficients ``c q`` requantized with it; the decoded value lies in that
        interval too, but the original's true interval is the real one."""
        if self.intervals == "real":
            return blocks, qtable
        tables = qtable.reshape(-1, 8, 8).cpu().numpy()
        assumed = torch.stack([torch.from_numpy(ijg_table(estimate_quality(t)[0]).astype("float32")) for t in tables])
        assumed = assumed.to(blocks.device).reshape(qtable.shape)
        q = qtable.float() if qtable.dim() == 2 else qtable.float()[:, None, None]
        a = assumed if assumed.dim() == 2 else assumed[:, None, None]
        return quantize(blocks.float() * q, a), assumed

    def restore_grid(self, blocks: torch.Tensor, qtables: torch.Tensor, window: tuple[int, int, int, int]) -> torch.Tensor:
        """The model on luma blocks int16 ``[N, bh, bw, 8, 8]`` with their tables ``[N, 8, 8]``:
        float plane ``[N, 8 bh, 8 bw]`` on the 0..255 scale, before the box and rounding.
        ``window``: ``(top, left, h, w)``, where the image's own samples lie in the grid (the
        rest is the encoder's padding of its last blocks: bottom and right, or the other sides
        in a mirrored grid)."""
        raise NotImplementedError  # pragma: no cover

    def restore_blocks(self, blocks: torch.Tensor, qtables: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Luma blocks int16 ``[N, bh, bw, 8, 8]`` of images of one geometry, their tables
        ``[N, 8, 8]`` and the plane's real size ``(h, w)`` -> restored uint8 ``[N, h, w]``:
        :meth:`restore_grid` on the grid and, with :attr:`flips`, on its mirror images (mirrored
        back and averaged), clamped into the box (:attr:`output_box`), cropped and rounded."""
        (bh, bw), (h, w) = blocks.shape[1:3], size
        planes = []
        for rows, cols in FLIPS[:self.flips]:
            window = (8 * bh - h if rows else 0, 8 * bw - w if cols else 0, h, w)
            plane = self.restore_grid(flip_blocks(blocks, rows, cols), qtables, window)
            dims = [d for d, flipped in ((-2, rows), (-1, cols)) if flipped]
            planes.append(torch.flip(plane, dims) if dims else plane)
        # The box acts once, on the average: the ensemble's estimate, projected as one pass's is.
        plane = planes[0] if len(planes) == 1 else torch.stack(planes).mean(0)
        if self.output_box:
            plane = clamp_planes(plane, *self.interval_blocks(blocks, qtables))
        return to_samples(plane[:, :h, :w] / 255.0)

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
