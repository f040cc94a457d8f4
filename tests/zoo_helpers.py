"""Shared helpers of the model-zoo tests: where ../shared/data is, small JPEGs."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def need_data(*names: str) -> Path:
    """The dataset folder, or skip: the datasets live beside the repo, never in it."""
    for name in names:
        if not (DATA / name).is_dir():
            pytest.skip(f"dataset {name} not found at {DATA / name} (../shared/data is not part of the repo)")
    return DATA


def smooth_image(h: int, w: int, seed: int = 0, color: bool = False) -> np.ndarray:
    """A natural-ish uint8 test image: smooth gradients plus a little texture."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    planes = []
    for c in range(3 if color else 1):
        base = 128 + 60 * np.sin(xx / (7 + 3 * c)) * np.cos(yy / 11) + 30 * (xx / w - yy / h)
        planes.append(np.clip(base + rng.normal(0, 6, (h, w)), 0, 255))
    img = np.stack(planes, -1) if color else planes[0]
    return img.astype(np.uint8)


def jpeg(img: np.ndarray, quality: int, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=quality, **kw)
    return buf.getvalue()


def training_pair(images: list[np.ndarray], quality: int):
    """``(decoded, original)`` float ``[N, 1, H, W]`` on the 0..1 scale, as the training sampler
    gives them: the float decode of each gray image's JPEG at ``quality``, and the image."""
    import torch

    from kdecode import read_coefficients
    from kdecode.ops import blocks_to_planes
    from kdecode.pipeline import component_blocks

    planes = [blocks_to_planes(*component_blocks(read_coefficients(jpeg(y, quality)), 0)) / 255.0 for y in images]
    return torch.stack(planes)[:, None], torch.from_numpy(np.stack(images)).float()[:, None] / 255


def adam_losses(model, loss, steps: int, lr: float = 1e-3) -> list[float]:
    """The loss at each of ``steps`` Adam steps on ``loss()`` (a closure over one fixed batch)."""
    import torch

    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        value = loss()
        opt.zero_grad()
        value.backward()
        opt.step()
        losses.append(value.item())
    return losses


def check_decode_shape(model, size: tuple[int, int], color: bool) -> None:
    """``model.decode`` of a JPEG of any size and colour gives the exact decode's shape, uint8."""
    import torch

    from kdecode import read_coefficients
    from kdecode.pipeline import decode_exact

    coeffs = read_coefficients(jpeg(smooth_image(*size, color=color), 30))
    with torch.no_grad():
        out = model.decode(coeffs)
    assert out.shape == decode_exact(coeffs).shape and out.dtype == torch.uint8
