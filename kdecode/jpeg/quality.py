"""IJG quality of a quantization table: which ``quality`` setting of libjpeg (and so Pillow)
produces it, or the nearest one for tables from other encoders."""
from __future__ import annotations

from functools import lru_cache

import numpy as np

# ITU-T T.81 Annex K tables (natural order), the base of libjpeg's jcparam.c.
STD_LUMINANCE = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
], dtype=np.int64).reshape(8, 8)
STD_CHROMINANCE = np.array([
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99,
], dtype=np.int64).reshape(8, 8)


def ijg_table(quality: int, chroma: bool = False, force_baseline: bool = True) -> np.ndarray:
    """The uint16 [8, 8] table libjpeg's ``jpeg_set_quality(quality)`` makes (jcparam.c)."""
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be in 1..100, got {quality}")
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    base = STD_CHROMINANCE if chroma else STD_LUMINANCE
    table = np.clip((base * scale + 50) // 100, 1, 255 if force_baseline else 32767)
    return table.astype(np.uint16)


@lru_cache(maxsize=2)
def _all_tables(chroma: bool) -> np.ndarray:
    """float64 [100, 8, 8]: the IJG tables of qualities 1..100 (made once: this runs per decode)."""
    return np.stack([ijg_table(quality, chroma) for quality in range(1, 101)]).astype(np.float64)


def estimate_quality(qtable: np.ndarray, chroma: bool = False) -> tuple[int, bool]:
    """(IJG quality whose table is nearest ``qtable``, whether it matches exactly).

    Nearest means the smallest mean absolute log-ratio over the 64 entries, so a table that is
    uniformly finer or coarser than IJG's lands on the quality of similar step sizes. Ties go to
    the lowest quality."""
    q = np.asarray(qtable, dtype=np.float64).reshape(8, 8)
    # Cached by the table's bytes: this runs on every decode with a model or "auto", and files
    # from one encoder share their tables (the comparison with 100 tables costs about 25 us).
    return _estimate(q.tobytes(), chroma)


@lru_cache(maxsize=1024)
def _estimate(table: bytes, chroma: bool) -> tuple[int, bool]:
    q = np.frombuffer(table, dtype=np.float64).reshape(8, 8)
    tables = _all_tables(chroma)
    exact = (tables == q).all(axis=(1, 2))
    if exact.any():
        return int(np.argmax(exact)) + 1, True
    err = np.abs(np.log(q) - np.log(tables)).mean(axis=(1, 2))
    return int(np.argmin(err)) + 1, False
