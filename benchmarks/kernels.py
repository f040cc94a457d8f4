"""Throughput of kdecode's CUDA kernels against the torch reference ops, on one batch.

For each fused op: the median time of the kernel alone (the op captured in a CUDA graph and
replayed, so Python's dispatch is left out), of one op call (back-to-back calls, dispatch and
DLPack included) and of the torch reference (same GPU, same run); blocks (or pixels) per second
and effective bandwidth of the kernel (the bytes the op must read and write once), and that
bandwidth as a share of the device's copy bandwidth, measured here with a large device-to-device
copy (bytes read + written). Outputs are checked against the reference first.

    python benchmarks/kernels.py                      # 64 images of 2000x1500, 4:2:0, q90
    python benchmarks/kernels.py --batch 8 --json out.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import kdecode  # noqa: E402
from common import encode, synthetic_photo  # noqa: E402
from kdecode.ops import (blocks_to_planes, clamp_blocks, dispatch, force_torch, planes_to_blocks,  # noqa: E402
                         upsample_to_rgb)


def make_batch(batch: int, height: int, width: int, quality: int, distinct: int = 4):
    """Pillow-encoded 4:2:0 files read back as coefficients, tiled to ``batch`` images."""
    files = []
    for seed in range(min(distinct, batch)):
        data = encode(synthetic_photo(height, width, seed), quality=quality, subsampling=2)
        files.append(kdecode.read_coefficients(data))
    pick = [files[i % len(files)] for i in range(batch)]
    blocks = [torch.from_numpy(np.stack([f.components[c].blocks for f in pick])) for c in range(3)]
    qtables = torch.from_numpy(np.stack([f.qtables for f in pick]).astype(np.int32))  # [N, 3, 8, 8]
    return files[0], blocks, qtables


def timed(fn, device: torch.device, reps: int, warmup: int = 2, inner: int = 1) -> float:
    """Median seconds of ``fn()`` over ``reps`` timings of ``inner`` back-to-back calls (CUDA
    events on a GPU: the device stays busy when a call's host work is shorter than its kernel)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(inner):
                fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3 / inner)
        else:
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            times.append((time.perf_counter() - t0) / inner)
    return statistics.median(times)


def graph_timed(fn, device: torch.device, reps: int) -> float | None:
    """Median seconds of a CUDA-graph replay of ``fn()``: the GPU work alone. None if the op
    cannot be captured (or off GPU)."""
    if device.type != "cuda":
        return None
    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            fn()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
    except Exception as exc:  # report and go on with the other timings
        print(f"  graph capture failed: {type(exc).__name__}: {exc}")
        return None
    seconds = timed(graph.replay, device, reps)
    del graph
    return seconds


