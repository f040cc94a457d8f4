"""The C fast path of the exact decode on CPU (``kdecode._exactcpu``, built from
``csrc/exact_cpu.c`` when a compiler is there): islow IDCT, fancy upsampling and colour with the
same integer arithmetic as the torch reference ops of this package, which
tests/test_exact_cpu.py holds it to, sample for sample.

Used by :func:`kdecode.pipeline.decode_exact` for CPU work unless ``KDECODE_FORCE_TORCH=1``;
the torch ops remain the reference and run everywhere else (GPUs, models, autograd).
``decode(model=None)`` on CPU goes through :func:`read_and_decode`: the native reader
(``kdecode._jpegnative``, which compiles the same C file in) runs the pixel stage inside its own
call, beside libjpeg's entropy decoding.
"""
from __future__ import annotations

import os

import numpy as np
import torch

from ..jpeg import reader
from .color import adobe_cmyk
from .upsample import fancy_mode, plane_geometry

try:
    from .. import _exactcpu
    _PROBLEM = None
except ImportError as exc:  # not built: no compiler when the package was installed
    _exactcpu = None
    _PROBLEM = f"kdecode._exactcpu is not built ({exc})"

FORCE_TORCH_ENV = "KDECODE_FORCE_TORCH"


def why_not(device=None) -> str | None:
    """Why the C path will not run for ``device`` (None when it will)."""
    if _PROBLEM:
        return _PROBLEM
    if os.environ.get(FORCE_TORCH_ENV, "") not in ("", "0"):
        return f"{FORCE_TORCH_ENV} is set"
    if device is not None and torch.device(device).type != "cpu":
        return f"device is {device}"
    return None


def usable(device=None) -> bool:
    return why_not(device) is None


def idct_plane(blocks: np.ndarray, qtable: np.ndarray) -> np.ndarray:
    """int16 blocks ``[bh, bw, 8, 8]`` and their ``[8, 8]`` table -> uint8 plane
    ``[bh*8, bw*8]`` (what ``blocks_to_plane(idct_islow(blocks, qtable))`` returns)."""
    blocks = np.ascontiguousarray(blocks, dtype=np.int16)
    bh, bw = blocks.shape[:2]
    if blocks.shape[2:] != (8, 8):
        raise ValueError(f"blocks must be [bh, bw, 8, 8], got {blocks.shape}")
    plane = np.empty((bh * 8, bw * 8), np.uint8)
    _exactcpu.idct_islow(blocks, _qtable_int32(qtable), plane, bh, bw)
    return plane


def upsample_to_image(planes: list[np.ndarray], sizes: list[tuple[int, int]], factors: list[tuple[int, int]],
                      height: int, width: int, convert: bool, pixel_bytes: int | None = None) -> np.ndarray:
    """Component planes (uint8, at least their real ``sizes`` (h, w), extra rows/columns
    ignored) upsampled by ``factors`` (h_factor, v_factor), cropped to ``height x width`` and
    converted YCbCr -> RGB when ``convert``: uint8 ``[height, width, pixel_bytes]`` (default: one
    byte a component; 4 for 3 components: R, G, B, 255, Pillow's own RGB storage)."""
    comps = []
    for plane, (ch, cw), (hf, vf) in zip(planes, sizes, factors):
        plane = np.ascontiguousarray(plane, dtype=np.uint8)
        comps.append((plane, plane.shape[1], ch, cw, hf, vf, fancy_mode(hf, vf, cw)))
    out = np.empty((height, width, pixel_bytes or len(planes)), np.uint8)
    _exactcpu.upsample_color(out, height, width, convert, comps, out.shape[2])
    return out


#: Pixels a thread gets at least when one image is cut into bands of rows (``threads`` below).
#: Measured on 2 cores (whole decode vs Pillow, 1 band -> bands): LIVE1 q10 (0.1-0.6 MP) 1.20x ->
#: 1.40x with 64K or 128K, 1.21x with 256K; BSDS500 q10 (0.15 MP) 0.98x either way.
MIN_BAND_PIXELS = 1 << 17


#: Pixels an image needs before its entropy decoding and its pixel stage run side by side on two
#: threads (``read_and_decode``): below it, starting the second thread (about 50 us before it
#: runs, on this VM) costs more than it saves. Measured on 2 cores, BSDS500 centre crops at q75,
#: decode -> PIL, one thread / streamed: 128x128 166 / 205 us, 181x181 245 / 258 us, 256x256
#: 333 / 324 us.
MIN_STREAM_PIXELS = 1 << 16


