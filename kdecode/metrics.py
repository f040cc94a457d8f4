"""Image quality metrics of the JPEG artifact-removal literature, on 8-bit gray / Y images.

All take two images of the same shape ``[H, W]`` (numpy or torch, any dtype holding 0..255
values; the first is the reference) and return a Python float. They compute in float64, so the
numbers do not depend on the device or dtype a model ran in.

- :func:`psnr`: ``10 log10(255^2 / MSE)`` over the whole image.
- :func:`ssim`: Wang et al. 2004 with an 11x11 Gaussian window (sigma 1.5), K1 = 0.01,
  K2 = 0.03, mean over the 'valid' positions (the window inside the image), as MATLAB's
  ``ssim_index`` and scikit-image's ``structural_similarity(gaussian_weights=True,
  use_sample_covariance=False)`` compute it.
- :func:`psnrb`: Yim and Bovik 2011: PSNR with the MSE increased by the blocking effect factor
  (BEF) of the *tested* image over the 8x8 grid.
"""
from __future__ import annotations

import math

import numpy as np
import torch

PEAK = 255.0


def _as_plane(image) -> torch.Tensor:
    if not isinstance(image, torch.Tensor):
        # A copy: arrays viewed from PIL images are read-only, which torch.from_numpy warns about.
        image = torch.from_numpy(np.array(image, dtype=np.float64))
    t = image.detach().to("cpu", torch.float64)
    if t.ndim == 3 and t.shape[0] == 1:
        t = t[0]
    if t.ndim != 2:
        raise ValueError(f"metrics take one gray plane [H, W], got shape {tuple(t.shape)}")
    return t


def _pair(reference, test) -> tuple[torch.Tensor, torch.Tensor]:
    ref, tst = _as_plane(reference), _as_plane(test)
    if ref.shape != tst.shape:
        raise ValueError(f"images differ in size: {tuple(ref.shape)} vs {tuple(tst.shape)}")
    return ref, tst


def _psnr_from_mse(mse: float) -> float:
    return math.inf if mse == 0 else 10.0 * math.log10(PEAK * PEAK / mse)


def psnr(reference, test) -> float:
    """Peak signal-to-noise ratio in dB (peak 255)."""
    ref, tst = _pair(reference, test)
    return _psnr_from_mse(float(((ref - tst) ** 2).mean()))


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x * x) / (2 * sigma * sigma))
    g = g / g.sum()
    return g


def _filter_valid(x: np.ndarray, taps: np.ndarray, axis: int) -> np.ndarray:
    """'valid' correlation of float64 ``x`` with 1-D ``taps`` along ``axis``, accumulated in
    place (numpy's strided in-place arithmetic is several times faster here than a float64
    convolution in torch, which has no fast CPU kernel for it)."""
    n = x.shape[axis] - len(taps) + 1
    window = [slice(None)] * x.ndim
    out = np.zeros(x.shape[:axis % x.ndim] + (n,) + x.shape[axis % x.ndim + 1:])
    tmp = np.empty_like(out)
    for k, tap in enumerate(taps):
        window[axis] = slice(k, k + n)
        np.multiply(x[tuple(window)], tap, out=tmp)
        out += tmp
    return out


def ssim(reference, test, window: int = 11, sigma: float = 1.5) -> float:
    """Structural similarity, mean over the valid window positions."""
    ref, tst = _pair(reference, test)
    if min(ref.shape) < window:
        raise ValueError(f"SSIM needs images of at least {window}x{window}, got {tuple(ref.shape)}")
    g = _gaussian_window(window, sigma).numpy()
    x, y = ref.numpy(), tst.numpy()
    # Separable 'valid' filtering of the five moment maps at once.
    maps = _filter_valid(_filter_valid(np.stack([x, y, x * x, y * y, x * y]), g, -1), g, -2)
    mu_x, mu_y, xx, yy, xy = maps
    var_x, var_y, cov = xx - mu_x * mu_x, yy - mu_y * mu_y, xy - mu_x * mu_y
    c1, c2 = (0.01 * PEAK) ** 2, (0.03 * PEAK) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2))
    return float(s.mean())


def blocking_effect_factor(image, block: int = 8) -> float:
    """BEF (Yim and Bovik, eq. 4-8): how much more the image jumps across block edges than
    between neighbours inside blocks, scaled by ``log2(block) / log2(min(H, W))``."""
    y = _as_plane(image)
    h, w = y.shape
    dh = (y[:, 1:] - y[:, :-1]) ** 2  # horizontal neighbours: pair (col j, col j+1)
    dv = (y[1:, :] - y[:-1, :]) ** 2
    edge_h = torch.zeros(w - 1, dtype=torch.bool)
    edge_h[block - 1::block] = True  # columns 7|8, 15|16, ...: the pairs across a block edge
    edge_v = torch.zeros(h - 1, dtype=torch.bool)
    edge_v[block - 1::block] = True
    d_edge = dh[:, edge_h].sum() + dv[edge_v, :].sum()
    d_inner = dh[:, ~edge_h].sum() + dv[~edge_v, :].sum()
    n_edge = h * int(edge_h.sum()) + w * int(edge_v.sum())
    n_inner = h * int((~edge_h).sum()) + w * int((~edge_v).sum())
    if n_edge == 0 or n_inner == 0:
        return 0.0
    d_b, d_bc = float(d_edge) / n_edge, float(d_inner) / n_inner
    if d_b <= d_bc:
        return 0.0
    eta = math.log2(block) / math.log2(min(h, w))
    return eta * (d_b - d_bc)


def psnrb(reference, test, block: int = 8) -> float:
    """PSNR-B in dB: PSNR of ``MSE + BEF(test)``."""
    ref, tst = _pair(reference, test)
    mse = float(((ref - tst) ** 2).mean())
    return _psnr_from_mse(mse + blocking_effect_factor(tst, block))


def measure(reference, test) -> dict[str, float]:
    """``{"psnr", "ssim", "psnrb"}`` of one image pair."""
    return {"psnr": psnr(reference, test), "ssim": ssim(reference, test), "psnrb": psnrb(reference, test)}
