"""``kdecode train`` and ``kdecode eval``. ``add_parsers(subparsers)`` adds both to the main
``kdecode`` parser; ``python -m kdecode.train.cli train|eval ...`` runs them on their own."""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from .data import AUGMENTATIONS, FILE_COPIES, prepare_pairs

# Per-model defaults (the recipes the shipped weights were trained with, unless their card
# says otherwise). Any of them can be overridden on the command line.
RECIPES = {
    "arcnn": {"batch": 128, "patch": 48, "lr": 1e-3, "loss": "mse", "steps": 20000},
    "fast_arcnn": {"batch": 128, "patch": 48, "lr": 1e-3, "loss": "mse", "steps": 20000},
    "dcsc": {"batch": 32, "patch": 80, "lr": 5e-4, "loss": "l1", "steps": 20000, "grad_clip": 0.5},
    # HR-CNN: the paper's 128x128 training images and MSE (its optimizer settings are not given).
    "hrcnn": {"batch": 32, "patch": 128, "lr": 2e-4, "loss": "mse", "steps": 50000, "grad_clip": 1.0},
    # DMCNN (Sec. 3.1): Adam lr 1e-3, batch 80, 56x56 patches at first (the paper then grows them
    # to 224: run again with --patch and --init-from); its own loss (eq. 7), so "loss" is unused.
    "dmcnn": {"batch": 80, "patch": 56, "lr": 1e-3, "loss": "mse", "steps": 50000, "grad_clip": 1.0},
    # D3 (Sec. 4.1): batch 128 of 8x8 patches (here: 2 patches of 64 blocks), L2 + L_B. The paper's
    # constant lr 0.01 without momentum is plain SGD; Adam at 1e-3 is this recipe's choice.
    "d3": {"batch": 2, "patch": 64, "lr": 1e-3, "loss": "mse", "steps": 100000},
}
#: models restoring from the coefficients with one training quality's table (CoefficientRestorer)
ONE_QUALITY = ("hrcnn", "dmcnn", "d3")
DEFAULT_DATA_ROOT = "../shared/data"


def _qualities(values: list[str]) -> list[int]:
    """``--quality 10 20`` or ``--quality 10,20`` -> ``[10, 20]``."""
    return [int(q) for v in values for q in v.replace(",", " ").split()]


def _cmd_train(args) -> int:
    import torch

    from .loop import TrainConfig, train

    args.quality = _qualities(args.quality)
    recipe = dict(RECIPES[args.model])
    for key in ("batch", "patch", "lr", "loss", "steps", "grad_clip"):
        if getattr(args, key, None) is not None:
            recipe[key] = getattr(args, key)
    arch_kwargs = {"iterations": args.iterations} if args.model == "dcsc" else {}
    if args.model in ONE_QUALITY and not args.prepare_only:
        if len(args.quality) != 1:
            print(f"error: {args.model} is trained for one quality (one model per quality, as in the paper)",
                  file=sys.stderr)
            return 2
        # The training quality's IJG table turns the stored training planes back into coefficients.
        arch_kwargs = {"quality": args.quality[0]}
        if args.model == "hrcnn":
            arch_kwargs.update(input=args.input, init=args.start, activation=args.hrcnn_activation)
        elif args.model == "dmcnn":
            arch_kwargs.update(dru=not args.no_dru)
        else:
            arch_kwargs.update(atoms=args.atoms, box=not args.no_box, init=args.d3_init)
    if args.side_losses != 1.0 and (args.model != "dmcnn" or not 0 <= args.side_losses < float("inf")):
        print("error: --side-losses applies to dmcnn (the only model with side outputs) and is a weight >= 0",
              file=sys.stderr)
        return 2
    if recipe["loss"] != "mse" and (args.model == "d3" or (args.model == "dmcnn" and args.side_losses != 0)):
        print("error: --loss replaces the MSE of models with their own loss only for DMCNN's output term "
              "alone (--side-losses 0)", file=sys.stderr)
        return 2
    # D3-128 ships beside D3-256 (the registry's "d3") under its own name.
    name = "d3_128" if args.model == "d3" and args.atoms == 128 else None
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    out = args.out or f"runs/{name or args.model}_q{'-'.join(map(str, args.quality))}"
    cfg = TrainConfig(
        model=args.model, qualities=args.quality, out=out, data_root=args.data_root,
        train_sets=args.train_sets.split(","), val_set=args.val_set or None, val_images=args.val_images,
        steps=recipe["steps"], batch=recipe["batch"], patch=recipe["patch"], lr=recipe["lr"],
        lr_min=args.lr_min, warmup=args.warmup, loss=recipe["loss"], scales=[float(s) for s in args.scales.split(",")],
        arch_kwargs=arch_kwargs, init_from=args.init_from, seed=args.seed, device=device, amp=args.amp,
        grad_clip=recipe.get("grad_clip"), checkpoint_every=args.checkpoint_every, val_every=args.val_every,
        max_time=args.max_time, time_budget=args.time_budget, ema=args.ema, augment=args.augment, workers=args.workers, cache_dir=args.cache_dir,
        progress=not args.quiet, name=name, side_losses=args.side_losses)
    if args.prepare_only:
        prepare_pairs([Path(cfg.data_root) / s for s in cfg.train_sets], cfg.qualities, cfg.scales,
                      cfg.workers, cfg.cache_dir, cfg.progress, **FILE_COPIES.get(cfg.augment, {}))
        return 0
    card = train(cfg)
    if not card:
        return 3  # stopped at --max-time; the checkpoint resumes it
    print(json.dumps(card["training"]["validation"]))
    if args.install:
        from ..models.registry import WEIGHTS_DIR

        for suffix in (".safetensors", ".json"):
            shutil.copy2(Path(out) / f"{cfg.stem}{suffix}", WEIGHTS_DIR / f"{cfg.stem}{suffix}")
        print(f"installed {cfg.stem} in {WEIGHTS_DIR}")
    return 0


