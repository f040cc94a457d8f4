"""``kdecode eval``: the papers' protocol on a folder of lossless images.

Each image's luma (gray as is; colour by MATLAB's rgb2ycbcr) is compressed by Pillow at quality
q, read back by kdecode, decoded exactly (the "JPEG" row, identical to Pillow's decode) and by
the model; PSNR / SSIM / PSNR-B against the original are averaged over the images.

``tables=KIND`` compresses with a non-IJG table of about quality q's strength instead
(:func:`nonijg_table`, Pillow's ``qtables=``): the files other encoders (cameras, editors, custom
tables) write, on which box constraints from the file's real table and from an assumed IJG
quality differ. The images are made on the fly, the same every run.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..jpeg.quality import ijg_table
from ..jpeg.reader import read_coefficients
from ..metrics import measure
from ..pipeline import decode_exact
from .data import image_files, jpeg_bytes, luma

METRICS = ("psnr", "ssim", "psnrb")


#: non-IJG table kinds (:func:`nonijg_table`); ``"nonijg"`` on the command line means all three
TABLE_KINDS = ("flat", "camera", "ijg_edit")
# ijg_edit: a few entries of the IJG table changed, as an encoder tuned by hand would: finer
# steps for three low frequencies, coarser for three mid ones (at q10..q20 none is clipped at 255).
_FINER = ([0, 1, 1], [1, 0, 1])
_COARSER = ([2, 3, 1], [3, 2, 4])


def nonijg_table(kind: str, quality: int) -> np.ndarray:
    """A uint16 ``[8, 8]`` luma table of kind ``flat`` (one step for every frequency),
    ``camera`` (steps growing linearly with ``u + v``: the smooth shape of camera firmware tables,
    not IJG's) or ``ijg_edit`` (IJG's table at ``quality`` with six entries changed), at about the
    strength of IJG ``quality``: flat and camera tables are scaled from the geometric mean ``g`` of
    IJG's table (flat ``g / 2``, camera geometric mean ``0.8 g``), which gives a JPEG PSNR close to
    IJG's on LIVE1_gray (q10: IJG 27.77, flat 27.69, camera 28.10 dB; q20: 30.07, 29.88, 29.65)."""
    ijg = ijg_table(quality).astype(np.float64)
    g = np.exp(np.log(ijg).mean())
    if kind == "flat":
        table = np.full((8, 8), g / 2)
    elif kind == "camera":
        ramp = 1.0 + np.add.outer(np.arange(8), np.arange(8)) / 2.0
        table = 0.8 * g * ramp / np.exp(np.log(ramp).mean())
    elif kind == "ijg_edit":
        table = ijg.copy()
        table[_FINER] *= 0.5
        table[_COARSER] *= 1.5
    else:
        raise ValueError(f"table kind must be one of {TABLE_KINDS}, got {kind!r}")
    return np.clip(np.round(table), 1, 255).astype(np.uint16)


def _mean(rows: list[dict]) -> dict:
    return {m: float(np.mean([r[m] for r in rows])) for m in METRICS}


def evaluate(decoder, data_dir: str | Path, quality: int, device=None, progress: bool = True,
             tables: str | None = None) -> dict:
    """Scores of ``decoder`` (a :class:`~kdecode.models.base.Decoder`) on ``data_dir`` at
    ``quality`` (IJG tables, or the non-IJG ``tables`` kind of that strength): ``{"dataset",
    "quality", "images", "jpeg": {psnr, ssim, psnrb}, "model": {...}, "model_seconds",
    "per_image": [...]}``."""
    from tqdm import tqdm

    files = image_files(data_dir)
    qtable = nonijg_table(tables, quality) if tables else None
    name = Path(data_dir).name + (f" ({tables} tables)" if tables else "")
    rows, seconds = [], 0.0
    for path in tqdm(files, desc=f"eval {name} q{quality}", disable=not progress, leave=False):
        y = luma(Image.open(path))
        coeffs = read_coefficients(jpeg_bytes(y, quality, qtable))
        jpeg = decode_exact(coeffs)[0]
        t0 = time.perf_counter()
        with torch.inference_mode():
            restored = decoder.decode(coeffs, device)
        if restored.is_cuda:
            torch.cuda.synchronize()
        seconds += time.perf_counter() - t0
        rows.append({"image": path.name, "jpeg": measure(y, jpeg), "model": measure(y, restored[0].cpu())})
    return {"dataset": name, "quality": quality, "images": len(rows),
            "jpeg": _mean([r["jpeg"] for r in rows]), "model": _mean([r["model"] for r in rows]),
            "model_seconds": seconds, "per_image": rows}


def format_table(results: list[dict], model_name: str) -> str:
    """Markdown table in the papers' layout: PSNR (dB) | SSIM | PSNR-B (dB), JPEG vs model."""
    lines = [f"| dataset | q | JPEG PSNR | JPEG SSIM | JPEG PSNR-B | {model_name} PSNR | {model_name} SSIM "
             f"| {model_name} PSNR-B |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        j, m = r["jpeg"], r["model"]
        lines.append(f"| {r['dataset']} | {r['quality']} | {j['psnr']:.2f} | {j['ssim']:.4f} | {j['psnrb']:.2f} "
                     f"| {m['psnr']:.2f} | {m['ssim']:.4f} | {m['psnrb']:.2f} |")
    return "\n".join(lines)
