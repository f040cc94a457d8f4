"""Generated JPEG test images: photo-like content, encoded every way the readers must handle.

Used by the reader tests, the fuzzer (tests/fuzz_reader.py) and benchmarks/reader.py.
"""
from __future__ import annotations

import io
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"
BSDS500 = SHARED / "data" / "BSDS500"


def photo_like(width: int, height: int, seed: int = 0, mode: str = "RGB") -> Image.Image:
    """Smooth regions, edges and fine grain at several scales, like a photo: JPEG spends about
    as many bits on it as on a real photo at the same quality (1.7 bpp at q90 4:2:0)."""
    rng = np.random.default_rng(seed)
    channels = 3 if mode == "RGB" else 1
    img = np.zeros((height, width, channels), np.float32)
    for cells, amplitude in ((4, 60), (16, 40), (64, 25), (256, 12)):
        small = rng.normal(0, 1, (max(2, cells * height // max(width, 1)), cells, channels)).astype(np.float32)
        img += amplitude * np.stack(
            [np.asarray(Image.fromarray(small[..., c]).resize((width, height), Image.BICUBIC))
             for c in range(channels)], -1)
    img += rng.normal(0, 4, img.shape)
    pixels = np.clip(img + 128, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode)


def pillow_jpeg(img: Image.Image, **options) -> bytes:
    b = io.BytesIO()
    img.save(b, "JPEG", **options)
    return b.getvalue()


def jpeglib_jpeg(img: Image.Image, quality: int = 75, flags=(), samp_factor=None) -> bytes:
    """Encode with jpeglib's libjpeg-turbo 2.1: arithmetic coding (flags=["+ARITH_CODE"]) and
    samplings Pillow cannot write (samp_factor "4:4:0", "4:1:1", or jpeglib's [[v, h], ...])."""
    import jpeglib

    jpeglib.version.set("turbo210")
    pixels = np.asarray(img)
    im = jpeglib.from_spatial(pixels.reshape(*pixels.shape[:2], -1))
    if samp_factor is not None:
        im.samp_factor = samp_factor
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "x.jpg")
        im.write_spatial(path, qt=quality, flags=list(flags))
        return Path(path).read_bytes()


def jpegtran_arithmetic(data: bytes, *options: str) -> bytes | None:
    """Losslessly re-code ``data`` with arithmetic coding (libjpeg-turbo-progs' jpegtran, plus
    ``options`` such as "-progressive" or "-restart", "1"); None when jpegtran is not installed."""
    exe = shutil.which("jpegtran")
    if exe is None:
        return None
    return subprocess.run([exe, "-arithmetic", *options], input=data, capture_output=True, check=True).stdout


SUBSAMPLING = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}


def pillow_corpus() -> dict[str, bytes]:
    """Every sampling x baseline/progressive x size, with qualities 5..95, Huffman
    optimization and restart markers (blocks and rows) spread over the cases."""
    sizes = [(1, 1), (7, 9), (33, 17), (1000, 3), (2000, 1500)]
    samplings = ["gray", "4:4:4", "4:2:2", "4:2:0"]
    qualities = [5, 25, 50, 75, 90, 95]
    restarts = [{}, {"restart_marker_blocks": 1}, {"restart_marker_rows": 1}, {"restart_marker_blocks": 7}]
    out = {}
    k = 0
    for w, h in sizes:
        for sampling in samplings:
            for progressive in (False, True):
                q = qualities[k % len(qualities)]
                extra = restarts[k % len(restarts)]
                optimize = k % 3 == 0
                k += 1
                img = photo_like(w, h, seed=k, mode="L" if sampling == "gray" else "RGB")
                opts = {"quality": q, "progressive": progressive, "optimize": optimize, **extra}
                if sampling != "gray":
                    opts["subsampling"] = SUBSAMPLING[sampling]
                name = (f"{w}x{h}-{sampling}-{'prog' if progressive else 'base'}-q{q}"
                        f"{'-opt' if optimize else ''}{''.join(f'-{a}{b}' for a, b in extra.items())}")
                out[name] = pillow_jpeg(img, **opts)
    return out


def extra_corpus() -> dict[str, bytes]:
    """Arithmetic coding and the samplings Pillow does not write."""
    img = photo_like(45, 29, seed=99)
    out = {
        "arith-seq-4:2:0": jpeglib_jpeg(img, 80, ["+ARITH_CODE"]),
        "arith-prog-4:2:0": jpeglib_jpeg(img, 60, ["+ARITH_CODE", "+PROGRESSIVE_MODE"]),
        "arith-seq-gray": jpeglib_jpeg(img.convert("L"), 70, ["+ARITH_CODE"]),
        "4:4:0": jpeglib_jpeg(img, 85, samp_factor="4:4:0"),
        "4:1:1": jpeglib_jpeg(img, 85, samp_factor="4:1:1"),
        "v2h2-v2h1-v1h1-prog": jpeglib_jpeg(img, 50, ["+PROGRESSIVE_MODE"], samp_factor=[[2, 2], [2, 1], [1, 1]]),
    }
    for name, src, options in [
            ("jpegtran-arith-4:2:2-restart", pillow_jpeg(photo_like(77, 41, seed=5), quality=70, subsampling=1),
             ("-restart", "1")),
            ("jpegtran-arith-prog", pillow_jpeg(photo_like(64, 64, seed=6), quality=90), ("-progressive",))]:
        arith = jpegtran_arithmetic(src, *options)
        if arith is not None:
            out[name] = arith
    return out