def _cmd_eval(args) -> int:
    import torch

    from ..models.registry import card_for_weights, load_model, load_weights
    from .evaluate import TABLE_KINDS, evaluate, format_table

    args.quality = _qualities(args.quality)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    command = "kdecode eval " + " ".join(getattr(args, "argv", None) or sys.argv[2:])
    results = []
    kinds = [None] if args.tables == "ijg" else list(TABLE_KINDS) if args.tables == "nonijg" else [args.tables]
    for data, q, tables in ((d, q, t) for d in args.data for q in args.quality for t in kinds):
        if args.weights:
            decoder = load_weights(card_for_weights(args.weights), device)
        else:
            decoder = load_model(args.model, quality=q, device=device)
        decoder.set_precision(args.precision).set_flips(args.flips)
        if args.intervals != "real" or args.output_box != "on":
            if not hasattr(decoder, "intervals"):
                print(f"error: --intervals and --output-box apply to restoring models, not {args.model}",
                      file=sys.stderr)
                return 2
            decoder.intervals, decoder.output_box = args.intervals, args.output_box == "on"
        r = evaluate(decoder, data, q, device, progress=not args.quiet, tables=tables)
        # Their own entries: never mistaken for (or overwriting) the product's figure.
        if args.intervals != "real":
            r["dataset"] = f"{r['dataset']} (assumed IJG intervals)"
        if args.output_box != "on":
            r["dataset"] = f"{r['dataset']} (no output box)"
        if args.precision != "float32":  # the same: the card's figures stay the float32 ones
            r["dataset"] = f"{r['dataset']} ({args.precision})"
        if args.flips != 1:
            r["dataset"] = f"{r['dataset']} (flips {args.flips})"
        results.append(r)
        card = getattr(decoder, "card", None)
        if args.update_card and card is not None:
            _write_metrics(card, r, device, command)
    print(format_table(results, args.model if not args.weights else Path(args.weights).stem))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


def _write_metrics(card: dict, result: dict, device, command: str) -> None:
    """Record one measured result in the card beside the weights that produced it."""
    import torch

    path = Path(card["_weights"]).with_suffix(".json")
    stored = json.loads(path.read_text())
    dev = torch.device(device)
    entry = {
        "jpeg": {k: round(v, 4) for k, v in result["jpeg"].items()},
        "model": {k: round(v, 4) for k, v in result["model"].items()},
        "images": result["images"],
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "command": command,
    }
    stored.setdefault("metrics", {}).setdefault(result["dataset"], {})[str(result["quality"])] = entry
    path.write_text(json.dumps(stored, indent=2) + "\n")
    from ..models.registry import _cards_in

    _cards_in.cache_clear()


