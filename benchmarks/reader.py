"""Coefficient-reading throughput against Pillow's full decode of the same bytes, in one run.

    python benchmarks/reader.py [--repeat 7] [--jpeglib]

For each image set (../shared/data/BSDS500, all 432 files, when present; a generated 2000x1500
quality-90 4:2:0 photo-like image, read 16 times per pass) it times, interleaved pass by pass:
- Pillow: ``Image.open(BytesIO(b)).load()`` (entropy decoding + IDCT + upsampling + colour);
- kdecode: ``read_coefficients(b)`` with the active reader (single thread);
- with ``--jpeglib``: the same through the jpeglib fallback reader;
and then ``read_coefficients_batch(.., workers=2)`` against ``workers=1``.
Figures are megapixels per second of the best pass (the least disturbed by other processes on
a shared machine) and of the median pass; ratios compare passes of the same run.
"""
from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import kdecode  # noqa: E402
from kdecode.jpeg import reader  # noqa: E402
import corpus  # noqa: E402


def pillow_decode(files):
    for b in files:
        Image.open(io.BytesIO(b)).load()


def read_all(files):
    for b in files:
        kdecode.read_coefficients(b)


def passes(fns: dict, repeat: int) -> dict:
    """Seconds per pass of each function, interleaved so that load changes hit all alike."""
    times = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def image_sets() -> dict:
    sets = {}
    if corpus.BSDS500.is_dir():
        sets["BSDS500 (432 files)"] = [p.read_bytes() for p in sorted(corpus.BSDS500.rglob("*.jpg"))]
    else:
        print(f"skipping BSDS500: {corpus.BSDS500} not found")
    photo = corpus.pillow_jpeg(corpus.photo_like(2000, 1500, seed=0), quality=90, subsampling=2)
    sets["2000x1500 q90 4:2:0 (x16)"] = [photo] * 16
    return sets


def megapixels(files) -> float:
    return sum(Image.open(io.BytesIO(b)).size[0] * Image.open(io.BytesIO(b)).size[1] for b in files) / 1e6


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--jpeglib", action="store_true", help="also time the jpeglib fallback reader")
    args = ap.parse_args(argv)
    info = kdecode.backend_info()
    print(f"reader: {info}; Pillow {Image.__version__} (libjpeg-turbo "
          f"{__import__('PIL.features', fromlist=['x']).version('libjpeg_turbo')})")
    rows = []
    for name, files in image_sets().items():
        mp = megapixels(files)
        read_all(files)  # warm up: page in files, allocator, libraries
        pillow_decode(files)
        fns = {"pillow decode": lambda: pillow_decode(files), "read_coefficients": lambda: read_all(files)}
        if args.jpeglib:
            def jpeglib_read():
                reader.set_backend("jpeglib")
                try:
                    read_all(files)
                finally:
                    reader.set_backend(None)
            fns["jpeglib reader"] = jpeglib_read
        single = passes(fns, args.repeat)
        threads = passes({f"{w} worker{'s' if w > 1 else ''}": (lambda w=w: kdecode.read_coefficients_batch(files, workers=w))
                          for w in (1, 2)}, args.repeat)
        best = {k: min(v) for k, v in {**single, **threads}.items()}
        median = {k: statistics.median(v) for k, v in {**single, **threads}.items()}
        for k in best:
            base = "pillow decode" if k in single else "1 worker"
            rows.append((name, k, mp / best[k], mp / median[k], best[base] / best[k], median[base] / median[k], base))
    print(f"\n{'image set':<26} {'what':<18} {'MP/s best':>10} {'MP/s median':>12} {'x best':>7} {'x median':>9}  vs")
    for name, k, mps_best, mps_med, r_best, r_med, base in rows:
        print(f"{name:<26} {k:<18} {mps_best:>10.1f} {mps_med:>12.1f} {r_best:>7.2f} {r_med:>9.2f}  {base}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
