"""``kdecode.decode``: a drop-in replacement for ``Image.open(f).convert()``-free Pillow decoding."""
from __future__ import annotations

import numpy as np
import torch

from .errors import KdecodeError
from .jpeg.quality import estimate_quality
from .jpeg.reader import Source, read_coefficients
from .models.registry import list_models, load_model, resolve_model, select_card

_OUTPUTS = ("pil", "numpy", "torch")
_model_cache: dict = {}


def _get_model(name: str, quality, device):
    key = (name, quality, str(device))
    if key not in _model_cache:
        _model_cache[key] = load_model(name, quality=quality, device=device)
    return _model_cache[key]


def check_model(model, device=None) -> None:
    """Raise a :class:`KdecodeError` listing the models when ``model`` is not one of them."""
    if resolve_model(model, device) not in list_models():
        raise KdecodeError("model", f"unknown model {model!r}; available: {', '.join(list_models())} (or None/'auto')")


def decoder_for(coeffs, model, device=None):
    """The :class:`~kdecode.models.Decoder` that ``decode(model=model)`` runs for ``coeffs``
    (loaded once per process and device)."""
    # Learned models are trained per quality: pick the weights nearest the file's own quality,
    # estimated from its luma table (the estimate ``kdecode info`` prints).
    if resolve_model(model, device) == "exact":  # no weights to choose: skip the estimate
        return _get_model("exact", None, device)
    quality = estimate_quality(coeffs.components[0].qtable)[0]
    name = resolve_model(model, device, quality)
    # One cached decoder per weights file: key by the quality the chosen weights were trained at.
    quality = None if name == "exact" else min(select_card(name, quality)["qualities"])
    return _get_model(name, quality, device)


def decode(src: Source, model: str | None = "auto", device=None, output: str = "pil", **read_options):
    """Decode a JPEG (path, bytes or binary file object).

    ``model=None`` or ``"exact"``: exactly what Pillow returns after ``load()`` (mode L or RGB,
    same size, identical pixels). A model name restores the image with that model;
    ``"auto"`` picks the best shipped model for the file's quality and the device (the exact
    decode for files above quality 50). Learned models use the weights trained nearest the
    file's quality, estimated from its luma quantization table.
    ``output``: ``"pil"`` (PIL.Image), ``"numpy"`` (uint8 HxW or HxWx3) or ``"torch"`` (uint8
    CHW tensor on ``device``). ``read_options`` go to :func:`read_coefficients`
    (``max_pixels``, ``allow_truncated``).
    """
    if output not in _OUTPUTS:
        raise ValueError(f"output must be one of {_OUTPUTS}, got {output!r}")
    check_model(model, device)
    coeffs = read_coefficients(src, **read_options)
    decoder = decoder_for(coeffs, model, device)
    with torch.inference_mode():
        image = decoder.decode(coeffs, device)  # uint8 [C, H, W]
    return _convert(image, output, device)


def _convert(image: torch.Tensor, output: str, device):
    if output == "torch":
        return image.to(device) if device is not None else image
    array = image.cpu().numpy()
    array = array[0] if array.shape[0] == 1 else np.ascontiguousarray(array.transpose(1, 2, 0))
    if output == "numpy":
        return array
    from PIL import Image

    return Image.fromarray(array, "L" if array.ndim == 2 else "RGB")
