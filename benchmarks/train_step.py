"""Training-step speed of every shipped model: float32 against bf16 autocast (``kdecode train
--amp on``), as ratios in the same run.

A CPU with AMX (Intel Sapphire Rapids and later) runs bf16 convolutions several times faster
than float32 ones; this measures what that gives each model's whole training step (forward,
loss, backward, Adam) on this machine, the float32 step being the anchor.

    python benchmarks/train_step.py [--models dmcnn hrcnn ...] [--batch 8] [--patch 64] [--device cpu]

Writes ``benchmarks/results/train_step_<device>.md``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import machine, markdown_table, report  # noqa: E402
from kdecode.models import registry  # noqa: E402
from kdecode.train.loop import train_step  # noqa: E402

MODELS = ("fast_arcnn", "arcnn", "dcsc", "d3", "hrcnn", "dmcnn")


def step_times(model, x, y, amp: bool, device: torch.device, steps: int) -> list[float]:
    """Seconds of each of ``steps`` training steps (after one warm-up step)."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-6)  # tiny: the weights barely move
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        train_step(model, opt, x, y, torch.nn.functional.mse_loss, amp)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i:
            times.append(time.perf_counter() - t0)
    return times


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--quality", type=int, default=10, help="the shipped weights of this quality")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--patch", type=int, default=64, help="a multiple of 8 (the models' training patches)")
    p.add_argument("--steps", type=int, default=5, help="timed steps a round")
    p.add_argument("--rounds", type=int, default=3, help="float32 and bf16 rounds, interleaved")
    p.add_argument("--device", default="cpu")
    p.add_argument("--output", type=Path, help="markdown file (default benchmarks/results/train_step_DEVICE.md)")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    # A fixed random batch: the cost of these dense layers does not depend on the content.
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 1, args.patch, args.patch, generator=gen).to(device)
    y = torch.rand(args.batch, 1, args.patch, args.patch, generator=gen).to(device)
    pixels = args.batch * args.patch ** 2
    rows = []
    for name in args.models:
        model = registry.load_model(name, args.quality, device=device)
        model.train()
        times = {False: [], True: []}
        for _ in range(args.rounds):  # interleaved, so that a slower spell of the machine hits both
            for amp in (False, True):
                times[amp] += step_times(model, x, y, amp, device, args.steps)
        fp32, bf16 = statistics.median(times[False]), statistics.median(times[True])
        rows.append([name, f"{fp32:.3f}", f"{pixels / fp32 / 1e3:.0f}", f"{bf16:.3f}", f"{pixels / bf16 / 1e3:.0f}",
                     f"{fp32 / bf16:.2f}x"])
    header = (f"Machine: {machine()}; device {device}, torch threads {torch.get_num_threads()}; batch {args.batch} "
              f"of {args.patch}x{args.patch}, shipped q{args.quality} weights, median of {args.rounds * args.steps} "
              f"steps each")
    table = markdown_table(["model", "float32 s/step", "float32 kpixel/s", "bf16 s/step", "bf16 kpixel/s",
                            "bf16 speed-up"], rows)
    output = args.output or ROOT / "benchmarks" / "results" / f"train_step_{device.type}.md"
    report(header, table, output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
