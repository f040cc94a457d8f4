"""Helpers shared by the benchmarks: file sets, timing, machine description, tables."""
from __future__ import annotations

import functools
import io
import os
import platform
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
# KDECODE_DATA: the datasets elsewhere (e.g. a copy carried to the GPU machine, tools/gpu_lease.sh).
SHARED_DATA = Path(os.environ.get("KDECODE_DATA") or ROOT.parent / "shared" / "data")


def synthetic_photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Photo-like content (gradients, edges, texture, noise): compresses like a real photo."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([np.sin(x / 37.0) * 70 + 128, np.cos(y / 23.0) * 60 + 120, ((x + y) % 128) * 1.5], -1)
    img[((x // 97 + y // 61) % 2) == 0] *= 0.7
    img += rng.normal(0, 6, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def encode(array: np.ndarray, **options) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "JPEG", **options)
    return buf.getvalue()


# Sets made from the shared photos: name prefix -> (folder under SHARED_DATA, file pattern,
# default quality; None: the files as they are). "crops64-q75": 64x64 centre crops.
PHOTO_SOURCES = {"crops": ("BSDS500", "*.jpg", 75), "bsds500": ("BSDS500", "*.jpg", None),
                 "live1": ("LIVE1_color", "*.png", 10)}


def _centre_crop(rgb: np.ndarray, n: int | None) -> np.ndarray:
    if n is None:
        return rgb
    top, left = (rgb.shape[0] - n) // 2, (rgb.shape[1] - n) // 2
    return rgb[top:top + n, left:left + n]


def file_sets(names: list[str]) -> dict[str, list[bytes]]:
    """Named lists of JPEG bytes. ``bsds500``: the 432 originals; ``bsds500-qN``: re-encoded at
    quality N (4:2:0); ``live1-qN``: LIVE1_color at quality N; ``photo2000x1500-q90``: generated;
    ``crops64-q75``: 64x64 centre crops of the BSDS500 originals at quality 75 (small images).
    A ``-progressive`` suffix encodes the set as progressive JPEGs (Pillow's scan script).
    A folder ``SHARED_DATA/encoded/<name>/`` holding the set's JPEGs already (``write_sets``)
    is used as it is: the set travels as a few MB of JPEGs instead of its source images."""
    sets = {}
    for full_name in names:
        ready = sorted((SHARED_DATA / "encoded" / full_name).glob("*.jpg"))
        name = full_name.removesuffix("-progressive")
        encode_set = functools.partial(encode, progressive=name != full_name)
        if ready:
            sets[full_name] = [f.read_bytes() for f in ready]
        elif name.startswith("photo"):
            size, _, q = name[5:].partition("-q")
            w, h = map(int, size.split("x"))
            sets[full_name] = [encode_set(synthetic_photo(h, w), quality=int(q or 90), subsampling="4:2:0")]
        elif source := next((s for s in PHOTO_SOURCES if name.startswith(s)), None):
            folder, pattern, default_quality = PHOTO_SOURCES[source]
            files = sorted((SHARED_DATA / folder).rglob(pattern))
            if not files:
                print(f"skipping {full_name}: {SHARED_DATA / folder} not found")
                continue
            size, _, q = name[len(source):].partition("-q")
            quality = int(q) if q else default_quality
            if quality is None:  # the files as they are
                sets[full_name] = [f.read_bytes() for f in files]
                continue
            crop = int(size) if size else None
            sets[full_name] = [encode_set(_centre_crop(np.asarray(Image.open(f).convert("RGB")), crop),
                                          quality=quality, subsampling="4:2:0") for f in files]
        else:
            raise ValueError(f"unknown file set {full_name!r}")
    return sets


def write_sets(names: list[str], folder: Path) -> None:
    """The JPEGs of the named sets into ``folder/encoded/<name>/`` (read back by file_sets)."""
    for name, files in file_sets(names).items():
        out = folder / "encoded" / name
        out.mkdir(parents=True, exist_ok=True)
        for k, data in enumerate(files):
            (out / f"{k:04d}.jpg").write_bytes(data)


def megapixels(files: list[bytes]) -> float:
    total = 0
    for data in files:
        w, h = Image.open(io.BytesIO(data)).size
        total += w * h
    return total / 1e6


def best_time(fn, files: list[bytes], repeat: int = 3, min_time: float = 0.5) -> float:
    """Best wall time (s) of one pass of ``fn`` over ``files``, over ``repeat`` rounds, each
    round repeating the pass until ``min_time`` has elapsed (the pass count divides it)."""
    fn(files[0])  # warm-up: imports, lazy initialisation
    best = float("inf")
    for _ in range(repeat):
        passes, t0 = 0, time.perf_counter()
        while True:
            for data in files:
                fn(data)
            passes += 1
            elapsed = time.perf_counter() - t0
            if elapsed >= min_time:
                break
        best = min(best, elapsed / passes)
    return best


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    import PIL

    from kdecode.models.base import compute_info

    # The vector units decide the CPU figures: AVX2 or AVX-512, and whether bf16 is native.
    compute = compute_info()
    return (f"{cpu}, {os.cpu_count()} cores ({compute['cpu']}, bf16 {compute['cpu_bf16'].split()[0]}); {gpu}; "
            f"Python {platform.python_version()}, torch {torch.__version__}, Pillow {PIL.__version__}")


def markdown_table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def report(header: str, table: str, output: Path | None = None) -> None:
    """Print a benchmark's header and table; also write them to ``output`` (markdown) if given."""
    print(header)
    print(table)
    if output:
        output.write_text(header + "\n\n" + table + "\n")
