"""``kdecode eval``: the papers' protocol on a folder of lossless images.

Each image's luma (gray as is; colour by MATLAB's rgb2ycbcr) is compressed by Pillow at quality
q, read back by kdecode, decoded exactly (the "JPEG" row, identical to Pillow's decode) and by
the model; PSNR / SSIM / PSNR-B against the original are averaged over the images.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..jpeg.reader import read_coefficients
from ..metrics import measure
from ..pipeline import decode_exact
from .data import image_files, jpeg_bytes, luma

METRICS = ("psnr", "ssim", "psnrb")


def _mean(rows: list[dict]) -> dict:
    return {m: float(np.mean([r[m] for r in rows])) for m in METRICS}


def evaluate(decoder, data_dir: str | Path, quality: int, device=None, progress: bool = True) -> dict:
    """Scores of ``decoder`` (a :class:`~kdecode.models.base.Decoder`) on ``data_dir`` at
    ``quality``: ``{"dataset", "quality", "images", "jpeg": {psnr, ssim, psnrb}, "model": {...},
    "model_seconds", "per_image": [...]}``."""
    from tqdm import tqdm

    files = image_files(data_dir)
    rows, seconds = [], 0.0
    for path in tqdm(files, desc=f"eval {Path(data_dir).name} q{quality}", disable=not progress, leave=False):
        y = luma(Image.open(path))
        coeffs = read_coefficients(jpeg_bytes(y, quality))
        jpeg = decode_exact(coeffs)[0]
        t0 = time.perf_counter()
        with torch.inference_mode():
            restored = decoder.decode(coeffs, device)
        if restored.is_cuda:
            torch.cuda.synchronize()
        seconds += time.perf_counter() - t0
        rows.append({"image": path.name, "jpeg": measure(y, jpeg), "model": measure(y, restored[0].cpu())})
    return {"dataset": Path(data_dir).name, "quality": quality, "images": len(rows),
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
