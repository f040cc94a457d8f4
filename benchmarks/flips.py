"""What the flip ensemble costs: each model's ``decode`` with ``flips=2`` and ``4`` as a ratio
to its one-pass time, measured in the same run (interleaved rounds, best of each).

    python benchmarks/flips.py [--models fast_arcnn dmcnn ...] [--repeats 3] [--out FILE.md]

The image: LIVE1's bikes.png (768x512) at q10 when ../shared/data is there, else a synthetic
photo of that size. Writes a markdown table with the machine description when ``--out`` is given.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import SHARED_DATA, encode, machine, markdown_table, report, synthetic_photo  # noqa: E402
from kdecode import load_model, read_coefficients  # noqa: E402

FLIPS = (1, 2, 4)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["fast_arcnn", "dmcnn"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    bikes = SHARED_DATA / "LIVE1_gray" / "bikes.png"
    if bikes.is_file():
        from PIL import Image

        from kdecode.train.data import jpeg_bytes, luma

        data, image = jpeg_bytes(luma(Image.open(bikes)), 10), "LIVE1_gray bikes.png"
    else:
        data, image = encode(synthetic_photo(512, 768)[..., 0], quality=10), "synthetic 768x512"
    coeffs = read_coefficients(data)
    rows = []
    with torch.inference_mode():
        for name in args.models:
            model = load_model(name, quality=10, device="cpu")
            best = dict.fromkeys(FLIPS, float("inf"))
            model.decode(coeffs, "cpu")  # warm-up
            for _ in range(args.repeats):
                for flips in FLIPS:
                    model.set_flips(flips)
                    t0 = time.perf_counter()
                    model.decode(coeffs, "cpu")
                    best[flips] = min(best[flips], time.perf_counter() - t0)
            rows.append([name, f"{best[1]:.3f}"] + [f"{best[f] / best[1]:.2f}x" for f in FLIPS[1:]])
    header = (f"Machine: {machine()}; torch threads {torch.get_num_threads()}; {image} at q10; "
              f"best of {args.repeats} interleaved rounds")
    report(header, markdown_table(["model", "one pass (s)", "flips=2", "flips=4"], rows), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
