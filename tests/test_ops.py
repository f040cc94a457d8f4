"""Torch reference ops against independent references (scipy's DCT, libjpeg via Pillow)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from kdecode.ops import (blocks_to_plane, clamp_planes, clamp_to_interval, dct_blocks, dequantize, idct_blocks,
                         idct_islow, mirror_blocks, pad_to_blocks, plane_to_blocks, quantize, rgb_to_ycbcr, upsample,
                         ycbcr_to_rgb)

scipy_fft = pytest.importorskip("scipy.fft")
rng = np.random.default_rng(0)


def test_dct_matches_scipy_orthonormal():
    x = rng.normal(0, 50, (5, 3, 8, 8))
    ours = dct_blocks(torch.from_numpy(x)).numpy()
    ref = scipy_fft.dctn(x, type=2, norm="ortho", axes=(-2, -1))
    np.testing.assert_allclose(ours, ref, atol=1e-9)
    np.testing.assert_allclose(idct_blocks(torch.from_numpy(ref)).numpy(), x, atol=1e-9)


def test_idct_islow_close_to_float_idct():
    coef = torch.from_numpy(rng.integers(-30, 30, (200, 8, 8))).to(torch.int16)
    coef[:, 0, 0] = torch.from_numpy(rng.integers(-60, 60, 200)).to(torch.int16)
    q = torch.from_numpy(rng.integers(1, 20, (8, 8)))
    exact = idct_islow(coef, q).to(torch.float64)
    ref = (idct_blocks(dequantize(coef, q, torch.float64)) + 128).clamp(0, 255)
    assert (exact - ref).abs().max() <= 1.0 + 1e-9


def test_idct_islow_dc_only_and_saturation():
    coef = torch.zeros(3, 8, 8, dtype=torch.int16)
    coef[0, 0, 0] = 8   # DC 8*q(1) -> +1 level
    coef[1, 0, 0] = 2000  # far above white
    coef[2, 0, 0] = -2000
    out = idct_islow(coef, torch.ones(8, 8, dtype=torch.int32))
    assert out.dtype == torch.uint8
    assert (out[0] == 129).all() and (out[1] == 255).all() and (out[2] == 0).all()


def test_blocks_roundtrip_and_padding():
    plane = torch.arange(16 * 24).reshape(16, 24)
    blocks = plane_to_blocks(plane)
    assert blocks.shape == (2, 3, 8, 8)
    assert torch.equal(blocks[1, 2], plane[8:16, 16:24])
    assert torch.equal(blocks_to_plane(blocks), plane)
    padded = pad_to_blocks(torch.arange(10 * 13, dtype=torch.uint8).reshape(10, 13))
    assert padded.shape == (16, 16) and padded.dtype == torch.uint8
    assert torch.equal(padded[15, 15], padded[9, 12]) and torch.equal(padded[9, 13:], padded[9, 12].expand(3))
    with pytest.raises(ValueError):
        plane_to_blocks(torch.zeros(9, 8))


@pytest.mark.parametrize("count, grid", [(2, (3, 4)), (5, (3, 2)), (1, (1, 1))])
def test_mirror_blocks_is_the_mirrored_image(count, grid):
    """The mirrored grid decodes to the decoded plane padded symmetrically (numpy's reference),
    at most the grid's own size a side, and integer coefficients stay integers."""
    blocks = torch.from_numpy(rng.integers(-50, 50, (2, *grid, 8, 8))).to(torch.int16)
    mirrored, (rows, cols) = mirror_blocks(blocks, count)
    assert (rows, cols) == (min(count, grid[0]), min(count, grid[1])) and mirrored.dtype == torch.int16
    assert mirrored.shape == (2, grid[0] + 2 * rows, grid[1] + 2 * cols, 8, 8)
    plane = blocks_to_plane(idct_blocks(blocks.double())).numpy()
    expected = np.pad(plane, ((0, 0), (8 * rows,) * 2, (8 * cols,) * 2), mode="symmetric")
    np.testing.assert_allclose(blocks_to_plane(idct_blocks(mirrored.double())).numpy(), expected, atol=1e-9)
    assert torch.equal(mirrored[:, rows:rows + grid[0], cols:cols + grid[1]], blocks)


def test_quantize_and_clamp_interval():
    q = torch.full((8, 8), 10.0)
    x = torch.tensor([[14.9, 15.1, -15.1, -4.9, 0.0, 25.0, -25.0, 33.0]] * 8)
    c = quantize(x, q)
    assert c[0].tolist() == [1, 2, -2, 0, 0, 3, -3, 3]  # round half away from zero
    y = torch.tensor([[0.0, 100.0, -100.0, 4.0, 6.0, 30.0, -31.0, 36.0]] * 8, requires_grad=True)
    out = clamp_to_interval(y, c, q)
    lo, hi = (c.float() - 0.5) * q, (c.float() + 0.5) * q
    assert ((out >= lo) & (out <= hi)).all()
    assert out[0, 3] == 4.0  # inside: untouched
    out.sum().backward()
    assert y.grad[0, 3] == 1 and y.grad[0, 1] == 0  # straight through inside, zero outside


def test_clamp_planes_is_the_projection_onto_the_box():
    """clamp_planes puts every block's DCT coefficients inside its quantization interval, leaves
    a plane that is inside alone, is idempotent, and moves any plane closer to every plane of
    the box (the orthonormal DCT makes the coefficient clamp a Euclidean projection)."""
    g = torch.Generator().manual_seed(3)
    q = torch.randint(4, 60, (8, 8), generator=g).double()
    quantized = torch.randint(-6, 7, (2, 3, 4, 8, 8), generator=g)
    lo, hi = (quantized - 0.5) * q, (quantized + 0.5) * q

    def in_box() -> torch.Tensor:  # a random plane of the box
        return blocks_to_plane(idct_blocks(lo + (hi - lo) * torch.rand(lo.shape, generator=g, dtype=torch.float64))) + 128

    def coefficients(plane: torch.Tensor) -> torch.Tensor:
        return dct_blocks(plane_to_blocks(plane - 128))

    inside = in_box()
    noisy = inside + 40 * torch.randn(inside.shape, generator=g, dtype=torch.float64)
    out = clamp_planes(noisy, quantized, q)
    assert ((coefficients(out) >= lo - 1e-9) & (coefficients(out) <= hi + 1e-9)).all()
    assert not ((coefficients(noisy) >= lo) & (coefficients(noisy) <= hi)).all()
    torch.testing.assert_close(clamp_planes(inside, quantized, q), inside)
    torch.testing.assert_close(clamp_planes(out, quantized, q), out)
    for _ in range(5):  # any plane of the box is nearer after the projection
        other = in_box()
        assert ((out - other) ** 2).sum() < ((noisy - other) ** 2).sum()


def test_upsample_exact_matches_libjpeg_formulas():
    x = torch.tensor([[10, 20, 40, 80]], dtype=torch.uint8)
    h2v1 = upsample(x, 2, 1)
    # libjpeg h2v1 fancy: edges copied, (3*cur + prev + 1) >> 2, (3*cur + next + 2) >> 2
    assert h2v1.tolist() == [[10, 13, 17, 25, 35, 50, 70, 80]]
    assert upsample(torch.tensor([[7, 9]], dtype=torch.uint8), 2, 1).tolist() == [[7, 7, 9, 9]]  # width <= 2: box
    assert upsample(x, 4, 1).tolist() == [[10] * 4 + [20] * 4 + [40] * 4 + [80] * 4]


def test_upsample_float_is_unrounded_integer_filter():
    x = torch.from_numpy(rng.integers(0, 256, (2, 5, 7))).to(torch.uint8)
    for h, v in ((2, 1), (1, 2), (2, 2)):
        exact = upsample(x, h, v).float()
        smooth = upsample(x.float(), h, v)
        assert smooth.shape == exact.shape == (2, 5 * v, 7 * h)
        assert (exact - smooth).abs().max() <= 1.0
    # Constant planes stay constant.
    assert torch.allclose(upsample(torch.full((3, 3), 77.0), 2, 2), torch.tensor(77.0))


def test_color_roundtrip_and_exact_vs_float():
    rgb = torch.from_numpy(rng.integers(0, 256, (3, 40, 40))).to(torch.uint8)
    ycc = rgb_to_ycbcr(rgb)
    back = ycbcr_to_rgb(ycc)
    assert (back.int() - rgb.int()).abs().max() <= 2
    exact = ycbcr_to_rgb(ycc).float()
    smooth = ycbcr_to_rgb(ycc.double()).clamp(0, 255)
    assert (exact - smooth).abs().max() <= 1.0
    # Gray axis: Cb = Cr = 128 gives R = G = B = Y exactly.
    y = torch.arange(256, dtype=torch.uint8)
    g = ycbcr_to_rgb(torch.stack([y, torch.full_like(y, 128), torch.full_like(y, 128)]), dim=0)
    assert torch.equal(g, y.expand(3, 256))


def test_ops_are_batched_and_differentiable():
    x = torch.randn(2, 4, 3, 5, 8, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: idct_blocks(t), (x[:1, :1, :1, :1],))
    assert idct_blocks(x).shape == x.shape
    p = torch.rand(2, 1, 6, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: upsample(t, 2, 2), (p,))


def test_transforms_train_after_inference_mode():
    # The DCT matrix is cached: made first under inference_mode (a decode with a model) it must
    # still serve training later in the same process.
    from kdecode.ops import dct

    dct._dct_matrix_cpu.cache_clear()
    with torch.inference_mode():
        idct_blocks(torch.ones(1, 8, 8, dtype=torch.float64))
    x = torch.ones(1, 8, 8, dtype=torch.float64, requires_grad=True)
    idct_blocks(x).sum().backward()
    assert x.grad is not None
