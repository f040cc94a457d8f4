"""Decode-and-restore throughput against Pillow, as ratios measured in one run (also `kdecode bench`).

    python benchmarks/throughput.py [--sets bsds500-q10 ... photo3840x2160-q90] [--device cpu cuda]
                                    [--limit N] [--model-files N] [--out benchmarks/results]

For every file set: images/s, MP/s and peak memory (CPU: resident-set growth; GPU: peak CUDA
allocation) of Pillow's decode (the anchor), simplejpeg (if installed), kdecode's
read_coefficients, decode(model=None) one by one and decode_batch(model=None), every shipped
model one by one (batch 1) and through decode_batch (batch 64), the two-step pipeline (Pillow
decode, then the same pixel-domain model) for pixel models, and torchvision's batched GPU
decode_jpeg when present. Every figure is also a ratio to Pillow's MP/s in the same run. With a
GPU it also measures whether decode_batch overlaps reading and GPU work: wall time against
max(CPU read time, GPU time) of the same files.

Writes throughput_<devices>.md (machine, table) and .png (plot) to --out.
"""
from __future__ import annotations

import argparse
import io
import os
import re
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # measure the checkout this script is in

import torch  # noqa: E402
from PIL import Image  # noqa: E402

import kdecode  # noqa: E402
from common import best_time, file_sets, machine, markdown_table, megapixels  # noqa: E402
from kdecode.errors import KdecodeError  # noqa: E402
from kdecode.models.registry import shipped_cards  # noqa: E402

DEFAULT_SETS = ["bsds500-q10", "bsds500-q50", "bsds500-q90", "bsds500-q75-progressive", "live1-q10", "photo3840x2160-q90",
                "crops64-q75"]


def pillow_decode(data: bytes):
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


class PeakMemory:
    """Peak memory while a block runs, in MB: CUDA's peak allocation, or on CPU the growth of
    the resident set to its high-water mark (Linux: VmHWM, reset on entry through
    /proc/self/clear_refs; 0 where that is not available). No sampling thread: one would take a
    core and the GIL from the decoders being timed, and from the threaded ones most."""

    def __init__(self, cuda: bool):
        self.cuda = cuda
        self.peak = 0.0

    @staticmethod
    def _status_kb(field: str) -> int:
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith(field + ":"):
                        return int(line.split()[1])
        except (OSError, ValueError):
            pass
        return 0

    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
            return self
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current resident set
            self._base = self._status_kb("VmRSS")
        except OSError:
            self._base = None
        return self

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize()
            self.peak = (torch.cuda.max_memory_allocated() - self._base) / 1e6
        elif self._base is not None:
            self.peak = max(0, self._status_kb("VmHWM") - self._base) * 1024 / 1e6
        return False


def set_quality(name: str) -> int | None:
    m = re.search(r"-q(\d+)", name)
    return int(m.group(1)) if m else None


