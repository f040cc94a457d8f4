"""Model registry: every model is a decoder from coefficients to pixels.

A model is a name with a builder; a learned model's weights live in ``kdecode/weights/`` as
``NAME_qQ.safetensors`` (or ``NAME.safetensors`` for one model covering several qualities) with
a JSON card beside it (``.json``, same stem) that says what the weights are: architecture,
the qualities they were trained for, the training recipe and the metrics ``kdecode eval``
measured. ``load_model(name, quality)`` picks the weights trained nearest ``quality``.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Callable

import torch

from ..errors import KdecodeError
from .base import Decoder, ExactDecoder

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"

_BUILDERS: dict[str, Callable[..., Decoder]] = {}
_ALIASES = {"exact": "exact", None: "exact"}
# "auto" restores only files at most this quality: above it JPEG artifacts are faint and the
# shipped models (trained at 10..40) would change pixels for little gain.
AUTO_MAX_QUALITY = 50


def register(name: str, builder: Callable[..., Decoder]) -> None:
    """Register ``builder(quality=None, device=None) -> Decoder`` under ``name``."""
    _BUILDERS[name] = builder


def list_models() -> list[str]:
    """Names accepted by ``load_model`` and ``decode(model=...)``."""
    return sorted(_BUILDERS)


def load_model(name: str, quality: int | None = None, device=None, precision: str = "float32",
               flips: int = 1) -> Decoder:
    """Build model ``name`` with the weights trained nearest ``quality`` on ``device``.

    ``quality=None`` takes the weights trained at the lowest quality (the strongest
    restoration). ``precision``: see :attr:`Decoder.precision` (the exact decode and D3 are
    float32/integer whatever it says); ``flips``: see :attr:`Decoder.flips`."""
    key = _ALIASES.get(name, name)
    if key not in _BUILDERS:
        raise KdecodeError("model", f"unknown model {name!r}; available: {', '.join(list_models())}")
    # Built and loaded outside inference mode whatever the caller's context (decode_iter picks
    # its decoders inside it): parameters made there would be inference tensors, which keep no
    # version counter (Fast AR-CNN keys a cache on it) and can never be trained.
    with torch.inference_mode(False):
        return _BUILDERS[key](quality=quality, device=device).set_precision(precision).set_flips(flips)


# ----------------------------------------------------------------------------- shipped weights
@lru_cache(maxsize=None)
def _cards_in(folder: str) -> tuple[dict, ...]:
    cards = []
    for path in sorted(Path(folder).glob("*.json")):
        card = json.loads(path.read_text())
        if (path.with_suffix(".safetensors")).is_file():
            card["_weights"] = str(path.with_suffix(".safetensors"))
            cards.append(card)
    return tuple(cards)


def shipped_cards(name: str | None = None, folder: Path | None = None) -> list[dict]:
    """Cards of the weights shipped in ``folder`` (default ``kdecode/weights``), optionally of
    one model, sorted by their lowest quality."""
    cards = [c for c in _cards_in(str(folder or WEIGHTS_DIR)) if name is None or c["model"] == name]
    return sorted(cards, key=lambda c: min(c["qualities"]))


def select_card(name: str, quality: int | None, folder: Path | None = None) -> dict:
    """The card of model ``name`` whose training qualities are nearest ``quality`` (ties go to
    the lower quality: the stronger restoration); ``None`` picks the lowest."""
    cards = shipped_cards(name, folder)
    if not cards:
        raise KdecodeError("model", f"no weights shipped for model {name!r} in {folder or WEIGHTS_DIR}")
    if quality is None:
        return cards[0]
    return min(cards, key=lambda c: (min(abs(q - quality) for q in c["qualities"]), min(c["qualities"])))


def build(name: str, **arch_kwargs) -> Decoder:
    """A fresh (untrained) learned decoder of architecture ``name``; its learned part is
    ``model.net`` (what the weights files hold)."""
    if name == "hrcnn":
        from .hrcnn import HRCNN

        return HRCNN(**arch_kwargs)
    if name == "dmcnn":
        from .dmcnn import DMCNN

        return DMCNN(**arch_kwargs)
    if name in ("d3", "d3_128"):  # D3-256 and D3-128: the size is in arch_kwargs ("atoms")
        from .d3 import D3

        return D3(**arch_kwargs)
    from .pixel import build as build_pixel

    return build_pixel(name, **arch_kwargs)


def load_weights(card: dict, device=None) -> Decoder:
    """Build the decoder a card describes and load its safetensors weights."""
    from safetensors.torch import load_file

    model = build(card["model"], **card.get("arch_kwargs", {}))
    model.net.load_state_dict(load_file(card["_weights"]))
    model.card = card
    return model.eval().to(device, memory_format=torch.channels_last)


def card_for_weights(path: str | Path) -> dict:
    """Read the card beside a weights file (``X.safetensors`` -> ``X.json``)."""
    path = Path(path)
    card = json.loads(path.with_suffix(".json").read_text())
    card["_weights"] = str(path)
    return card


def _learned(name: str) -> Callable[..., Decoder]:
    def builder(quality=None, device=None):
        return load_weights(select_card(name, quality), device)
    return builder


def resolve_model(name, device=None, quality: int | None = None) -> str:
    """The registry name that ``decode(model=name)`` uses.

    ``"auto"`` picks, for a file of estimated ``quality``, the shipped model with the best
    PSNR that ``kdecode eval`` measured on LIVE1_gray at the nearest trained quality, among
    those practical on ``device`` (on CPU the ones whose card marks them ``cpu_friendly``) and
    not marked ``"status": "not final..."`` (weights short of their issue's figures);
    the exact decode for files above :data:`AUTO_MAX_QUALITY` or when nothing is shipped."""
    if name != "auto":
        return _ALIASES.get(name, name)
    if quality is not None and quality > AUTO_MAX_QUALITY:
        return "exact"
    on_gpu = device is not None and torch.device(device).type != "cpu"
    # Remembered per (device kind, quality) for the cards read (a new read, after the cache of
    # _cards_in is cleared, is a new tuple): choosing scans every card, about 85 us a decode.
    cards = _cards_in(str(WEIGHTS_DIR))
    known = _auto_choices.get((on_gpu, quality))
    if known is not None and known[0] is cards:
        return known[1]
    best = _auto_choice(on_gpu, quality)
    _auto_choices[(on_gpu, quality)] = (cards, best)
    return best


_auto_choices: dict = {}


def _auto_choice(on_gpu: bool, quality: int | None) -> str:
    best, best_psnr = "exact", -1.0
    for model in {c["model"] for c in shipped_cards()}:
        card = select_card(model, quality)
        if not on_gpu and not card.get("cpu_friendly", False):
            continue
        if card.get("status", "final").startswith("not final"):  # shipped, but short of its figures
            continue
        live1 = card.get("metrics", {}).get("LIVE1_gray", {})
        if not live1:
            continue
        q = str(min((int(k) for k in live1), key=lambda k: abs(k - (quality or 10))))
        if live1[q]["model"]["psnr"] > best_psnr:
            best, best_psnr = model, live1[q]["model"]["psnr"]
    return best


register("exact", lambda quality=None, device=None: ExactDecoder())
for _name in ("arcnn", "fast_arcnn", "dcsc", "hrcnn", "dmcnn", "d3", "d3_128"):
    register(_name, _learned(_name))