def add_parsers(subparsers) -> None:
    """Add ``train`` and ``eval`` to the ``kdecode`` command's subparsers."""
    p = subparsers.add_parser("train", help="train a restoring model (resumable)")
    p.add_argument("--model", required=True, choices=sorted(RECIPES))
    p.add_argument("--quality", required=True, nargs="+", help="JPEG quality, or a list '10,20,30' (one model)")
    p.add_argument("--out", help="run folder (checkpoint, log, weights, card); default runs/MODEL_qQ")
    p.add_argument("--data-root", default=DEFAULT_DATA_ROOT, help="folder holding the datasets")
    p.add_argument("--train-sets", default="BSDS500/train,BSDS500/test", help="comma-separated, under --data-root")
    p.add_argument("--val-set", default="BSD68", help="validation set under --data-root ('' for none)")
    p.add_argument("--val-images", type=int, default=16)
    p.add_argument("--scales", default="1.0", help="comma-separated image scales (data augmentation)")
    p.add_argument("--augment", choices=list(AUGMENTATIONS),
                   help="patch symmetries: flips, or flips and transposes (default: the model's: flips for "
                        "models that read the coefficients, whose table a transpose breaks; dihedral for pixel models); "
                        "flips+transposed: flips, and every image also transposed before compression (real files); "
                        "flips+transposed+shifted: those, and each also with the coding grid moved by 4 pixels")
    p.add_argument("--steps", type=int)
    p.add_argument("--batch", type=int)
    p.add_argument("--patch", type=int, help="patch side (multiple of 8)")
    p.add_argument("--lr", type=float)
    p.add_argument("--lr-min", type=float, default=1e-5)
    p.add_argument("--warmup", type=int, default=500)
    p.add_argument("--loss", choices=["mse", "l1", "psnr"],
                   help="mse, l1, or psnr: minus the mean patch PSNR, the test sets' figure (DMCNN: the "
                        "output term, with --side-losses 0; D3 keeps its own loss)")
    p.add_argument("--grad-clip", type=float)
    p.add_argument("--iterations", type=int, default=20, help="DCSC: LISTA iterations R")
    p.add_argument("--input", choices=["quantized", "dequantized"], default="quantized",
                   help="HR-CNN: integer coefficients (the paper) or coefficients x qtable / 255")
    p.add_argument("--hrcnn-activation", choices=["none", "relu"], default="none",
                   help="HR-CNN: activations inside the residual blocks: none (eq. 7 as printed) or relu")
    p.add_argument("--start", choices=["idct", "random"], default="idct",
                   help="HR-CNN: start at the float JPEG decode (idct) or from random weights")
    p.add_argument("--no-dru", action="store_true", help="DMCNN: no DCT Rectify Unit (the ablation)")
    p.add_argument("--side-losses", type=float, default=1.0, metavar="W",
                   help="DMCNN: weight of eq. 7's side terms (1/2 and 1/4 outputs, DCT branch); "
                        "1 the paper's loss, 0 the output's MSE alone (a last fine-tuning)")
    p.add_argument("--atoms", type=int, choices=[128, 256], default=256, help="D3: dictionary size p (D3-128, D3-256)")
    p.add_argument("--d3-init", choices=["sparse", "frame", "random"], default="sparse",
                   help="D3: start from dictionaries learned on the first training patches (the paper), a frame, or random")
    p.add_argument("--no-box", action="store_true", help="D3: no box constraint (no L_B, no clamp: the ablation)")
    p.add_argument("--init-from", help="weights (.safetensors or run folder) to start from: easy-to-hard transfer")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device")
    p.add_argument("--amp", choices=["auto", "on", "off"], default="auto",
                   help="bf16 autocast for the training steps: auto = on CUDA only; on = also on the CPU "
                        "(several times faster where it has AMX, several times slower where it has no bf16 arithmetic, "
                        "with a warning); off = float32")
    p.add_argument("--checkpoint-every", type=int, default=1000)
    p.add_argument("--val-every", type=int, default=2000)
    p.add_argument("--max-time", type=float, help="seconds; stop and checkpoint after this (resume later)")
    p.add_argument("--time-budget", type=float,
                   help="seconds of training: the run (and its learning-rate schedule) ends after this or --steps")
    p.add_argument("--ema", type=float, metavar="DECAY",
                   help="keep an exponential moving average of the weights (e.g. 0.999): validated and shipped "
                        "instead of the last step's weights, which are kept in RUN/last_step/")
    p.add_argument("--workers", type=int, default=0, help="processes preparing the JPEG pairs")
    p.add_argument("--cache-dir", help="keep the prepared JPEG pairs here (.npz) for later runs")
    p.add_argument("--prepare-only", action="store_true", help="only prepare (and cache) the JPEG pairs")
    p.add_argument("--install", action="store_true", help="copy the final weights and card into kdecode/weights")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=_cmd_train)

    p = subparsers.add_parser("eval", help="PSNR / SSIM / PSNR-B of JPEG and a model on image folders")
    p.add_argument("--model", default="exact")
    p.add_argument("--quality", required=True, nargs="+")
    p.add_argument("--data", required=True, nargs="+", help="folders of lossless images")
    p.add_argument("--weights", help="a .safetensors file (card beside it) instead of the shipped weights")
    p.add_argument("--device")
    p.add_argument("--intervals", choices=["real", "assumed"], default="real",
                   help="box constraints from the file's real table, or from the nearest IJG quality's (comparison)")
    p.add_argument("--output-box", choices=["on", "off"], default="on",
                   help="clamp the restored luma into the file's quantization box (on, what decode does) or not "
                        "(the network's own output, for the comparison)")
    p.add_argument("--tables", choices=["ijg", "flat", "camera", "ijg_edit", "nonijg"], default="ijg",
                   help="encode with the IJG tables of each quality (the papers' protocol) or non-IJG tables "
                        "of that strength (nonijg: all three kinds)")
    p.add_argument("--precision", choices=["float32", "bfloat16"], default="float32",
                   help="run the learned layers in bf16 (what decode(precision='bfloat16') does)")
    p.add_argument("--flips", type=int, choices=[1, 2, 4], default=1,
                   help="the flip ensemble (what decode(flips=N) does): its own card entry")
    p.add_argument("--update-card", action="store_true", help="write the results into the weights' card")
    p.add_argument("--json", help="write all results (per image too) to this file")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=_cmd_eval)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="kdecode")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    args.argv = argv[1:]
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
