"""The ``kdecode`` command: ``info``, ``restore`` (and the model commands)."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def _cmd_info(args) -> int:
    from .errors import KdecodeError
    from .jpeg import read_coefficients
    from .jpeg.quality import estimate_quality

    if args.backend:
        from .jpeg import backend_info
        from .models.base import compute_info

        info = {**backend_info(), **compute_info()}
        print(json.dumps(info) if args.json else "\n".join(f"{k}: {v}" for k, v in info.items()))
    elif not args.files:
        print("error: give JPEG files (or --backend)", file=sys.stderr)
        return 2
    status = 0
    for path in args.files:
        try:
            c = read_coefficients(path)
        except (KdecodeError, OSError) as e:
            print(f"error: {e}", file=sys.stderr)
            status = 1
            continue
        quality, exact = estimate_quality(c.components[0].qtable)
        info = {
            "file": path, "width": c.width, "height": c.height, "color_space": c.color_space,
            "sampling": c.sampling, "progressive": c.progressive, "arithmetic": c.arithmetic,
            "restart_interval": c.restart_interval,
            "quality": quality, "quality_exact": exact,
            "components": [{"id": comp.id, "sampling": f"{comp.h_samp}x{comp.v_samp}",
                            "blocks": [comp.blocks_h, comp.blocks_w], "qtable_index": comp.qtable_index}
                           for comp in c.components],
            "qtables": {str(comp.qtable_index): comp.qtable.tolist() for comp in c.components},
        }
        if args.json:
            print(json.dumps(info))
            continue
        print(f"{path}: {c.width}x{c.height} {c.color_space} {c.sampling}"
              f"{' progressive' if c.progressive else ' baseline'}{' arithmetic' if c.arithmetic else ''}")
        print(f"  estimated IJG quality: {quality}{'' if exact else ' (nearest; tables are not IJG)'}")
        print(f"  restart interval: {c.restart_interval or 'none'}")
        for comp in c.components:
            print(f"  component {comp.id}: sampling {comp.h_samp}x{comp.v_samp}, "
                  f"{comp.blocks_h}x{comp.blocks_w} blocks, table {comp.qtable_index}")
        for idx, table in sorted(info["qtables"].items()):
            print(f"  quantization table {idx}:")
            for row in table:
                print("    " + " ".join(f"{v:3d}" for v in row))
    return status


def _collect(inputs: list[str]) -> list[Path]:
    from .data import jpeg_files

    return jpeg_files(inputs)


def _cmd_restore(args) -> int:
    from tqdm import tqdm

    from .batch import decode_iter
    from .errors import KdecodeError
    from .models.registry import list_models, resolve_model

    if resolve_model(args.model) not in list_models():
        print(f"error: unknown model {args.model!r}; available: {', '.join(list_models())}", file=sys.stderr)
        return 2
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    files = _collect(args.inputs)
    if not files:
        print("error: no JPEG files found", file=sys.stderr)
        return 2
    failed = 0
    # decode_iter: files read and decoded in parallel (CPU workers, or GPU batches), in order;
    # a file that fails comes back as its exception and is skipped.
    images = decode_iter(files, model=args.model, device=args.device, precision=args.precision,
                         flips=args.flips, return_exceptions=True)
    for f, image in tqdm(zip(files, images), total=len(files), desc="restore", unit="img", disable=args.quiet):
        try:
            if isinstance(image, Exception):
                raise image
            # PNG has no CMYK: those (exact) images go to TIFF, which keeps them as they are.
            image.save(out / (f.stem + (".tiff" if image.mode == "CMYK" else ".png")))
        except (KdecodeError, OSError) as e:
            failed += 1
            tqdm.write(f"skipped {e}", file=sys.stderr)
    if failed:
        print(f"{failed} of {len(files)} files failed", file=sys.stderr)
    return 1 if failed else 0


def _cmd_bench(options: list[str]) -> int:
    # The suite lives in benchmarks/ of a checkout (it shares helpers with the other benchmarks).
    import importlib.util

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "throughput.py"
    if not script.is_file():
        print(f"error: {script} not found: `kdecode bench` runs from a source checkout", file=sys.stderr)
        return 2
    spec = importlib.util.spec_from_file_location("kdecode_bench_throughput", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(options)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kdecode", description="JPEG decoding with artifact removal")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="show a JPEG's frame, sampling, tables and estimated quality")
    p.add_argument("files", nargs="*")
    p.add_argument("--json", action="store_true", help="one JSON object per file")
    p.add_argument("--backend", action="store_true",
                   help="say which coefficient reader is active (native or jpeglib) and why")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("restore", help="decode (and restore) JPEG files or folders to PNG (CMYK to TIFF)")
    p.add_argument("inputs", nargs="+", help="JPEG files or folders (searched recursively)")
    p.add_argument("-o", "--output", required=True, help="output folder for the PNG files")
    p.add_argument("--model", default="auto", help="model name, 'exact' for a plain decode, 'auto' (default)")
    p.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda")
    p.add_argument("--precision", choices=["float32", "bfloat16"], default="float32",
                   help="bfloat16: the model's learned layers in bf16 (faster on a GPU)")
    p.add_argument("--flips", type=int, choices=[1, 2, 4], default=1,
                   help="also restore the image mirrored (2: left-right, 4: and upside down) and average: "
                        "a little more quality for 2x or 4x the model's time")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_restore)

    # `bench` hands all its options to benchmarks/throughput.py (see main); listed here for --help.
    sub.add_parser("bench", help="throughput against Pillow (benchmarks/throughput.py; kdecode bench -h)")

    from .train.cli import add_parsers  # `train` and `eval`: the model zoo's commands

    add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:
        return _cmd_bench(argv[1:])
    args = build_parser().parse_args(argv)
    args.argv = argv[1:]  # `eval --update-card` records the command line in the card
    try:
        return args.func(args)
    except BrokenPipeError:
        # The reader of our output (e.g. `| head`) closed it early: not an error. Point stdout
        # at /dev/null so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
