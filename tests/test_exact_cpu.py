"""The C pixel stage of the exact decode on CPU (kdecode._exactcpu) against the torch reference
ops: identical samples, on the generated corpus and on random blocks and planes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from kdecode import read_coefficients
from kdecode.ops import blocks_to_plane, exact_cpu, idct_islow, upsample, ycbcr_to_rgb
from kdecode.pipeline import decode_exact

pytestmark = pytest.mark.skipif(exact_cpu.why_not() is not None and "FORCE" not in str(exact_cpu.why_not()),
                                reason=f"C path unavailable: {exact_cpu.why_not()}")


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