def candidates(devices: list[str], set_name: str, model_files: int, cpu_models: bool = True,
               only_models: list[str] | None = None, bf16: bool = False) -> list[tuple]:
    """(label, device, per_file, fn, file limit): per_file fns take one JPEG's bytes, the
    others the whole list. ``only_models``: these models instead of every shipped one.
    ``bf16``: on a GPU each model also with ``precision="bfloat16"``."""
    def one_thread(fn):
        def wrapped(d):
            before, kdecode.settings.decode_threads = kdecode.settings.decode_threads, 1
            try:
                fn(d)
            finally:
                kdecode.settings.decode_threads = before
        return wrapped

    rows = [("Pillow decode", "cpu", True, pillow_decode, None)]
    try:
        import simplejpeg

        rows.append(("simplejpeg decode", "cpu", True, lambda d: simplejpeg.decode_jpeg(d), None))
    except ImportError:
        pass
    rows.append(("kdecode read_coefficients", "cpu", True, lambda d: kdecode.read_coefficients(d), None))
    # Registered models without shipped weights cannot be loaded: only shipped ones are measured.
    models = [m for m in kdecode.list_models() if m != "exact" and shipped_cards(m)]
    if only_models is not None:
        models = [m for m in models if m in only_models]
    quality = set_quality(set_name)
    for device in devices:
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        out = "numpy" if device == "cpu" else "torch"

        def one(model, device=device, out=out, sync=sync, precision="float32"):
            def fn(d):
                kdecode.decode(d, model=model, device=device, output=out, precision=precision)
                sync()
            return fn

        def batch(model, size, device=device, out=out, sync=sync, precision="float32"):
            def fn(files):
                kdecode.decode_batch(files, model=model, device=device, output=out, batch_size=size,
                                     precision=precision)
                sync()
            return fn

        rows.append((f"kdecode decode(model=None) [{device}]", device, True, one(None), None))
        if device == "cpu":  # the drop-in form: a PIL image, like the Pillow anchor
            rows.append(("kdecode decode(model=None) -> PIL [cpu]", device, True, one(None, out="pil"), None))
            # Large images are decoded on several threads (kdecode.settings.decode_threads);
            # this row holds decode to Pillow's one thread.
            rows.append(("kdecode decode(model=None) -> PIL, 1 thread [cpu]", device, True,
                         one_thread(one(None, out="pil")), None))
        rows.append((f"kdecode decode_batch(model=None, 64) [{device}]", device, False, batch(None, 64), None))
        if device == "cuda":  # the drop-in form: PIL images in host memory, like the Pillow anchor
            rows.append(("kdecode decode_batch(model=None, 64) -> PIL [cuda]", device, False,
                         batch(None, 64, out="pil"), None))
        limit = model_files if device == "cpu" else None
        for name in (models if device != "cpu" or cpu_models else []):
            rows.append((f"{name} batch 1 [{device}]", device, True, one(name), limit))
            rows.append((f"{name} batch 64 [{device}]", device, False, batch(name, 64), limit))
            if bf16 and device == "cuda":
                rows.append((f"{name} batch 1 bf16 [{device}]", device, True, one(name, precision="bfloat16"), limit))
                rows.append((f"{name} batch 64 bf16 [{device}]", device, False, batch(name, 64, precision="bfloat16"),
                             limit))
            two_step = two_step_fn(name, quality, device)
            if two_step:
                rows.append((f"Pillow + {name} (two-step) [{device}]", device, True, two_step, limit))
        if device == "cuda":
            tv = torchvision_batch()
            if tv:
                rows.append(("torchvision decode_jpeg batched [cuda]", "cuda", False, tv, None))
    return rows


def two_step_fn(name: str, quality: int | None, device: str):
    """Pillow decode, then the pixel-domain model on its luma plane (what people do without
    kdecode); None for models that are not pixel-domain restorers."""
    model = kdecode.load_model(name, quality=quality, device=device)
    if not hasattr(model, "restore"):
        return None

    def fn(d):
        ycbcr = pillow_decode(d).convert("YCbCr")
        y = torch.frombuffer(bytearray(ycbcr.getchannel(0).tobytes()), dtype=torch.uint8)
        plane = y.reshape(1, 1, ycbcr.height, ycbcr.width).to(device).float() / 255.0
        with torch.inference_mode():
            out = (model.restore(plane) * 255.0).round_().clamp_(0, 255).to(torch.uint8)
        if device == "cuda":
            torch.cuda.synchronize()
        return out

    return fn


def torchvision_batch():
    try:
        from torchvision.io import decode_jpeg
    except ImportError:
        return None

    def fn(files):
        datas = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in files]
        for s in range(0, len(datas), 64):
            decode_jpeg(datas[s:s + 64], device="cuda")
        torch.cuda.synchronize()

    return fn


def _figure(x: float, decimals: int = 1) -> str:
    """``decimals`` places, or two significant digits where those would show 0 (a model at
    0.0007x Pillow on a CPU is not 0.00x)."""
    return f"{x:.{decimals}f}" if x >= 10 ** -decimals or x == 0 else f"{x:.2g}"


