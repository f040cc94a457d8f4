"""Mutation fuzzer for the coefficient reader: real JPEGs, damaged in ways a decoder meets.

Every input must either decode or raise a :class:`kdecode.KdecodeError`; nothing may crash the
process, run for long, or leak memory. Inputs are generated from seeds encoded by Pillow and
libjpeg (every sampling, progressive, restart markers, arithmetic coding) plus, when
``../shared`` is present and ``--bsds N`` asks for it, some BSDS500 files. Input ``i`` is a pure
function of ``(--seed, i)``, so any failure can be replayed with ``--replay i``.

Short run (part of the test suite): tests/test_fuzz_reader.py. Long run::

    python tests/fuzz_reader.py --n 100000 [--seed 1] [--bsds 8]

prints a summary (inputs, outcomes, slowest input, RSS) and exits non-zero on any failure.
"""
from __future__ import annotations

import argparse
import faulthandler
import io
import os
import random
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import kdecode  # noqa: E402
from kdecode.ops import exact_cpu  # noqa: E402
from kdecode.pipeline import decode_exact  # noqa: E402
from conftest import SHARED_DATA, encode, photo  # noqa: E402
from native_support import jpeglib_jpeg  # noqa: E402

pil_info = sys.modules["kdecode.decode"].pil_info  # the module: kdecode.decode is the function

# A frame limit for fuzzing: mutated dimensions up to this stay in play (the default limit of
# 179 MP would make a legitimately huge, slow image out of one flipped height byte).
FUZZ_MAX_PIXELS = 16 << 20
INTERESTING = [0x00, 0x01, 0x02, 0x07, 0x08, 0x0F, 0x10, 0x11, 0x3F, 0x40, 0x7F, 0x80, 0xC0, 0xC2,
               0xC4, 0xC9, 0xCA, 0xD0, 0xD7, 0xD8, 0xD9, 0xDA, 0xDB, 0xDD, 0xFE, 0xFF]


def make_seeds(bsds: int = 0) -> list[bytes]:
    """Small JPEGs covering the decoder's paths (deterministic)."""
    seeds = []
    configs = [  # (h, w, gray, save options)
        (48, 64, False, {"subsampling": "4:2:0"}),
        (48, 64, False, {"subsampling": "4:2:0", "progressive": True}),
        (17, 33, False, {"subsampling": "4:2:2", "optimize": True}),
        (40, 40, False, {"subsampling": "4:4:4", "progressive": True}),
        (31, 57, True, {"restart_marker_blocks": 3}),
        (64, 96, False, {"subsampling": "4:2:0", "restart_marker_rows": 1}),
        (64, 96, False, {"subsampling": "4:4:4", "progressive": True, "restart_marker_blocks": 5}),
        (9, 17, True, {"progressive": True}),
        (80, 120, False, {"subsampling": "4:2:0", "quality": 20}),
        (80, 120, False, {"subsampling": "4:2:2", "progressive": True, "quality": 97}),
    ]
    for i, (h, w, gray, options) in enumerate(configs):
        seeds.append(encode(photo(h, w, seed=i, gray=gray), **{"quality": 75, **options}))
    seeds += [jpeglib_jpeg(photo(40, 48, seed=20), 80, flags)
              for flags in (["+ARITH_CODE"], ["+ARITH_CODE", "+PROGRESSIVE_MODE"])]
    # CMYK (4 components), and metadata segments for Pillow's info parser: EXIF, a split ICC profile.
    cmyk = np.concatenate([photo(24, 40, seed=21), photo(24, 40, seed=22)[..., :1]], axis=2)
    exif = Image.Exif()
    exif[0x0112], exif[0x010F] = 3, "kdecode"
    for options in ({"subsampling": 0}, {"subsampling": 2, "progressive": True, "exif": exif, "comment": "c"},
                    {"icc_profile": bytes(range(256)) * 300, "dpi": (72, 72)}):
        buf = io.BytesIO()
        Image.fromarray(cmyk, "CMYK").save(buf, "JPEG", quality=75, **options)
        seeds.append(buf.getvalue())
    if bsds:
        seeds += [p.read_bytes() for p in sorted((SHARED_DATA / "BSDS500" / "test").glob("*.jpg"))[:bsds]]
    return seeds


