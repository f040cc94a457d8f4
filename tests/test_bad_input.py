"""Bad input raises the right kdecode exception, quickly, without large allocations."""
from __future__ import annotations

import io
import time
import tracemalloc

import numpy as np
import pytest
from PIL import Image

import kdecode
from kdecode.errors import CorruptJpegError, ImageTooLargeError, KdecodeError, NotAJpegError, UnsupportedJpegError
from conftest import encode, photo

GOOD = encode(photo(64, 96, 7), quality=75, subsampling="4:2:0")
GOOD_PROGRESSIVE = encode(photo(64, 96, 8), quality=75, progressive=True)


def _sof_offset(data: bytes) -> int:
    for marker in (b"\xff\xc0", b"\xff\xc2"):
        i = data.find(marker)
        if i >= 0:
            return i
    raise AssertionError("no SOF")


def with_size(data: bytes, width: int, height: int) -> bytes:
    b = bytearray(data)
    i = _sof_offset(data)
    b[i + 5:i + 7] = height.to_bytes(2, "big")
    b[i + 7:i + 9] = width.to_bytes(2, "big")
    return bytes(b)


def test_error_family():
    for cls in (NotAJpegError, UnsupportedJpegError, CorruptJpegError, ImageTooLargeError):
        assert issubclass(cls, KdecodeError) and issubclass(cls, ValueError)
    assert issubclass(NotAJpegError, UnsupportedJpegError)


@pytest.mark.parametrize("data", [b"", b"\xff", np.random.default_rng(0).bytes(5000), b"\xff\xd8" + bytes(10)],
                         ids=["empty", "one-byte", "random", "soi-then-zeros"])
def test_not_jpeg_or_garbage(data):
    with pytest.raises(KdecodeError):
        kdecode.decode(data, model=None)


def test_png_is_not_a_jpeg():
    buf = io.BytesIO()
    Image.fromarray(photo(8, 8)).save(buf, "PNG")
    with pytest.raises(NotAJpegError, match="PNG"):
        kdecode.read_coefficients(buf.getvalue())


@pytest.mark.parametrize("data", [b"\xff\xd8", b"\xff\xd8\xff"])
def test_bare_soi_says_too_short_not_missing_soi(data):
    with pytest.raises(NotAJpegError, match="too short") as e:
        kdecode.read_coefficients(data)
    assert "no JPEG SOI" not in str(e.value)


def test_empty_file_names_the_path(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(NotAJpegError) as e:
        kdecode.decode(path, model=None)
    assert str(path) in str(e.value) and "empty" in str(e.value)


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("data", [GOOD, GOOD_PROGRESSIVE], ids=["baseline", "progressive"])
def test_truncated(data, fraction):
    cut = data[: int(len(data) * fraction)]
    with pytest.raises(CorruptJpegError, match="truncated"):
        kdecode.decode(cut, model=None)


def test_truncated_allowed_like_pillow_load_truncated_images():
    cut = GOOD[: int(len(GOOD) * 0.7)]
    coeffs = kdecode.read_coefficients(cut, allow_truncated=True)
    assert coeffs.warnings > 0
    # The blocks that were never coded are zero (flat mid-gray), the image keeps its size.
    assert not coeffs.components[0].blocks[-1].any()
    image = kdecode.decode(cut, model=None, allow_truncated=True)
    assert image.size == (96, 64)


def test_corrupt_entropy_data():
    b = bytearray(GOOD)
    start = GOOD.find(b"\xff\xda") + 20
    for i in range(start, start + 200, 7):
        b[i] ^= 0x55
    with pytest.raises(CorruptJpegError, match="corrupt"):
        kdecode.decode(bytes(b), model=None)


def test_huge_header_fails_fast_without_allocating():
    data = with_size(GOOD, 65000, 65000)
    tracemalloc.start()
    t0 = time.perf_counter()
    with pytest.raises(ImageTooLargeError, match="65000x65000"):
        kdecode.decode(data, model=None)
    elapsed = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert elapsed < 0.1, elapsed
    assert peak < 100 * 2**20, peak


def test_size_limit_is_configurable():
    data = encode(photo(40, 50, 9), quality=50)
    with pytest.raises(ImageTooLargeError):
        kdecode.read_coefficients(data, max_pixels=1999)
    assert kdecode.read_coefficients(data, max_pixels=2000).width == 50
    old = kdecode.settings.max_image_pixels
    try:
        kdecode.settings.max_image_pixels = 100
        with pytest.raises(ImageTooLargeError):
            kdecode.decode(data, model=None)
        kdecode.settings.max_image_pixels = None
        assert kdecode.decode(data, model=None).size == (50, 40)
    finally:
        kdecode.settings.max_image_pixels = old


def test_12_bit_unsupported():
    b = bytearray(GOOD)
    b[_sof_offset(GOOD) + 4] = 12  # sample precision
    with pytest.raises(UnsupportedJpegError, match="12-bit"):
        kdecode.decode(bytes(b), model=None)


def test_lossless_unsupported():
    b = bytearray(GOOD)
    b[_sof_offset(GOOD) + 1] = 0xC3
    with pytest.raises(UnsupportedJpegError, match="lossless"):
        kdecode.read_coefficients(bytes(b))


def test_restart_markers_out_of_order():
    data = encode(photo(64, 64, 10), quality=50, restart_marker_blocks=1)
    i = data.find(b"\xff\xd1")
    assert i > 0
    b = bytearray(data)
    b[i + 1] = 0xD3
    with pytest.raises(CorruptJpegError, match="RST"):
        kdecode.read_coefficients(bytes(b))


def test_wrong_source_type():
    with pytest.raises(TypeError):
        kdecode.read_coefficients(12345)
    with pytest.raises(ValueError):
        kdecode.decode(GOOD, model=None, output="tiff")
