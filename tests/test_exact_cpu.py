"""The C pixel stage of the exact decode on CPU (kdecode._exactcpu) against the torch reference
ops: identical samples, on the generated corpus and on random blocks and planes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from kdecode import read_coefficients
from kdecode.ops import blocks_to_plane, exact_cpu, idct_islow, upsample, ycbcr_to_rgb
from kdecode.pipeline import decode_exact
from conftest import encode, photo

pytestmark = pytest.mark.skipif(exact_cpu.why_not() is not None and "FORCE" not in str(exact_cpu.why_not()),
                                reason=f"C path unavailable: {exact_cpu.why_not()}")


def _pixel_stage_modules():
    """The modules that compile the pixel stage in: kdecode._exactcpu, and the native reader's
    kdecode._jpegnative where it is built (its read(..., pixels))."""
    import importlib

    mods = [importlib.import_module("kdecode._exactcpu")]
    try:
        mods.append(importlib.import_module("kdecode._jpegnative"))
    except ImportError:
        pass
    return mods


@pytest.fixture(params=["simd", "portable"], autouse=True)
def simd(request):
    """Every test runs with the hand-written AVX2 paths (where the CPU has them) and with the
    portable vector code, which must give the same samples."""
    for mod in _pixel_stage_modules():
        mod.set_simd(request.param == "simd")
    yield request.param
    for mod in _pixel_stage_modules():
        mod.set_simd(True)


def test_corpus_same_as_torch_reference(monkeypatch, jpeg_corpus):
    # The 1500x2000 files are left out: the torch reference takes seconds on them, and
    # test_exact_decode compares them (through this C path) with Pillow.
    for name, data in jpeg_corpus:
        coeffs = read_coefficients(data)
        if coeffs.width * coeffs.height > 100_000:
            continue
        fast = decode_exact(coeffs)
        monkeypatch.setenv(exact_cpu.FORCE_TORCH_ENV, "1")
        reference = decode_exact(coeffs)
        monkeypatch.delenv(exact_cpu.FORCE_TORCH_ENV)
        assert fast.shape == reference.shape and torch.equal(fast, reference), name


def test_idct_random_blocks_including_extremes():
    rng = np.random.default_rng(0)
    blocks = rng.integers(-1024, 1024, (5, 7, 8, 8)).astype(np.int16)
    blocks[0, 0] = 32767  # saturates high; int32 products wrap identically in both
    blocks[0, 1] = -32768
    blocks[1] = rng.integers(-40, 40, (7, 8, 8))
    for qtable in (np.ones((8, 8)), rng.integers(1, 256, (8, 8)), rng.integers(1, 65536, (8, 8))):
        qtable = qtable.astype(np.uint16)
        ref = blocks_to_plane(idct_islow(torch.from_numpy(blocks), torch.from_numpy(qtable.astype(np.int32))))
        assert np.array_equal(exact_cpu.idct_plane(blocks, qtable), ref.numpy())


@pytest.mark.parametrize("factors", [(2, 2), (2, 1), (1, 2), (4, 1), (1, 4), (2, 4), (3, 1), (1, 1)])
def test_upsample_and_colour_every_mode(factors):
    hf, vf = factors
    rng = np.random.default_rng(hf * 10 + vf)
    for ch, cw in [(1, 1), (1, 2), (2, 3), (5, 1), (7, 9), (16, 33)]:
        height, width = ch * vf - (vf > 1), cw * hf - (hf > 1)  # odd full sizes: chroma rounded up
        luma = rng.integers(0, 256, (height + 3, width + 5), dtype=np.uint8)  # extra columns: a stride
        chroma = [rng.integers(0, 256, (ch + 1, cw + 2), dtype=np.uint8) for _ in range(2)]
        planes = [luma, *chroma]
        sizes = [(height, width), (ch, cw), (ch, cw)]
        for convert in (True, False):
            out = exact_cpu.upsample_to_image(planes, sizes, [(1, 1), factors, factors], height, width, convert)
            full = [torch.from_numpy(luma[:height, :width])]
            full += [upsample(torch.from_numpy(p[:ch, :cw]), hf, vf)[:height, :width] for p in chroma]
            ref = torch.stack(full)
            ref = ycbcr_to_rgb(ref) if convert else ref
            assert np.array_equal(out, ref.permute(1, 2, 0).numpy()), (factors, ch, cw, convert)
    gray = exact_cpu.upsample_to_image([luma], [(height, width)], [(1, 1)], height, width, False)
    assert np.array_equal(gray[..., 0], luma[:height, :width])


def test_colour_every_cb_cr_pair():
    # The SIMD colour rows split jdcolor.c's products into 16-bit parts: every (Cb, Cr) must give
    # the int32 formula's value. Y only adds before the range limit, so Y = 0 shows every
    # non-negative offset and Y = 255 every negative one: with both, a wrong offset anywhere in
    # -255..255 shows. An odd width also exercises the scalar tail.
    cb, cr = (a.reshape(-1).astype(np.uint8) for a in np.meshgrid(np.arange(256), np.arange(256), indexing="ij"))
    width = cb.size - 5
    luma = np.repeat(np.array([0, 1, 128, 254, 255], np.uint8)[:, None], width, 1)
    chroma = [np.broadcast_to(c[:width], luma.shape).copy() for c in (cb, cr)]
    out = exact_cpu.upsample_to_image([luma, *chroma], [luma.shape] * 3, [(1, 1)] * 3, *luma.shape, True)
    ref = ycbcr_to_rgb(torch.from_numpy(np.stack([luma, *chroma])))
    assert np.array_equal(out, ref.permute(1, 2, 0).numpy())


def test_dc_only_blocks_every_dc():
    # Blocks without AC coefficients take a shortcut: every DC value and extreme tables.
    dc = np.arange(-32768, 32768, 16, dtype=np.int64)
    blocks = np.zeros((dc.size // 64, 64, 8, 8), np.int16)
    blocks[..., 0, 0] = dc.reshape(-1, 64)
    for q0 in (1, 7, 255, 65535):
        qtable = np.full((8, 8), 3, np.uint16)
        qtable[0, 0] = q0
        ref = blocks_to_plane(idct_islow(torch.from_numpy(blocks), torch.from_numpy(qtable.astype(np.int32))))
        assert np.array_equal(exact_cpu.idct_plane(blocks, qtable), ref.numpy()), q0


def test_idct_16bit_path_limits():
    # The SIMD IDCT works on pairs of blocks in 16-bit lanes and falls back to int32 when a
    # dequantized coefficient or a pass-1 output does not fit: blocks on both sides of those
    # limits, next to DC-only blocks, on an odd number of block columns (a block without a pair).
    rng = np.random.default_rng(1)
    blocks = rng.integers(-60, 60, (6, 7, 8, 8)).astype(np.int16)
    blocks[0, :2] = 4095                      # dequantized 32760 fits, pass-1 outputs do not
    blocks[1, 0] = 4096                       # dequantized 32768: over int16
    blocks[1, 1, 0, 0] = -4096                # -32768 fits exactly
    blocks[2, 3] = rng.integers(-3000, 3000, (8, 8))
    blocks[3, :, 1:] = 0                      # DC-only blocks ...
    blocks[3, :, 0, 1:] = 0
    blocks[3, 2, 7, 7] = 1                    # ... and one that is not, paired with one
    blocks[4, 1::2] = blocks[4, 1::2] * 400   # big pairs next to ordinary ones
    blocks[5, 0] = 0
    blocks[5, 0, 7, 7] = 4096                 # one coefficient over int16: 32768 != -32768
    blocks[5, 2] = 0
    blocks[5, 2, 0, :2] = 4000, -2880         # pass-1 outputs over int16 that pass 2 cancels
    blocks[5, 4] = 0
    blocks[5, 4, 7, 7] = 8192                 # 65536: 0 in 16 bits
    qtable = np.full((8, 8), 8, np.uint16)
    ref = blocks_to_plane(idct_islow(torch.from_numpy(blocks), torch.from_numpy(qtable.astype(np.int32))))
    assert np.array_equal(exact_cpu.idct_plane(blocks, qtable), ref.numpy())


def test_bands_on_threads_same_as_one(monkeypatch, jpeg_corpus, tmp_path):
    """One image cut into bands of rows on several threads gives the samples one thread gives:
    every file of the corpus (every sampling, odd sizes), with as many bands as rows allow."""
    from kdecode.jpeg.reader import settings

    monkeypatch.setattr(exact_cpu, "MIN_BAND_PIXELS", 1)  # band even the small files
    checked = 0
    for name, data in jpeg_corpus:
        coeffs = read_coefficients(data)
        one = exact_cpu.decode_array(coeffs)
        for threads in (2, 3, 7, 16):
            assert np.array_equal(exact_cpu.decode_array(coeffs, threads=threads), one), f"{name}, {threads} threads"
        checked += coeffs.height >= 64  # tall enough for two bands (16 rows per component's block pair)
    assert checked >= 5
    jpeglib = pytest.importorskip("jpeglib")  # vertical factors 2 and 4 (4:4:0, 1x4), not producible with Pillow
    for vh in (((2, 1), (1, 1), (1, 1)), ((1, 4), (1, 1), (1, 1)), ((1, 2), (1, 1), (1, 1))):
        im = jpeglib.from_spatial(photo(301, 45, 7))
        im.samp_factor = np.array(vh)
        path = tmp_path / "s.jpg"
        im.write_spatial(str(path), qt=50)
        coeffs = read_coefficients(path)
        one = exact_cpu.decode_array(coeffs)
        for threads in (2, 4, 9):
            assert np.array_equal(exact_cpu.decode_array(coeffs, threads=threads), one), f"samp {vh}, {threads} threads"
    monkeypatch.setattr(settings, "decode_threads", 1)
    assert settings.threads() == 1
    monkeypatch.setattr(settings, "decode_threads", None)
    assert 1 <= settings.threads() <= min(8, torch.get_num_threads())
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # what a DataLoader worker process has
        assert settings.threads() == 1
    finally:
        torch.set_num_threads(before)


def _native_or_skip():
    from kdecode.jpeg import reader

    if reader.get_backend().name != "native":
        pytest.skip("the native reader is not in use (its read decodes the pixels too)")


def test_read_and_decode_same_as_read_then_decode(monkeypatch, jpeg_corpus):
    """The native reader decoding the pixels in its own call, on a second thread that follows the
    entropy decoder for single-scan files (streamed even when small here), gives the blocks and
    the samples that reading, then decode_array, give: every file of the corpus and the extra
    one (arithmetic coding, 4:4:0, 4:1:1, mixed factors), 1 to 3 threads, RGBX or not."""
    from native_support import extra_corpus

    _native_or_skip()
    monkeypatch.setattr(exact_cpu, "MIN_STREAM_PIXELS", 1)
    monkeypatch.setattr(exact_cpu, "MIN_BAND_PIXELS", 1)
    for name, data in jpeg_corpus + list(extra_corpus().items()):
        coeffs = read_coefficients(data)
        for rgbx in (False, True):
            want = exact_cpu.decode_array(coeffs, rgbx)
            for threads in (1, 2, 3):
                got_coeffs, got = exact_cpu.read_and_decode(data, rgbx, threads)
                assert np.array_equal(got, want), f"{name}, rgbx {rgbx}, {threads} threads"
                assert all(np.array_equal(a.blocks, b.blocks) and np.array_equal(a.qtable, b.qtable)
                           for a, b in zip(got_coeffs.components, coeffs.components)), name
                assert got_coeffs.metadata == coeffs.metadata


def test_read_and_decode_with_the_jpeglib_reader(monkeypatch, jpeg_corpus):
    """A reader without the pixel stage compiled in (jpeglib) reads, then decode_array decodes:
    the same samples."""
    from kdecode.jpeg import reader

    pytest.importorskip("jpeglib")
    monkeypatch.setattr(exact_cpu, "MIN_STREAM_PIXELS", 1)
    want = {name: exact_cpu.decode_array(read_coefficients(data), True) for name, data in jpeg_corpus[:12]}
    try:
        reader.set_backend("jpeglib")
        for name, data in jpeg_corpus[:12]:
            assert np.array_equal(exact_cpu.read_and_decode(data, True, 2)[1], want[name]), name
    finally:
        reader.set_backend(None)


def test_read_and_decode_stops_cleanly_on_bad_data(monkeypatch, jpeg_corpus):
    """A file that fails while its pixels are being decoded beside the reader (truncated, or
    corrupt entropy-coded data) raises what read_coefficients raises, without a hang, again and
    again (the pixel thread is stopped and joined each time); tolerated (allow_truncated), it
    gives the samples of the coefficients read."""
    from kdecode import KdecodeError

    _native_or_skip()
    monkeypatch.setattr(exact_cpu, "MIN_STREAM_PIXELS", 1)
    rng = np.random.default_rng(3)
    # Cut or corrupted in the last scan: of a single-scan file, or of a progressive one (whose
    # pixels follow its last scan).
    files = [(f"{sampling}{'-restart' if restart else ''}{'-progressive' if progressive else ''}",
              encode(photo(300, 200, 8, gray=sampling == "gray"), quality=75, restart_marker_rows=restart,
                     progressive=progressive, **({} if sampling == "gray" else {"subsampling": sampling})))
             for sampling in ("4:2:0", "4:4:4", "gray") for restart in (0, 1) for progressive in (False, True)]
    outcomes = set()
    for name, data in files:
        sos = data.rindex(b"\xff\xda")
        for cut in (sos + (len(data) - sos) * f // 10 for f in (1, 5, 9)):  # a tenth, half, nine tenths in
            bad = [data[:cut]]
            flipped = bytearray(data)
            flipped[cut - 20:cut] = rng.integers(0, 255, 20, dtype=np.uint8).tobytes()
            bad.append(bytes(flipped))
            for sample in bad:
                for allow in (False, True):
                    try:
                        expected = exact_cpu.decode_array(read_coefficients(sample, allow_truncated=allow), True)
                    except KdecodeError as e:
                        expected = (type(e), str(e))
                    for _ in range(3 if isinstance(expected, tuple) else 1):
                        try:
                            got = exact_cpu.read_and_decode(sample, True, 2, allow_truncated=allow)[1]
                        except KdecodeError as e:
                            got = (type(e), str(e))
                        assert type(got) is type(expected), (name, cut, allow, got)
                        assert got == expected if isinstance(got, tuple) else np.array_equal(got, expected)
                    outcomes.add((allow, isinstance(expected, tuple)))
    assert {(False, True), (True, False)} <= outcomes  # files refused, and tolerated ones decoded


def test_progressive_scan_after_the_last_one(monkeypatch):
    """A progressive file's pixels follow its last scan (the one after which every coefficient
    has its final bits). libjpeg accepts one more scan even then (a first pass again, Ah = 0,
    changing coefficients without a warning): the streamed decode must still give the samples of
    the final blocks (it decodes again after the read)."""
    import re

    _native_or_skip()
    monkeypatch.setattr(exact_cpu, "MIN_STREAM_PIXELS", 1)
    data = encode(photo(120, 90, 4), quality=60, progressive=True, subsampling="4:2:0")
    # The first scan with the Huffman tables defined just before it, appended after the last.
    sos = data.index(b"\xff\xda")
    end = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]").search(data, sos + 2 + int.from_bytes(data[sos + 2:sos + 4], "big"))
    again = data[:-2] + data[data.rindex(b"\xff\xc4", 0, sos):end.start()] + b"\xff\xd9"
    coeffs = read_coefficients(again)
    assert coeffs.warnings == 0 and not all(
        np.array_equal(a.blocks, b.blocks) for a, b in zip(coeffs.components, read_coefficients(data).components))
    want = exact_cpu.decode_array(coeffs, True)
    for threads in (1, 2, 3):
        assert np.array_equal(exact_cpu.read_and_decode(again, True, threads)[1], want), threads


def test_auto_decides_before_the_read_whether_the_reader_decodes_pixels(monkeypatch):
    """decode(model="auto") on CPU: a file above quality 50 (exact) has its pixels decoded in
    the reader's own call, identical to Pillow's; a file the choice restores is read without
    pixels and restored as decode with the chosen model restores it."""
    import io

    from PIL import Image

    import kdecode
    from kdecode.models.registry import resolve_model

    _native_or_skip()
    calls = []
    real = exact_cpu.read_and_decode

    def recording(*args, **kwargs):
        coeffs, image = real(*args, **kwargs)
        calls.append(image is not None)
        return coeffs, image

    monkeypatch.setattr(exact_cpu, "read_and_decode", recording)
    pixels = photo(120, 90, 4)
    high, low = encode(pixels, quality=90), encode(pixels, quality=20)
    assert np.array_equal(np.asarray(kdecode.decode(high)), np.asarray(Image.open(io.BytesIO(high))))
    assert calls == [True]
    chosen = resolve_model("auto", "cpu", 20)
    restored = kdecode.decode(low, output="numpy")
    assert calls == [True, chosen == "exact"]
    assert np.array_equal(restored, kdecode.decode(low, model=chosen, output="numpy"))
