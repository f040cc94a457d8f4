"""Shared fixtures: the generated JPEG corpus and the datasets beside the project."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def shared_dir(name: str) -> Path:
    """A dataset folder of ../shared/data, or skip the test with the reason."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"dataset {name} not found at {path} (../shared is only beside the project in CI "
                    "and on the developers' machines)")
    return path


def photo(height: int, width: int, seed: int = 0, gray: bool = False) -> np.ndarray:
    """A deterministic photo-like uint8 image: smooth gradients, edges and noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    img = np.stack([np.sin(x / 17.0) * 80 + 128, np.cos(y / 11.0) * 70 + 120, ((x + y) % 64) * 3.0], -1)
    img[(x // 23 + y // 19) % 2 == 0] *= 0.6
    img = np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)
    return img[..., 1] if gray else img


def encode(array: np.ndarray, **save_options) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "JPEG", **save_options)
    return buf.getvalue()


SIZES = [(1, 1), (9, 7), (17, 33), (3, 1000), (1500, 2000)]  # (height, width)
SAMPLINGS = ["gray", "4:4:4", "4:2:2", "4:2:0"]


def corpus() -> list[tuple[str, bytes]]:
    """(name, JPEG bytes) covering every sampling, baseline/progressive, optimized Huffman
    tables, restart markers, odd sizes and qualities 5..95, all encoded by Pillow."""
    items = []
    qualities = iter(range(5, 96, 3))
    seed = 0
    for height, width in SIZES:
        for sampling in SAMPLINGS:
            for progressive in (False, True):
                seed += 1
                q = next(qualities, None) or 5 + (seed * 7) % 91
                opts = dict(quality=q, progressive=progressive)
                if sampling != "gray":
                    opts["subsampling"] = sampling
                if seed % 3 == 0:
                    opts["optimize"] = True
                if seed % 4 == 1:
                    opts["restart_marker_blocks"] = 1 + seed % 5
                elif seed % 4 == 2:
                    opts["restart_marker_rows"] = 1
                data = encode(photo(height, width, seed, gray=sampling == "gray"), **opts)
                flags = "".join(k[0] for k in ("optimize", "restart_marker_blocks", "restart_marker_rows") if k in opts)
                items.append((f"{height}x{width}-{sampling}-{'prog' if progressive else 'base'}-q{q}{'-' + flags if flags else ''}", data))
    return items


@pytest.fixture(scope="session")
def jpeg_corpus():
    return corpus()