def copy_bandwidth(device: torch.device, nbytes: int = 1 << 30) -> float:
    """Bytes read + written per second by a device-to-device copy of ``nbytes``."""
    src = torch.randint(0, 255, (nbytes,), dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    seconds = timed(lambda: dst.copy_(src), device, reps=20)
    return 2 * nbytes / seconds


def check(name: str, out, ref, exact: bool) -> str:
    outs, refs = (out, ref) if isinstance(out, (list, tuple)) else ([out], [ref])
    if exact:
        ok = all(torch.equal(a, b) for a, b in zip(outs, refs))
        return "bit-exact" if ok else "MISMATCH"
    err = max(float((a.double() - b.double()).norm() / b.double().norm()) for a, b in zip(outs, refs))
    return f"rel err {err:.1e}" if err < 1e-5 else f"MISMATCH (rel err {err:.1e})"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--height", type=int, default=1500)
    parser.add_argument("--width", type=int, default=2000)
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument("--reps", type=int, default=20, help="timed repetitions of each kernel")
    parser.add_argument("--ref-reps", type=int, default=3, help="timed repetitions of each torch reference")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA GPU: nothing to measure")
        return 1
    print(f"kernels: {dispatch.why_not_kernels(torch.empty(0, device=device)) or 'yes'}")
    t0 = time.perf_counter()
    first, cpu_blocks, cpu_q = make_batch(args.batch, args.height, args.width, args.quality)
    blocks = [b.to(device) for b in cpu_blocks]
    q = cpu_q.to(device)
    n_blocks = sum(b[..., 0, 0].numel() for b in blocks)
    sizes = [first.component_size(c) for c in range(3)]
    factors = [(first.max_h_samp // c.h_samp, first.max_v_samp // c.v_samp) for c in first.components]
    size = (first.height, first.width)
    pixels = args.batch * first.height * first.width
    print(f"batch: {args.batch} x {first.width}x{first.height} {first.sampling} q{args.quality}, "
          f"{n_blocks / 1e6:.2f} M blocks, prepared in {time.perf_counter() - t0:.1f} s")

    copy = copy_bandwidth(device) if device.type == "cuda" else float("nan")
    print(f"device: {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}, "
          f"copy bandwidth {copy / 1e9:.0f} GB/s (read + write)")

    # Inputs of each op, made once.
    float_planes = blocks_to_planes(blocks, q)
    uint8_planes = [p[..., :h, :w] for p, (h, w) in zip(blocks_to_planes(blocks, q, exact=True), sizes)]
    float_crops = [p[..., :h, :w].contiguous() for p, (h, w) in zip(float_planes, sizes)]
    dequantized = [b.float() * q[:, c, None, None] for c, b in enumerate(blocks)]
    noisy = [d + (torch.rand_like(d) - 0.5) * q[:, c, None, None].float() * 1.5 for c, d in enumerate(dequantized)]
    grads = [torch.randn_like(d) for d in noisy]

    def clamp_step():
        x = [t.detach().requires_grad_() for t in noisy]
        torch.autograd.backward(clamp_blocks(x, blocks, q), grads)
        return [t.grad for t in x]

    def exact_decode_stage():
        planes = blocks_to_planes(blocks, q, exact=True)
        return upsample_to_rgb([p[..., :h, :w] for p, (h, w) in zip(planes, sizes)], factors, size)

    samples = sum(p[0].numel() for p in uint8_planes) * args.batch  # component samples at real size
    ops = [
        # name, fn, exact, bytes moved (read + written once), work units, unit
        ("dequant+IDCT float", lambda: blocks_to_planes(blocks, q), False, n_blocks * (128 + 256), n_blocks, "blk"),
        ("islow IDCT (exact)", lambda: blocks_to_planes(blocks, q, exact=True), True, n_blocks * (128 + 64), n_blocks,
         "blk"),
        ("DCT float", lambda: planes_to_blocks(float_planes), False, n_blocks * (256 + 256), n_blocks, "blk"),
        ("DCT+quantize", lambda: planes_to_blocks(float_planes, q), None, n_blocks * (256 + 128), n_blocks, "blk"),
        ("box clamp fwd", lambda: clamp_blocks(noisy, blocks, q), True, n_blocks * (256 + 128 + 256), n_blocks,
         "blk"),
        ("box clamp fwd+bwd", clamp_step, True, n_blocks * (640 + 256 * 3 + 128), n_blocks, "blk"),
        ("upsample+RGB uint8", lambda: upsample_to_rgb(uint8_planes, factors, size), True,
         samples + 3 * pixels, pixels, "px"),
        ("upsample+RGB float", lambda: upsample_to_rgb(float_crops, factors, size), False,
         4 * samples + 12 * pixels, pixels, "px"),
        ("exact decode stage", exact_decode_stage, True, n_blocks * 128 + 3 * pixels, pixels, "px"),
    ]
    results = []
    header = (f"{'op':22s} {'kernel ms':>10s} {'call ms':>8s} {'torch ms':>9s} {'speedup':>8s} {'rate':>14s} "
              f"{'GB/s':>7s} {'% copy':>7s}  check")
    rows = []
    for name, fn, exact, nbytes, units, unit in ops:
        out = fn()
        with force_torch():
            ref = fn()
            ref_s = timed(fn, device, args.ref_reps, warmup=1)
        if exact is None:  # quantized DCT: last-bit float differences may flip a .5 rounding
            diff = max(float((a.int() - b.int()).abs().float().mean()) for a, b in zip(out, ref))
            status = f"mean |diff| {diff:.1e}"
        else:
            status = check(name, out, ref, exact)
        del out, ref
        call_s = timed(fn, device, args.reps, inner=5)
        graph_s = graph_timed(fn, device, args.reps)
        kernel_s = graph_s or call_s
        bandwidth = nbytes / kernel_s
        results.append({"op": name, "kernel_ms": kernel_s * 1e3, "kernel_timing": "graph" if graph_s else "calls",
                        "call_ms": call_s * 1e3, "torch_ms": ref_s * 1e3, "speedup_call": ref_s / call_s,
                        "speedup_kernel": ref_s / kernel_s, f"{unit}_per_s": units / kernel_s,
                        "effective_GBps": bandwidth / 1e9, "fraction_of_copy": bandwidth / copy, "check": status})
        rate = f"{units / kernel_s / 1e9:.2f} G{unit}/s"
        rows.append(f"{name:22s} {kernel_s * 1e3:10.3f} {call_s * 1e3:8.3f} {ref_s * 1e3:9.2f} "
                    f"{ref_s / call_s:7.1f}x {rate:>14s} {bandwidth / 1e9:7.0f} {100 * bandwidth / copy:6.0f}%  {status}")
        print(rows[-1], flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print()
    print("kernel: CUDA-graph replay of the op (GPU time); call: back-to-back op calls; speedup: torch / call")
    print(header)
    print("\n".join(rows))
    if args.json:
        meta = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                "torch": torch.__version__, "batch": args.batch, "width": first.width, "height": first.height,
                "sampling": first.sampling, "quality": args.quality, "blocks": n_blocks,
                "copy_GBps": copy / 1e9, "results": results}
        with open(args.json, "w") as f:
            json.dump(meta, f, indent=1)
    return 0 if all("MISMATCH" not in r["check"] for r in results) else 2


if __name__ == "__main__":
    raise SystemExit(main())