def _segments(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each marker segment with a length field, up to the first scan's data."""
    segs, pos = [], 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        length = (data[pos + 2] << 8) | data[pos + 3]
        segs.append((pos, min(pos + 2 + length, len(data))))
        if marker == 0xDA:
            break
        pos += 2 + length
    return segs


def _scan(data: bytes) -> bytes:
    """One SOS segment with its entropy-coded data (the last scan of the file)."""
    start = data.rfind(b"\xff\xda")
    end = data.rfind(b"\xff\xd9")
    return data[start:end] if 0 <= start < end else b""


def mutate(seeds: list[bytes], rng: random.Random) -> bytes:
    data = bytearray(rng.choice(seeds))
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4))):
        op = rng.randrange(9)
        n = len(data)
        if n < 4:
            break
        if op == 0:  # flip bits anywhere
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(n)] ^= 1 << rng.randrange(8)
        elif op == 1:  # an interesting byte anywhere
            data[rng.randrange(n)] = rng.choice(INTERESTING)
        elif op == 2:  # damage a header field (frame size, sampling, tables, scan parameters)
            segs = _segments(bytes(data))
            if segs:
                s, e = rng.choice(segs)
                if e - s > 4:
                    i = rng.randrange(s + 4, e)
                    data[i] = rng.choice(INTERESTING) if rng.random() < 0.5 else rng.randrange(256)
        elif op == 3:  # delete a range
            i = rng.randrange(n)
            del data[i:i + rng.choice((1, 2, 4, 16, 256, 4096))]
        elif op == 4:  # duplicate a range in place
            i = rng.randrange(n)
            j = rng.randrange(n)
            data[j:j] = data[i:i + rng.choice((1, 2, 16, 300))]
        elif op == 5:  # truncate
            del data[rng.randrange(2, n):]
        elif op == 6:  # splice the tail of another seed
            other = rng.choice(seeds)
            data[rng.randrange(n):] = other[rng.randrange(len(other)):]
        elif op == 7:  # repeat the last scan many times (scan limit, progression checks)
            scan = _scan(bytes(data))
            end = bytes(data).rfind(b"\xff\xd9")
            if scan and end > 0:
                data[end:end] = scan * rng.choice((2, 10, 100, 600))
        else:  # overwrite a run with random bytes
            i = rng.randrange(n)
            data[i:i + 16] = bytes(rng.randrange(256) for _ in range(min(16, n - i)))
    return bytes(data)


#: Images up to this size also go through the pixel stage (decode_exact, and the reader's own
#: call, streamed: exact_cpu.read_and_decode on two threads).
FUZZ_DECODE_PIXELS = 1 << 16


def run_one(data: bytes, allow_truncated: bool) -> str:
    """'ok' or the KdecodeError class name; anything else propagates."""
    try:
        c = kdecode.read_coefficients(data, max_pixels=FUZZ_MAX_PIXELS, allow_truncated=allow_truncated)
    except kdecode.KdecodeError as e:
        _check_streamed(data, allow_truncated, type(e).__name__)
        return type(e).__name__
    assert all(comp.blocks.dtype == np.int16 and comp.blocks.flags.c_contiguous for comp in c.components)
    # What decode does next with what was read: the PIL info from the (damaged) metadata, and
    # the exact pixel stage where the image is small enough to keep the run fast.
    with warnings.catch_warnings():  # Pillow warns of damaged EXIF, as it does opening such a file
        warnings.simplefilter("ignore")
        assert isinstance(pil_info(c), dict)
    if c.width * c.height <= FUZZ_DECODE_PIXELS:
        image = decode_exact(c)
        assert tuple(image.shape) == (len(c.components), c.height, c.width)
        _check_streamed(data, allow_truncated, "ok", image)
    return "ok"