def decode_array(coeffs, rgbx: bool = False, threads: int = 1) -> np.ndarray:
    """Bit-exact decode on CPU in one call with the GIL released: uint8 ``[H, W, C]``, one byte a
    component (4-component files as Pillow's CMYK (``adobe_cmyk``)); with ``rgbx`` colour
    (3 components) is written in 4 bytes, R, G, B, 255: Pillow's RGB storage, which
    ``decode(output="pil")`` hands to Pillow without a copy. ``threads > 1`` cuts a large image
    into as many bands of rows (each at least ``MIN_BAND_PIXELS``), decoded side by side; the
    result is the same."""
    components = coeffs.components
    image, convert, geometry, bands, _ = _plan(coeffs.height, coeffs.width, coeffs.color_space,
                                               [(c.h_samp, c.v_samp) for c in components],
                                               [c.blocks.shape[:2] for c in components], rgbx, threads)
    comps = [(np.ascontiguousarray(c.blocks, dtype=np.int16), _qtable_int32(c.qtable)) + g
             for c, g in zip(components, geometry)]
    _exactcpu.decode(image, coeffs.height, coeffs.width, convert, comps, image.shape[2], bands)
    return _finish(image, coeffs.color_space)


def read_and_decode(src, rgbx: bool = False, threads: int = 1, decode_if=None, **read_options):
    """``(read_coefficients(src), decode_array(...))`` of a JPEG file in one pass: with the native
    reader the pixel stage runs inside the reader's call, and with ``threads > 1`` a file of one
    scan (baseline, the common case) of at least ``MIN_STREAM_PIXELS`` has its pixels decoded on
    a second thread as its blocks are entropy-decoded, so the two overlap; a progressive one as
    its last scan makes them final (other files are decoded after the read, in bands as
    ``decode_array`` does). The result is the same.
    ``decode_if(luma_table)``: decode the pixels only if it returns true for the first
    component's uint16 [8, 8] quantization table (else the array returned is None)."""

    def plan(header):
        if decode_if is not None and not decode_if(header.qtable(header.components[0].qtable_index)):
            return None, None
        image, convert, geometry, bands, stream = _plan(header.height, header.width, header.color_space,
                                                        [(c.h_samp, c.v_samp) for c in header.components],
                                                        header.block_grids(), rgbx, threads)
        return image, (image, header.height, header.width, convert, image.shape[2], bands, stream, geometry)

    coeffs, image = reader.read_and_decode(src, plan, **read_options)
    if image is None:  # not wanted, or a reader without a pixel stage (jpeglib)
        if decode_if is not None and not decode_if(coeffs.components[0].qtable):
            return coeffs, None
        return coeffs, decode_array(coeffs, rgbx, threads)
    return coeffs, _finish(image, coeffs.color_space)


def _plan(height: int, width: int, color_space: str, sampling: list, grids: list, rgbx: bool, threads: int):
    """What the pixel stage needs for an image: its output array, whether to convert YCbCr, each
    component's ``(bh, bw, ch, cw, hf, vf, mode)``, the bands, and whether to stream."""
    geometry = [(int(bh), int(bw), *g) for (bh, bw), g in zip(grids, plane_geometry(height, width, sampling))]
    image = np.empty((height, width, 4 if rgbx and len(sampling) == 3 else len(sampling)), np.uint8)
    bands = max(1, min(threads, height * width // MIN_BAND_PIXELS))
    stream = threads > 1 and height * width >= MIN_STREAM_PIXELS
    return image, color_space == "ycbcr", geometry, bands, stream


def _finish(image: np.ndarray, color_space: str) -> np.ndarray:
    """The pixel stage's samples as ``decode`` returns them: 4-component files as Pillow's CMYK."""
    if color_space in ("cmyk", "ycck"):
        return adobe_cmyk(torch.from_numpy(image), color_space, dim=-1).numpy()
    return image


def decode_exact(coeffs) -> torch.Tensor:
    """:func:`decode_array` as uint8 ``[C, H, W]``, a view of channels-last memory (so the
    numpy/PIL conversion of ``decode`` needs no copy)."""
    return torch.from_numpy(decode_array(coeffs)).permute(2, 0, 1)


def _qtable_int32(qtable: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(qtable, dtype=np.int32).reshape(64)
