"""The ``kdecode`` command: ``info``, ``restore`` (and the model commands)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

JPEG_SUFFIXES = {".jpg", ".jpeg", ".jpe", ".jfif"}


def _cmd_info(args) -> int:
    from .errors import KdecodeError
    from .jpeg import read_coefficients
    from .jpeg.quality import estimate_quality

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
    files = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.suffix.lower() in JPEG_SUFFIXES)
        else:
            files.append(p)
    return files


def _cmd_restore(args) -> int:
    from tqdm import tqdm

    from .decode import decode
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
    for f in tqdm(files, desc="restore", unit="img", disable=args.quiet):
        try:
            image = decode(f, model=args.model, device=args.device)
            image.save(out / (f.stem + ".png"))
        except (KdecodeError, OSError) as e:
            failed += 1
            tqdm.write(f"skipped {e}", file=sys.stderr)
    if failed:
        print(f"{failed} of {len(files)} files failed", file=sys.stderr)
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kdecode", description="JPEG decoding with artifact removal")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="show a JPEG's frame, sampling, tables and estimated quality")
    p.add_argument("files", nargs="+")
    p.add_argument("--json", action="store_true", help="one JSON object per file")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("restore", help="decode (and restore) JPEG files or folders to PNG")
    p.add_argument("inputs", nargs="+", help="JPEG files or folders (searched recursively)")
    p.add_argument("-o", "--output", required=True, help="output folder for the PNG files")
    p.add_argument("--model", default="auto", help="model name, 'exact' for a plain decode, 'auto' (default)")
    p.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_restore)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