def _check_streamed(data: bytes, allow_truncated: bool, outcome: str, image=None) -> None:
    """The reader decoding the pixels in its own call, on a second thread that follows libjpeg
    (streamed even for tiny images here), must end as reading did: the same error, or the same
    pixels. Larger images are refused by its pixel limit instead (kept small for speed)."""
    if exact_cpu.why_not() is not None:
        return
    saved, exact_cpu.MIN_STREAM_PIXELS = exact_cpu.MIN_STREAM_PIXELS, 1
    try:
        got = exact_cpu.read_and_decode(data, False, 2, max_pixels=FUZZ_DECODE_PIXELS,
                                        allow_truncated=allow_truncated)[1]
    except kdecode.KdecodeError as e:
        assert type(e).__name__ in (outcome, "ImageTooLargeError"), f"streamed: {type(e).__name__}, read: {outcome}"
        return
    finally:
        exact_cpu.MIN_STREAM_PIXELS = saved
    assert outcome == "ok", f"streamed decode succeeded where reading raised {outcome}"
    assert np.array_equal(np.moveaxis(got, -1, 0), image.numpy()), "streamed decode differs"


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def fuzz(n: int, seed: int = 1, bsds: int = 0, progress: bool = False, crash_dir: str | None = None) -> dict:
    """Run ``n`` inputs; return a summary. Failures (non-kdecode exceptions) are collected, not
    raised, so one run reports all of them."""
    seeds = make_seeds(bsds)
    counts: Counter = Counter()
    failures = []
    slowest = (0.0, -1)
    over_1s = 0
    rss = []
    # The index being run, written where a post-mortem can read it if the process dies.
    marker = open(crash_dir + "/current_index", "w+b") if crash_dir else None
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n, mininterval=5, desc="fuzz")
    t_start = time.perf_counter()
    for i in range(n):
        rng = random.Random(seed * 1_000_003 + i)
        data = mutate(seeds, rng)
        allow = rng.random() < 0.25
        if marker:
            os.pwrite(marker.fileno(), f"{i:<12d}".encode(), 0)
        t0 = time.perf_counter()
        try:
            outcome = run_one(data, allow)
        except Exception as e:  # anything but a KdecodeError is a bug
            outcome = "FAIL"
            failures.append((i, f"{type(e).__name__}: {e}"))
        dt = time.perf_counter() - t0
        counts[outcome] += 1
        if dt > slowest[0]:
            slowest = (dt, i)
        over_1s += dt > 1.0
        if i % 1000 == 0:
            rss.append(_rss_mib())
        if bar:
            bar.update(1)
    if bar:
        bar.close()
    rss.append(_rss_mib())
    warm = rss[min(len(rss) - 1, max(1, len(rss) // 10))]  # after the allocator has warmed up
    return {"inputs": n, "seeds": len(seeds), "outcomes": dict(counts), "failures": failures,
            "slowest_s": round(slowest[0], 4), "slowest_index": slowest[1], "over_1s": over_1s,
            "rss_mib_start": round(rss[0], 1), "rss_mib_warm": round(warm, 1), "rss_mib_end": round(rss[-1], 1),
            "rss_mib_max": round(max(rss), 1), "wall_s": round(time.perf_counter() - t_start, 1),
            "reader": kdecode.backend_info()["reader"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=int(os.environ.get("KDECODE_FUZZ_N", 2000)))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--bsds", type=int, default=0, help="add this many BSDS500 test files as seeds")
    ap.add_argument("--replay", type=int, help="run input INDEX alone and show its outcome")
    ap.add_argument("--save", help="with --replay: write the input to this file")
    args = ap.parse_args(argv)
    if args.replay is not None:
        rng = random.Random(args.seed * 1_000_003 + args.replay)
        data = mutate(make_seeds(args.bsds), rng)
        allow = rng.random() < 0.25
        if args.save:
            Path(args.save).write_bytes(data)
        print(f"input {args.replay}: {len(data)} bytes, allow_truncated={allow}: {run_one(data, allow)}")
        return 0
    faulthandler.enable()
    crash_dir = os.environ.get("TMPDIR", "/tmp")
    summary = fuzz(args.n, args.seed, args.bsds, progress=True, crash_dir=crash_dir)
    for k, v in summary.items():
        print(f"{k:>16}: {v if k != 'failures' else len(v)}")
    for i, msg in summary["failures"][:20]:
        print(f"  FAIL input {i}: {msg}")
    return 1 if summary["failures"] or summary["over_1s"] else 0


if __name__ == "__main__":
    sys.exit(main())
