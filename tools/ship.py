"""Ship a training run's weights: copy them and their card into ``kdecode/weights``, with the
record of how they came to be, and the verdict against the issue's figures.

    python tools/ship.py RUN_DIR [--history EARLIER_RUN_DIR ...] [--continues SHIPPED_CARD]
                         [--ablation NAME=RUN_DIR:WHAT] [--average RUN_DIR ... [--stages]]
                         [--chosen-on TEXT] [--half] [--note TEXT]
    python tools/ship.py --restatus MODEL     (the verdict again, after `kdecode eval --update-card`)

- ``--history``: the training records of the stages before this run (easy-to-hard transfer,
  a continuation), oldest first: the card then tells the whole recipe, not only its last step;
- ``--continues``: the run started from shipped weights (``--init-from``): their card's history
  and training record (labelled ``--stage-name``) become this card's history, and its ablations,
  earlier further training and note carry over, so the card still tells the whole recipe;
- ``--ablation``: another run's training record and metrics under ``card["ablation"][NAME]``
  (e.g. DMCNN without its DCT Rectify Unit);
- ``--average``: sibling runs of RUN_DIR (same start and recipe, other seeds; the peak learning
  rate and the schedule's length may differ): ship the mean of all their weights (so that no single run is picked by its
  test-set figures); the card keeps RUN_DIR's training record and lists every averaged run
  (seed, optimizer, steps, wall time, validation) under ``training.weight_average``;
- ``--stages``: the averaged runs are stages of RUN_DIR's own line of training instead (the runs
  it continued from, and runs that branched from one of them with another seed, loss or
  schedule): a tail average across stages, as stochastic weight averaging does within one run.
  Their starts, losses, schedules and augmentations (copies of the files) differ; the model,
  data, scales, patch and batch must agree. Which mean ships is a choice, so ``--chosen-on`` records what chose it (a validation set
  outside the issue's figures, and what each candidate measured there);
- ``--half``: store the weights as float16 (half the bytes; the model computes in float32). The
  card's metrics were measured on the float32 weights: run ``kdecode eval --update-card`` on
  the shipped file afterwards, so that the card holds what the shipped file gives;
- ``status``: ``final`` only where every LIVE1_gray figure of the issue is reached (see
  :data:`TARGETS`), else ``not final: ...`` with the shortfall, which ``model="auto"`` never
  picks (kdecode.models.registry); cards of a model without figures there keep no ``status``.
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

WEIGHTS = Path(__file__).resolve().parents[1] / "kdecode" / "weights"
# The issues' LIVE1_gray figures: ("psnr", dB) absolute PSNR, ("gain", dB) PSNR over the JPEG.
TARGETS = {
    "d3": ("psnr", {5: 26.50, 10: 29.20, 20: 31.40}),  # issue 6 (D3-256)
    "dmcnn": ("psnr", {10: 29.50, 20: 31.85}),  # issue 6
    "hrcnn": ("gain", {10: 1.45, 30: 1.41, 50: 1.28}),  # issue 7 (the paper's IPSNR)
}


def status(card: dict, siblings_final: bool = True) -> str:
    """``final`` / ``not final: <shortfall>`` for a model of :data:`TARGETS`."""
    kind, targets = TARGETS[card["model"]]
    live1 = card.get("metrics", {}).get("LIVE1_gray", {})
    short = []
    for q in card["qualities"]:
        if q not in targets:
            continue
        m = live1.get(str(q))
        got = None if m is None else m["model"]["psnr"] - (m["jpeg"]["psnr"] if kind == "gain" else 0.0)
        if got is None or got < targets[q]:
            what = "PSNR" if kind == "psnr" else "PSNR gain"
            # Four decimals, as the cards store: two would print 29.4970 as "29.50 < target 29.50".
            short.append(f"q{q} LIVE1_gray {what} {'not measured' if got is None else f'{got:+.4f}' if kind == 'gain' else f'{got:.4f}'}"
                         f" < target {targets[q]:.2f}")
    if not short and not any(q in targets for q in card["qualities"]):
        if siblings_final:
            return "final (no figure of its own at this quality; its siblings reach theirs)"
        short.append("no figure at this quality; the same recipe falls short at the qualities that have one")
    average = card["training"].get("weight_average", {})
    averaged = average.get("runs", [])
    last = f"{card['training']['wall_time_s'] / 60:.0f} min in its last stage" + \
        (f", mean of {len(averaged)} {'stages' if average.get('stages') else 'such runs'}" if averaged else "")
    return "final" if not short else "not final: " + "; ".join(short) + f" ({card['training']['device']}, {last})"


def _record(run: Path, weights: bool = True) -> tuple[dict, Path]:
    """A run folder's card (with its weights beside it, unless ``weights=False``: an earlier
    stage whose weights were not kept)."""
    cards = [p for p in sorted(run.glob("*.json")) if "training" in json.loads(p.read_text())
             and (p.with_suffix(".safetensors").exists() or not weights)]
    if not cards:
        raise SystemExit(f"{run}: no {'weights with a ' if weights else ''}card")
    return json.loads(cards[0].read_text()), cards[0]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, nargs="?")
    p.add_argument("--restatus", metavar="MODEL")
    p.add_argument("--history", type=Path, nargs="*", default=[])
    p.add_argument("--continues", type=Path, help="the card of the shipped weights the run started from")
    p.add_argument("--stage-name", default="earlier stage", help="the label of that card's training in the history")
    p.add_argument("--ablation", action="append", default=[], help="NAME=RUN_DIR:WHAT")
    p.add_argument("--average", type=Path, nargs="+", default=[], metavar="RUN_DIR")
    p.add_argument("--stages", action="store_true", help="--average's runs are earlier stages and branches of RUN")
    p.add_argument("--chosen-on", help="what chose this mean: validation set and figures")
    p.add_argument("--half", action="store_true")
    p.add_argument("--note")
    args = p.parse_args(argv)
    if (args.stages or args.chosen_on) and not args.average:
        p.error("--stages and --chosen-on describe an --average")
    if args.stages and not args.chosen_on:
        p.error("--stages needs --chosen-on: a mean of stages is picked among several, and the card says how")
    if args.restatus:
        restatus(args.restatus)
        return
    card, card_path = _record(args.run)
    card["history"] = [dict(_record(h, weights=False)[0]["training"], run=h.name) for h in args.history]
    if args.continues:
        before = json.loads(args.continues.read_text())
        card["history"] = before.get("history", []) + [dict(before["training"], run=args.stage_name)] + card["history"]
        for key in ("ablation", "further_training", "note"):
            if key in before:
                card[key] = before[key]
    for spec in args.ablation:
        name, _, rest = spec.partition("=")
        run, _, what = rest.partition(":")
        other, _ = _record(Path(run), weights=False)
        card.setdefault("ablation", {})[name] = {"what": what, "training": other["training"],
                                                 "metrics": other.get("metrics", {})}
    if args.note:
        card["note"] = (card["note"] + " " if "note" in card else "") + args.note
    weights = card_path.with_suffix(".safetensors")
    dest = WEIGHTS / weights.name
    if args.average or args.half:
        from safetensors.torch import load_file, save_file

        state = load_file(str(weights))
        if args.average:
            state = _average(card, state, args.run, args.average, args.stages, args.chosen_on)
        if args.half:
            state = {k: v.half() for k, v in state.items()}
            card["storage"] = "float16 weights (computed in float32)"
        save_file({k: v.contiguous() for k, v in state.items()}, str(dest))
    else:
        dest.write_bytes(weights.read_bytes())
    dest.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    restatus(card["model"])


def _schedule(optimizer: str | None) -> str | None:
    """An optimizer record without its peak learning rate and its length ("Adam lr 0.0002 ->
    1e-05 (warm-up 20, cosine over 7200 s ...)" -> "Adam lr * -> 1e-05 (warm-up 20, cosine over
    * ...)"): runs from one start may be averaged across peak rates and lengths, as the weights
    stay in one basin; the optimizer, the floor, the warm-up and the schedule's shape must agree."""
    if not optimizer:
        return optimizer
    return re.sub(r"\bover [0-9.]+ (s|steps)\b", "over *", re.sub(r"\blr [0-9.e+-]+ ->", "lr * ->", optimizer))


def _average(card: dict, state: dict, run: Path, others: list[Path], stages: bool = False,
             chosen_on: str | None = None) -> dict:
    """The mean of ``state`` and the other runs' weights (float64 sums), recorded in ``card``:
    siblings (same start and recipe), or with ``stages`` runs of one line of training."""
    from safetensors.torch import load_file

    if stages:
        # A line of training changes its start, loss and schedule from stage to stage, and may
        # add copies of its files (the augmentation: transposed, shifted before compression);
        # the images, scales, patch and batch stay.
        recipe, same_schedule = ("data", "scales", "batch", "patch"), False
        refusal = "not a stage of {run}'s training (model, architecture, qualities, data, scales, patch or batch differ)"
        how = ("runs of one line of training (stages, each started from an earlier one's weights, or branches from "
               "one of them; starts, losses, schedules and file copies differ)")
        keys = ("seed", "init_from", "optimizer", "loss", "augmentation", "steps", "wall_time_s", "validation")
    else:
        recipe, same_schedule = ("init_from", "batch", "patch", "loss", "augmentation"), True
        refusal = "not a sibling of {run} (model, architecture, qualities, start or recipe differ)"
        how = "runs from the same start and recipe (other seeds; the peak learning rate and the schedule's length may differ)"
        keys = ("seed", "optimizer", "steps", "wall_time_s", "validation")
    runs = [(run, card, state)]
    for sibling in others:
        other, other_path = _record(sibling)
        if any(other.get(k) != card.get(k) for k in ("model", "arch_kwargs", "qualities")) or \
                any(other["training"].get(k) != card["training"].get(k) for k in recipe) or \
                (same_schedule and _schedule(other["training"].get("optimizer")) != _schedule(card["training"].get("optimizer"))):
            raise SystemExit(f"{sibling}: " + refusal.format(run=run))
        other_state = load_file(str(other_path.with_suffix(".safetensors")))
        if {k: v.shape for k, v in other_state.items()} != {k: v.shape for k, v in state.items()}:
            raise SystemExit(f"{sibling}: its tensors differ from {run}'s")
        runs.append((sibling, other, other_state))
    card["training"]["weight_average"] = {
        "how": f"arithmetic mean of the weights of {len(runs)} {how}",
        "runs": [{"run": r.name, **{k: c["training"].get(k) for k in keys}} for r, c, _ in runs],
        **({"stages": True} if stages else {}), **({"chosen_on": chosen_on} if chosen_on else {})}
    return {k: (sum(s[k].double() for _, _, s in runs) / len(runs)).to(v.dtype) for k, v in state.items()}


def restatus(model: str) -> None:
    """Every shipped card of ``model``: those with figures first, then the qualities without
    (their verdict follows their siblings')."""
    base = model.rsplit("_q", 1)[0]
    if model not in TARGETS and base in TARGETS:
        # A card's name (hrcnn_q10) would otherwise pass silently as a model without figures.
        raise SystemExit(f"--restatus takes a model, not a card: {base!r}, not {model!r}")
    if model not in TARGETS:
        # Its issue's figures were checked when that issue closed; a card without "status" is
        # final to the registry, and a new verdict here would only rewrite every sibling card.
        print(f"{model}: no open figures (tools/ship.py TARGETS); cards left as they are")
        return
    paths = sorted(WEIGHTS.glob(f"{model}_q*.json"))
    cards = {p: json.loads(p.read_text()) for p in paths}
    targets = TARGETS[model][1]
    own = [p for p in paths if any(q in targets for q in cards[p]["qualities"])]
    for p in own:
        cards[p]["status"] = status(cards[p])
    siblings_final = all(cards[o]["status"].startswith("final") for o in own)
    for p in paths:
        if p not in own:
            cards[p]["status"] = status(cards[p], siblings_final)
        p.write_text(json.dumps(cards[p], indent=2) + "\n")
        print(p.stem, cards[p]["status"])


if __name__ == "__main__":
    main()