def measure_overlap(files: list[bytes], workers: int) -> dict:
    """Wall time of decode_batch(model=None, device="cuda") against its two parts measured
    alone on the same files: the CPU read (read_coefficients in ``workers`` threads) and the GPU
    decode of coefficients already read."""
    def read_all():  # as decode_batch's workers read on a GPU: into pinned memory
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(lambda f: kdecode.read_coefficients(f, pin_memory=True), files))

    decoder = kdecode.load_model("exact", device="cuda")
    coeffs = read_all()

    def gpu_all():  # what decode_batch does on the GPU: batches of 64 (one ragged batch each)
        with torch.inference_mode():
            for s in range(0, len(coeffs), 64):
                decoder.decode_many(coeffs[s:s + 64], "cuda")
        torch.cuda.synchronize()

    def wall():
        kdecode.decode_batch(files, model=None, device="cuda", output="torch", batch_size=64, workers=workers)
        torch.cuda.synchronize()

    t = {name: best_time(lambda _, f=f: f(), [None], repeat=3, min_time=0.2)
         for name, f in (("read", read_all), ("gpu", gpu_all), ("wall", wall))}
    t["ratio"] = t["wall"] / max(t["read"], t["gpu"])
    return t


def plot(rows: list[list], path: Path, title: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot (pip install 'kdecode[plot]')")
        return False
    sets = list(dict.fromkeys(r[0] for r in rows))
    labels = list(dict.fromkeys(r[2] for r in rows))
    fig, ax = plt.subplots(figsize=(10, 0.32 * len(labels) * len(sets) + 1.5))
    height = 0.8 / len(sets)
    for k, s in enumerate(sets):
        ratio = {r[2]: float(r[6].rstrip("x")) for r in rows if r[0] == s}
        ys = [i + k * height for i, lab in enumerate(labels) if lab in ratio]
        ax.barh(ys, [ratio[lab] for lab in labels if lab in ratio], height=height, label=s)
    ax.set_yticks([i + 0.4 - height / 2 for i in range(len(labels))], labels, fontsize=8)
    ax.invert_yaxis()
    ax.axvline(1.0, color="black", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("throughput (MP/s) relative to Pillow's decode in the same run")
    ax.set_title("\n".join(textwrap.wrap(title, 130)), fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def _timed(fn, files: list[bytes], per_file: bool, device: str, min_time: float, failed: dict,
           label: str) -> tuple[float | None, float]:
    """(time of one round of ``fn``'s passes over ``files``, peak MB), or (None, 0) after
    recording a failure (e.g. out of memory: the row says so, the run goes on)."""
    try:
        with PeakMemory(device == "cuda") as mem:
            t = best_time(fn, files if per_file else [files], 1, min_time)
        return t, mem.peak
    except (RuntimeError, KdecodeError) as exc:
        from tqdm import tqdm

        failed[label] = type(exc).__name__
        tqdm.write(f"{label}: {type(exc).__name__}: {str(exc)[:200]}")
        if device == "cuda":
            torch.cuda.empty_cache()
        return None, 0.0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="throughput.py / kdecode bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", nargs="+", default=DEFAULT_SETS)
    p.add_argument("--device", nargs="+", default=["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"],
                   choices=["cpu", "cuda"])
    p.add_argument("--limit", type=int, default=None, help="use the first N files of each set")
    p.add_argument("--min-files", type=int, default=None,
                   help="repeat a smaller set's files up to N (e.g. 64: LIVE1's 29 images fill a batch of 64)")
    p.add_argument("--models", nargs="+", default=None,
                   help="models to measure (default: every shipped one; 'none' for none)")
    p.add_argument("--model-files", type=int, default=4, help="files per set for models on CPU (slow)")
    p.add_argument("--model-max-mp", type=float, default=0.5,
                   help="models run on CPU only for sets of images up to this size (MP)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--min-time", type=float, default=0.5, help="seconds each timing round lasts at least")
    p.add_argument("--bf16", action="store_true",
                   help="on a GPU, also measure every model with precision='bfloat16' (tensor cores)")
    p.add_argument("--cudnn-benchmark", action="store_true",
                   help="torch.backends.cudnn.benchmark = True: cuDNN times its algorithms for each new input "
                        "shape and keeps the fastest (for many images of the same sizes)")
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--name", default=None, help="output name (default throughput_<devices>)")
    args = p.parse_args(argv)
    if "cuda" in args.device and not torch.cuda.is_available():
        print("no CUDA device: measuring on CPU only")
        args.device = [d for d in args.device if d != "cuda"] or ["cpu"]
    workers = os.cpu_count() or 1
    torch.backends.cudnn.benchmark = args.cudnn_benchmark

    header = (f"Machine: {machine()}; reader: {kdecode.backend_info()['reader']}; "
              f"torch threads: {torch.get_num_threads()}; decode_batch workers: {workers}"
              + ("; torch.backends.cudnn.benchmark = True" if args.cudnn_benchmark else ""))
    print(header, flush=True)
    rows, overlap_lines = [], []
    from tqdm import tqdm

    args.out.mkdir(parents=True, exist_ok=True)
    name = args.name or "throughput_" + "_".join(args.device)

    def write(final: bool) -> str:
        table = markdown_table(["files", "n", "decoder", "images/s", "MP/s", "peak MB", "vs Pillow"], rows)
        text = header + ("" if final else " (partial: the run is still going or was cut short)") + "\n\n" + table + "\n"
        if overlap_lines:
            text += "\nCPU/GPU overlap of decode_batch:\n\n" + "\n".join(overlap_lines) + "\n"
        (args.out / f"{name}.md").write_text(text)
        return table

    for set_name, files in file_sets(args.sets).items():
        files = files[: args.limit] if args.limit else files
        if args.min_files and len(files) < args.min_files:
            files = (files * -(-args.min_files // len(files)))[: args.min_files]
        cpu_models = megapixels(files[:1]) <= args.model_max_mp
        if not cpu_models and len(kdecode.list_models()) > 1:
            print(f"{set_name}: models not run on CPU (images over --model-max-mp {args.model_max_mp} MP)")
        cands = candidates(args.device, set_name, args.model_files, cpu_models, args.models, args.bf16)
        # The fast decoders (Pillow first: the anchor) are timed in interleaved rounds, each
        # round timing every one of them once, best round kept: a slow spell of this shared
        # machine then hits the anchor and the others alike instead of one row. Models on CPU
        # are slow: one timed pass each after the warm-up, after the rounds.
        best: dict[str, float] = {}
        peak: dict[str, float] = {}
        failed: dict[str, str] = {}
        fast = [c for c in cands if not c[4]]
        for _ in tqdm(range(args.repeat), desc=f"{set_name} rounds", leave=False, disable=None):
            for label, device, per_file, fn, _limit in fast:
                if label in failed:
                    continue
                t, mem = _timed(fn, files, per_file, device, args.min_time, failed, label)
                if t is not None:
                    best[label] = min(best.get(label, t), t)
                    peak[label] = max(peak.get(label, 0.0), mem)
        anchor_mp_s = None
        for label, device, per_file, fn, limit in tqdm(cands, desc=set_name, unit="decoder", leave=False, disable=None):
            subset = files[:limit] if limit else files
            if limit and label not in failed:
                t, mem = _timed(fn, subset, per_file, device, 0.0, failed, label)
                if t is not None:
                    best[label], peak[label] = t, mem
            if label in failed:
                rows.append([set_name, len(subset), label, "failed", failed[label], "", ""])
                continue
            mp_s = megapixels(subset) / best[label]
            anchor_mp_s = anchor_mp_s or mp_s  # Pillow comes first
            rows.append([set_name, len(subset), label, _figure(len(subset) / best[label]), _figure(mp_s),
                         f"{peak[label]:.0f}", f"{_figure(mp_s / anchor_mp_s, 2)}x"])
            tqdm.write(" | ".join(str(c) for c in rows[-1]))
            write(False)  # a run cut short keeps what it measured
        if "cuda" in args.device:
            o = measure_overlap(files, workers)
            overlap_lines.append(
                f"- {set_name} ({len(files)} files): decode_batch(model=None, device='cuda') wall "
                f"{o['wall'] * 1e3:.1f} ms; CPU read alone {o['read'] * 1e3:.1f} ms ({workers} threads); GPU decode "
                f"alone {o['gpu'] * 1e3:.1f} ms; wall / max(read, GPU) = {o['ratio']:.2f}")
            print(overlap_lines[-1], flush=True)
    print(write(True))
    if plot([r for r in rows if r[3] != "failed"], args.out / f"{name}.png", header):
        print(f"wrote {args.out / name}.md and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
