"""The native coefficient reader (kdecode._jpegnative) against the jpeglib reference backend.

Without the extension built these tests skip, unless KDECODE_REQUIRE_NATIVE=1 (set in CI, which
installs libjpeg-turbo's headers) turns the skip into a failure.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import kdecode
from kdecode.errors import CorruptJpegError, KdecodeError, UnsupportedJpegError
from kdecode.jpeg import reader
from kdecode.jpeg.markers import parse_header

from conftest import corpus, encode, photo, shared_dir
from native_support import extra_corpus, skip_without_native

REPO = Path(__file__).resolve().parents[1]


skip_without_native()


@pytest.fixture
def use_backend():
    """Switch the process-wide reader for one test, then restore the default."""
    def use(name):
        reader.set_backend(name)
    yield use
    reader.set_backend(None)


def read_both(data: bytes, use_backend, **kw):
    use_backend("native")
    native = kdecode.read_coefficients(data, **kw)
    use_backend("jpeglib")
    reference = kdecode.read_coefficients(data, **kw)
    use_backend("native")
    return native, reference


def assert_same(native, reference):
    assert native.width == reference.width and native.height == reference.height
    assert len(native.components) == len(reference.components)
    for a, b in zip(native.components, reference.components):
        assert (a.id, a.h_samp, a.v_samp) == (b.id, b.h_samp, b.v_samp)
        assert a.blocks.dtype == np.int16 and a.blocks.flags.c_contiguous
        assert a.blocks.shape == b.blocks.shape
        np.testing.assert_array_equal(a.blocks, b.blocks)
        assert a.qtable.dtype == np.uint16
        np.testing.assert_array_equal(a.qtable, b.qtable)


PILLOW = dict(corpus())  # the foundation corpus
EXTRA = extra_corpus()


@pytest.mark.parametrize("name", sorted(PILLOW))
def test_same_as_jpeglib_on_foundation_corpus(name, use_backend):
    native, reference = read_both(PILLOW[name], use_backend)
    assert_same(native, reference)
    assert native.warnings == 0
    # Sanity on the reference itself: a photo-like image has non-zero AC coefficients.
    if native.width * native.height > 64:
        assert np.abs(native.components[0].blocks[..., 1:, :]).sum() > 0


@pytest.mark.parametrize("name", sorted(EXTRA))
def test_same_as_jpeglib_on_arithmetic_and_rare_samplings(name, use_backend):
    native, reference = read_both(EXTRA[name], use_backend)
    assert_same(native, reference)
    if name.startswith(("arith", "jpegtran")):
        assert native.arithmetic


def test_corpus_covers_what_it_claims():
    headers = [parse_header(d, n, None) for n, d in {**PILLOW, **EXTRA}.items()]
    assert any(h.restart_interval for h in headers if not h.progressive)
    assert any(h.restart_interval for h in headers if h.progressive)
    assert sum(h.arithmetic and h.progressive for h in headers) >= 1
    assert sum(h.arithmetic and not h.progressive for h in headers) >= 1
    samplings = {tuple((c.h_samp, c.v_samp) for c in h.components) for h in headers}
    assert {((1, 1),), ((1, 1),) * 3, ((2, 1), (1, 1), (1, 1)), ((2, 2), (1, 1), (1, 1)),
            ((1, 2), (1, 1), (1, 1)), ((4, 1), (1, 1), (1, 1))} <= samplings


@pytest.mark.shared
def test_same_as_jpeglib_on_bsds500(use_backend):
    files = sorted(shared_dir("BSDS500").rglob("*.jpg"))
    assert len(files) == 432
    for path in files:
        native, reference = read_both(path.read_bytes(), use_backend)
        assert_same(native, reference)


def test_reads_paths_files_and_bytes_alike(tmp_path):
    data = next(d for n, d in PILLOW.items() if n.startswith("17x33-4:2:0-base"))
    path = tmp_path / "x.jpg"
    path.write_bytes(data)
    a = kdecode.read_coefficients(path)
    with open(path, "rb") as f:
        b = kdecode.read_coefficients(f)
    c = kdecode.read_coefficients(memoryview(data))
    for x in (b, c):
        for p, q in zip(a.components, x.components):
            np.testing.assert_array_equal(p.blocks, q.blocks)
    assert a.source == str(path)


def _photo(**options) -> bytes:
    return encode(photo(64, 96, seed=3), quality=85, **options)


@pytest.mark.parametrize("progressive", [False, True])
def test_truncated_input_is_refused_or_zero_filled(progressive, tmp_path, use_backend):
    data = _photo(progressive=progressive)
    full = kdecode.read_coefficients(data)
    cut = data[: len(data) * 2 // 3]
    path = tmp_path / "cut.jpg"
    path.write_bytes(cut)
    with pytest.raises(CorruptJpegError, match="truncated") as e:
        kdecode.read_coefficients(path)
    assert str(e.value).startswith(str(path))
    c = kdecode.read_coefficients(cut, allow_truncated=True)
    assert c.warnings >= 1
    y, y_full = c.components[0].blocks, full.components[0].blocks
    assert y.shape == y_full.shape
    if not progressive:  # a sequential file's first block rows arrived whole
        np.testing.assert_array_equal(y[:2], y_full[:2])
        assert not y[-1].any()  # and the missing ones are zero, like jpeglib's
    use_backend("jpeglib")
    reference = kdecode.read_coefficients(cut, allow_truncated=True)
    for a, b in zip(c.components, reference.components):
        np.testing.assert_array_equal(a.blocks, b.blocks)


def test_corrupt_entropy_data_is_a_corrupt_jpeg_error(use_backend):
    data = _photo()
    sos = data.rfind(b"\xff\xda")
    # Cut the scan short but keep a well-formed end: libjpeg meets EOI mid-scan.
    damaged = data[: sos + (len(data) - sos) // 2] + b"\xff\xd9"
    with pytest.raises(CorruptJpegError, match="premature end of data segment"):
        kdecode.read_coefficients(damaged)
    c = kdecode.read_coefficients(damaged, allow_truncated=True)
    assert c.warnings >= 1
    use_backend("jpeglib")
    with pytest.raises(CorruptJpegError):
        kdecode.read_coefficients(damaged)


def test_bad_huffman_table_is_a_corrupt_jpeg_error():
    data = bytearray(_photo())
    dht = data.find(b"\xff\xc4")
    data[dht + 5: dht + 21] = b"\xff" * 16  # code counts that overflow the code space
    with pytest.raises(CorruptJpegError, match="libjpeg failed"):
        kdecode.read_coefficients(bytes(data))


def test_scan_limit_in_the_parser_and_in_libjpeg(monkeypatch):
    data = _photo(progressive=True)
    header = parse_header(data, "x", None)
    assert header.scans == 10
    monkeypatch.setattr(reader.settings, "max_scans", 4)
    with pytest.raises(UnsupportedJpegError, match="10 scans, over the limit of 4"):
        kdecode.read_coefficients(data)
    # The native reader's own guard (libjpeg's scan counter, in its progress monitor), for files
    # the parser would count differently.
    with pytest.raises(UnsupportedJpegError, match="more than 4 scans"):
        reader.NativeBackend().read(data, None, header, "x", allow_truncated=True)


def test_many_scans_are_refused_quickly():
    data = _photo(progressive=True)
    last_scan = data[data.rfind(b"\xff\xda"): data.rfind(b"\xff\xd9")]
    flood = data[:-2] + last_scan * 1000 + b"\xff\xd9"
    with pytest.raises(UnsupportedJpegError, match="scans"):
        kdecode.read_coefficients(flood, allow_truncated=True)


def test_frame_libjpeg_disagrees_with_is_refused():
    """If libjpeg's frame ever differs from the checked header, nothing is written out of bounds:
    the reader refuses (here: the header given to the backend lies about the size)."""
    data = _photo()
    header = parse_header(data, "x", None)
    header.width = 200
    with pytest.raises(CorruptJpegError, match="marker parser"):
        reader.NativeBackend().read(data, None, header, "x")


def test_huge_header_with_little_data_stops_early():
    """A frame header claiming 11000x11000 pixels over a few kilobytes of data: refused at the
    first corrupt-data warning (the zeroed arrays are never touched beyond the first rows)."""
    data = bytearray(_photo())
    sof = data.find(b"\xff\xc0")
    data[sof + 5: sof + 9] = (11000).to_bytes(2, "big") * 2
    with pytest.raises(CorruptJpegError):
        kdecode.read_coefficients(bytes(data))


def test_batch_matches_sequential_reads(tmp_path):
    files = [PILLOW[n] for n in sorted(PILLOW) if not n.startswith("1500x2000")]
    bad = _photo()[:-200]
    results = kdecode.read_coefficients_batch(files + [bad], workers=2, return_exceptions=True)
    assert isinstance(results[-1], CorruptJpegError)
    for data, got in zip(files, results):
        want = kdecode.read_coefficients(data)
        for a, b in zip(got.components, want.components):
            np.testing.assert_array_equal(a.blocks, b.blocks)
    with pytest.raises(CorruptJpegError):
        kdecode.read_coefficients_batch([files[0], bad], workers=2)
    path = tmp_path / "a.jpg"
    path.write_bytes(files[0])
    assert kdecode.read_coefficients_batch([path], workers=1)[0].source == str(path)


def test_backend_info_and_missing_extension_fallback(monkeypatch):
    monkeypatch.delenv("KDECODE_READER", raising=False)
    reader.set_backend(None)
    assert kdecode.backend_info()["reader"] == "native"
    assert kdecode.backend_info()["library"].startswith("libjpeg")
    # As if the extension had not been built: the default falls back to jpeglib and says why.
    monkeypatch.setitem(sys.modules, "kdecode._jpegnative", None)
    try:
        reader.set_backend(None)
        info = kdecode.backend_info()
        assert info["reader"] == "jpeglib" and "not built" in info["fallback_reason"]
        with pytest.raises(ImportError, match="not built"):
            reader.set_backend("native")
    finally:
        monkeypatch.undo()
        reader.set_backend(None)
    with pytest.raises(ValueError, match="unknown coefficient reader"):
        reader.set_backend("pillow")


def test_env_var_forces_the_jpeglib_fallback():
    """KDECODE_READER=jpeglib in a fresh process: the fallback is active and reads the same."""
    data = _photo(progressive=True)
    code = ("import sys, hashlib, kdecode; d = sys.stdin.buffer.read(); c = kdecode.read_coefficients(d); "
            "print(kdecode.backend_info()['reader'], kdecode.backend_info().get('forced_by')); "
            "print(hashlib.sha256(b''.join(x.blocks.tobytes() + x.qtable.tobytes() for x in c.components)).hexdigest())")
    env = {**os.environ, "KDECODE_READER": "jpeglib", "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], input=data, capture_output=True, env=env, check=True,
                         cwd=REPO).stdout.decode().split("\n")
    assert out[0] == "jpeglib KDECODE_READER=jpeglib"
    c = kdecode.read_coefficients(data)
    import hashlib
    assert out[1] == hashlib.sha256(b"".join(x.blocks.tobytes() + x.qtable.tobytes() for x in c.components)).hexdigest()


def test_rejections_are_kdecode_errors():
    for bad in (b"", b"\xff\xd8", b"\x89PNG\r\n\x1a\n....", _photo()[:50], b"\xff\xd8\xff\xd9"):
        with pytest.raises(KdecodeError):
            kdecode.read_coefficients(bad)


def test_cli_info_backend(capsys, monkeypatch):
    import json

    from kdecode.cli import main

    assert main(["info", "--backend", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["reader"] == "native"
    # what the models run on: the CPU's vector units (torch's dispatch level) and its bf16
    assert info["cpu"] == torch.backends.cpu.get_cpu_capability() and info["cpu_bf16"].split()[0] in (
        "native", "emulated", "unknown")
    monkeypatch.setenv("KDECODE_READER", "jpeglib")
    reader.set_backend(None)
    try:
        assert main(["info", "--backend"]) == 0
        out = capsys.readouterr().out
        assert "reader: jpeglib" in out and "forced_by: KDECODE_READER=jpeglib" in out
    finally:
        monkeypatch.delenv("KDECODE_READER")
        reader.set_backend(None)
    assert main(["info"]) == 2
