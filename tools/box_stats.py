"""How much a box constraint binds: the share of the DCT-domain estimates, before the clamp,
that fall outside the file's real quantization interval, and outside the interval an assumed
IJG quality gives, on LIVE1_gray compressed with IJG or non-IJG tables. D3: the stage-I output
on the patches it clamps; DMCNN: the DCT branch's output (what its DCT Rectify Unit clamps);
any other model (hrcnn, arcnn, ...): its decoded output without the output box, encoded again
(what the output box clamps).

    python tools/box_stats.py [--model d3|d3_128|dmcnn|hrcnn|...] [--quality 10] [--tables ijg flat camera ijg_edit]

Prints a markdown table (one row per table kind): files' JPEG PSNR is not needed, only the
stage-I output of the shipped weights. A constraint that rarely binds cannot change the result
much, whichever table defines it.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image

from kdecode.jpeg.reader import read_coefficients
from kdecode.models.registry import load_model
from kdecode.ops import dct_blocks, plane_to_blocks
from kdecode.pipeline import component_blocks
from kdecode.train.data import image_files, jpeg_bytes, luma
from kdecode.train.evaluate import nonijg_table

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "LIVE1_gray"


def outside(phi_alpha, quantized, table) -> tuple[float, float]:
    """(share of coefficients outside their interval, mean distance to it in quantization steps)."""
    q = table.float() / 255.0
    c = quantized.float()
    below, above = (c - 0.5) * q - phi_alpha, phi_alpha - (c + 0.5) * q
    distance = torch.relu(torch.maximum(below, above)) / q
    return (distance > 0).float().mean().item(), distance.mean().item()


def estimates(model, blocks, qtable):
    """(DCT-domain estimates on the 0..1 scale, integer coefficients, table) of the intervals
    the model's constraint uses, for one image's luma blocks."""
    if model.name == "dmcnn":
        net, dru = model.net, model.net.dru
        net.dru = False  # the estimate the DRU would clamp
        try:
            estimate = net.coefficients(blocks[None], qtable)
        finally:
            net.dru = dru
        quantized, itable = model.interval_blocks(blocks[None], qtable)
        return estimate / 255.0, quantized, itable
    if model.name == "d3":
        _, phi_alpha, quantized, itable, boxed = model._patchwise(blocks[None], qtable, with_stage1=True)
        return (phi_alpha[:, boxed] if boxed is not None else phi_alpha), quantized, itable
    # Any other restorer: its decoded output without the output box (rounded, over the whole
    # block grid), encoded again: what the output box clamps.
    box, model.output_box = model.output_box, False
    try:
        out = model.restore_blocks(blocks[None], qtable[None], (8 * blocks.shape[0], 8 * blocks.shape[1]))
    finally:
        model.output_box = box
    quantized, itable = model.interval_blocks(blocks[None], qtable)
    return dct_blocks(plane_to_blocks(out.float() - 128.0)) / 255.0, quantized, itable


@torch.inference_mode()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="d3")
    ap.add_argument("--quality", type=int, default=10)
    ap.add_argument("--tables", nargs="+", default=["ijg", "flat", "camera", "ijg_edit"])
    ap.add_argument("--data", default=str(DATA))
    args = ap.parse_args()
    model = load_model(args.model, quality=args.quality)
    print(f"{args.model} ({Path(model.card['_weights']).stem}), LIVE1_gray, tables at about q{args.quality}\n")
    print("| tables | outside real interval | mean distance (steps) | outside assumed-IJG interval | mean distance (steps) |")
    print("|---|---|---|---|---|")
    for kind in args.tables:
        table = None if kind == "ijg" else nonijg_table(kind, args.quality)
        sums = {"real": [0.0, 0.0], "assumed": [0.0, 0.0]}
        files = image_files(args.data)
        for path in files:
            coeffs = read_coefficients(jpeg_bytes(luma(Image.open(path)), args.quality, table))
            blocks, qtable = component_blocks(coeffs, 0)
            for intervals in ("real", "assumed"):
                model.intervals = intervals
                phi_alpha, quantized, itable = estimates(model, blocks, qtable)
                share, distance = outside(phi_alpha, quantized, itable)
                sums[intervals][0] += share / len(files)
                sums[intervals][1] += distance / len(files)
        (rs, rd), (as_, ad) = sums["real"], sums["assumed"]
        print(f"| {kind} | {100 * rs:.2f}% | {rd:.4f} | {100 * as_:.2f}% | {ad:.4f} |")


if __name__ == "__main__":
    main()
