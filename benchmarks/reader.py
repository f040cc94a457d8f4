"""Coefficient-reading throughput against Pillow's full decode of the same bytes, in one run.

    python benchmarks/reader.py [--repeat 7] [--jpeglib]

For each image set (../shared/data/BSDS500, all 432 files, when present; the generated 2000x1500
quality-90 4:2:0 photo of benchmarks/common.py, 16 times per pass) it times, pass by pass:
- Pillow: ``Image.open(BytesIO(b)).load()`` (entropy decoding + IDCT + upsampling + colour);
- kdecode: ``read_coefficients(b)`` with the active reader (single thread);
- with ``--jpeglib``: the same through the jpeglib fallback reader;
and then ``read_coefficients_batch(.., workers=2)`` against ``workers=1``, on the whole set in one
call and in batches of 32.
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

from PIL import Image, features

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's kdecode, built in place

import kdecode  # noqa: E402
from common import file_sets, machine, markdown_table, megapixels, report  # noqa: E402
from kdecode.jpeg import reader  # noqa: E402


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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--jpeglib", action="store_true", help="also time the jpeglib fallback reader")
    ap.add_argument("--output", type=Path, default=None, help="also write the markdown table here")
    args = ap.parse_args(argv)
    header = (f"Machine: {machine()}; reader: {kdecode.backend_info()}; Pillow's libjpeg-turbo "
              f"{features.version('libjpeg_turbo')}; {args.repeat} passes")
    rows = []
    sets = file_sets(["bsds500", "photo2000x1500-q90"])
    if "photo2000x1500-q90" in sets:
        sets["photo2000x1500-q90"] *= 16  # one pass: 16 reads, for steadier timings and 2 workers
    for name, files in sets.items():
        mp = megapixels(files)
        read_all(files)  # warm up: page in files, allocator, libraries
        pillow_decode(files)
        fns = {"Pillow decode": lambda: pillow_decode(files), "read_coefficients": lambda: read_all(files)}
        if args.jpeglib:
            def jpeglib_read():
                reader.set_backend("jpeglib")
                try:
                    read_all(files)
                finally:
                    reader.set_backend(None)
            fns["jpeglib reader"] = jpeglib_read
        single = passes(fns, args.repeat)
        # All results of a batch stay alive until it returns: on the whole set that is hundreds
        # of megabytes of fresh pages (page faults, which threads contend on); batches of 32 are
        # what a data loader does.
        batches = {"all": [files], "32": [files[i:i + 32] for i in range(0, len(files), 32)]}
        groups = [(single, "Pillow decode")]
        for size, chunks in batches.items():
            groups.append((passes({f"batch {size}, {w} worker{'s' if w > 1 else ''}":
                                   (lambda w=w, chunks=chunks: [kdecode.read_coefficients_batch(c, workers=w)
                                                                for c in chunks]) for w in (1, 2)}, args.repeat),
                           f"batch {size}, 1 worker"))
        for group, anchor in groups:
            best = {k: min(v) for k, v in group.items()}
            median = {k: statistics.median(v) for k, v in group.items()}
            for k in group:
                rows.append([name, len(files), k, f"{mp / best[k]:.1f}", f"{mp / median[k]:.1f}",
                             f"{best[anchor] / best[k]:.2f}x", f"{median[anchor] / median[k]:.2f}x", anchor])
    table = markdown_table(["files", "n", "reader", "MP/s best", "MP/s median", "ratio best", "ratio median", "vs"],
                           rows)
    report(header, table, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
