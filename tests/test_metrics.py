"""PSNR, SSIM and PSNR-B against scikit-image and hand-computed cases."""
import math
import warnings

import numpy as np
import pytest
import torch

from kdecode.metrics import blocking_effect_factor, measure, psnr, psnrb, ssim


def _pair(seed=0, shape=(48, 61), noise=12.0):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, shape).astype(np.uint8)
    b = np.clip(a + rng.normal(0, noise, shape), 0, 255).astype(np.uint8)
    return a, b


def test_psnr_hand_computed():
    a = np.full((8, 8), 100, np.uint8)
    b = a.copy()
    b[0, 0] = 116  # MSE = 256 / 64 = 4
    assert psnr(a, b) == pytest.approx(10 * math.log10(255 ** 2 / 4))
    assert psnr(a, a) == math.inf


def test_psnr_matches_skimage():
    metrics = pytest.importorskip("skimage.metrics")
    a, b = _pair()
    assert psnr(a, b) == pytest.approx(metrics.peak_signal_noise_ratio(a, b, data_range=255), abs=1e-10)


@pytest.mark.parametrize("seed,shape,noise", [(0, (48, 61), 12.0), (1, (11, 11), 40.0), (2, (64, 33), 3.0)])
def test_ssim_matches_skimage(seed, shape, noise):
    metrics = pytest.importorskip("skimage.metrics")
    a, b = _pair(seed, shape, noise)
    ref = metrics.structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                        data_range=255)
    assert ssim(a, b) == pytest.approx(ref, abs=1e-10)


def test_ssim_identity_and_inputs():
    a, b = _pair()
    assert ssim(a, a) == pytest.approx(1.0)
    # torch, [1, H, W] and float inputs give the same number as uint8 numpy.
    assert ssim(torch.from_numpy(a)[None], b.astype(np.float32)) == pytest.approx(ssim(a, b))
    with pytest.raises(ValueError):
        ssim(a, b[:, :-1])


def test_read_only_arrays_take_no_warning():
    # np.asarray of a PIL image is read-only; torch.from_numpy warns on such arrays.
    from PIL import Image
    a, b = _pair()
    ro_a, ro_b = np.asarray(Image.fromarray(a)), np.asarray(Image.fromarray(b))
    assert not ro_a.flags.writeable
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert psnr(ro_a, ro_b) == psnr(a, b)
        assert ssim(ro_a, ro_b) == ssim(a, b)


def test_bef_hand_computed():
    # 16x16: left half 100, right half 104. Only the pairs across the vertical block edge
    # (column 7|8, 16 of them) differ, by 4. Edge pairs: 16 horizontal + 16 vertical = 32, so
    # D_B = 16 * 16 / 32 = 8, D_B^c = 0, eta = log2(8) / log2(16) = 3/4: BEF = 6.
    img = np.full((16, 16), 100, np.uint8)
    img[:, 8:] = 104
    assert blocking_effect_factor(img) == pytest.approx(6.0)
    assert psnrb(img, img) == pytest.approx(10 * math.log10(255 ** 2 / 6.0))
    # The same jump inside a block is not blocking: BEF 0, PSNR-B = PSNR.
    inner = np.full((16, 16), 100, np.uint8)
    inner[:, 5:] = 104
    assert blocking_effect_factor(inner) == 0.0
    ref = np.full((16, 16), 101, np.uint8)
    assert psnrb(ref, inner) == pytest.approx(psnr(ref, inner))


def test_psnrb_penalises_blocking():
    a, _ = _pair(shape=(64, 64), noise=0)
    smooth = np.tile(np.linspace(60, 200, 64).astype(np.uint8), (64, 1))
    blocky = smooth.copy()
    blocky[:, ::8] = np.clip(blocky[:, ::8].astype(int) + 6, 0, 255)  # steps at every block edge
    assert psnrb(smooth, blocky) < psnr(smooth, blocky)
    m = measure(smooth, blocky)
    assert set(m) == {"psnr", "ssim", "psnrb"}
