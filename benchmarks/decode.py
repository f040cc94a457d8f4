"""Decode throughput of kdecode against Pillow, as ratios measured in one run.

    python benchmarks/decode.py [--sets bsds500 photo2000x1500-q90] [--threads 1]

For each file set: Pillow's full decode (``Image.open(BytesIO(b)).load()``), kdecode's
``read_coefficients`` and ``decode(model=None)`` (bit-exact with Pillow), in MP/s and as a ratio
to Pillow. Single process; torch's intra-op threads are set by --threads.
"""
from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from PIL import Image  # noqa: E402

import kdecode  # noqa: E402
from common import best_time, file_sets, machine, markdown_table, megapixels  # noqa: E402


def pillow_decode(data: bytes):
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", nargs="+", default=["bsds500", "photo2000x1500-q90"])
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--output", type=Path, default=None, help="also write the markdown table here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    candidates = {
        "Pillow decode": pillow_decode,
        "kdecode read_coefficients": lambda d: kdecode.read_coefficients(d),
        "kdecode decode(model=None)": lambda d: kdecode.decode(d, model=None, output="numpy"),
    }
    rows = []
    for name, files in file_sets(args.sets).items():
        mp = megapixels(files)
        times = {label: best_time(fn, files, args.repeat) for label, fn in candidates.items()}
        anchor = times["Pillow decode"]
        for label, t in times.items():
            rows.append([name, len(files), label, f"{mp / t:.1f}", f"{anchor / t:.2f}x"])
    table = markdown_table(["files", "n", "decoder", "MP/s", "vs Pillow"], rows)
    header = f"Machine: {machine()}; reader: {kdecode.backend_info()['reader']}; torch threads: {args.threads}"
    print(header)
    print(table)
    if args.output:
        args.output.write_text(header + "\n\n" + table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
