"""Support for the native reader's tests and fuzzer.

- :func:`skip_without_native`: skip a test module when kdecode._jpegnative is not built, or fail
  it when KDECODE_REQUIRE_NATIVE=1 (CI, which installs libjpeg-turbo's headers).
- JPEGs Pillow cannot write: arithmetic coding (written by jpeglib's libjpeg-turbo 2.1, or
  re-coded by jpegtran when libjpeg-turbo-progs is installed) and the samplings 4:4:0, 4:1:1 and
  mixed factors. The Pillow-encoded corpus is conftest.corpus().
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

from conftest import encode, photo
from kdecode.jpeg import reader


def skip_without_native() -> None:
    try:
        reader.NativeBackend()
    except ImportError as e:
        if os.environ.get("KDECODE_REQUIRE_NATIVE") == "1":
            raise RuntimeError(f"KDECODE_REQUIRE_NATIVE=1 but the native reader is not built: {e}") from e
        pytest.skip("kdecode._jpegnative is not built (needs libjpeg-turbo headers; pip install -e .)",
                    allow_module_level=True)


def jpeglib_jpeg(pixels: np.ndarray, quality: int = 75, flags=(), samp_factor=None) -> bytes:
    """Encode uint8 ``pixels`` ([h, w] or [h, w, 3]) with jpeglib's libjpeg-turbo 2.1.
    ``flags``: e.g. ["+ARITH_CODE", "+PROGRESSIVE_MODE"]; ``samp_factor``: "4:4:0", "4:1:1" or
    jpeglib's [[v, h], ...]."""
    import jpeglib

    jpeglib.version.set("turbo210")
    im = jpeglib.from_spatial(pixels.reshape(*pixels.shape[:2], -1))
    if samp_factor is not None:
        im.samp_factor = samp_factor
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "x.jpg")
        im.write_spatial(path, qt=quality, flags=list(flags))
        return Path(path).read_bytes()


def jpegtran_arithmetic(data: bytes, *options: str) -> bytes | None:
    """Losslessly re-code ``data`` with arithmetic coding (plus ``options`` such as
    "-progressive" or "-restart", "1"); None when jpegtran is not installed."""
    exe = shutil.which("jpegtran")
    if exe is None:
        return None
    return subprocess.run([exe, "-arithmetic", *options], input=data, capture_output=True, check=True).stdout


def extra_corpus() -> dict[str, bytes]:
    img = photo(29, 45, seed=99)
    out = {
        "arith-seq-4:2:0": jpeglib_jpeg(img, 80, ["+ARITH_CODE"]),
        "arith-prog-4:2:0": jpeglib_jpeg(img, 60, ["+ARITH_CODE", "+PROGRESSIVE_MODE"]),
        "arith-seq-gray": jpeglib_jpeg(img[..., 1], 70, ["+ARITH_CODE"]),
        "4:4:0": jpeglib_jpeg(img, 85, samp_factor="4:4:0"),
        "4:1:1": jpeglib_jpeg(img, 85, samp_factor="4:1:1"),
        "v2h2-v2h1-v1h1-prog": jpeglib_jpeg(img, 50, ["+PROGRESSIVE_MODE"], samp_factor=[[2, 2], [2, 1], [1, 1]]),
    }
    for name, src, options in [
            ("jpegtran-arith-4:2:2-restart", encode(photo(41, 77, seed=5), quality=70, subsampling="4:2:2"),
             ("-restart", "1")),
            ("jpegtran-arith-prog", encode(photo(64, 64, seed=6), quality=90), ("-progressive",))]:
        arith = jpegtran_arithmetic(src, *options)
        if arith is not None:
            out[name] = arith
    return out
