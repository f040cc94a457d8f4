"""``kdecode.decode``: a drop-in replacement for Pillow's decoding (``Image.open(f)`` then ``load()``)."""
from __future__ import annotations

import functools
import io

import numpy as np
import torch

from .errors import KdecodeError
from .jpeg.quality import estimate_quality
from .jpeg.reader import Source, read_coefficients, settings
from .ops import exact_cpu
from .models.base import RunOptions
from .models.registry import list_models, load_model, resolve_model, select_card

_OUTPUTS = ("pil", "numpy", "torch")
_model_cache: dict = {}


def _get_model(name: str, quality, device, options: RunOptions = RunOptions()):
    key = (name, quality, str(device), options)
    if key not in _model_cache:
        _model_cache[key] = load_model(name, quality=quality, device=device, precision=options.precision,
                                       flips=options.flips)
    return _model_cache[key]


def check_model(model, device=None, options: RunOptions = RunOptions()) -> None:
    """Raise a :class:`KdecodeError` listing the models when ``model`` is not one of them (and
    a ValueError for ``options`` out of their range, :meth:`RunOptions.check`)."""
    if resolve_model(model, device) not in list_models():
        raise KdecodeError("model", f"unknown model {model!r}; available: {', '.join(list_models())} (or None/'auto')")
    options.check()


def decoder_for(coeffs, model, device=None, options: RunOptions = RunOptions()):
    """The :class:`~kdecode.models.Decoder` that ``decode(model=model)`` runs for ``coeffs``
    (loaded once per process, device and options)."""
    # Learned models are trained per quality: pick the weights nearest the file's own quality,
    # estimated from its luma table (the estimate ``kdecode info`` prints).
    if resolve_model(model, device) == "exact":  # no weights to choose: skip the estimate
        return _get_model("exact", None, device)
    quality = estimate_quality(coeffs.components[0].qtable)[0]
    name = resolve_model(model, device, quality)
    if name == "exact":
        return _get_model("exact", None, device)
    # One cached decoder per weights file: key by the quality the chosen weights were trained at.
    quality = min(select_card(name, quality)["qualities"])
    return _get_model(name, quality, device, options)


def decode(src: Source, model: str | None = "auto", device=None, output: str = "pil", precision: str = "float32",
           flips: int = 1, **read_options):
    """Decode a JPEG (path, bytes or binary file object).

    ``model=None`` or ``"exact"``: exactly what Pillow returns after ``load()`` (mode L, RGB or
    CMYK, same size, identical pixels). A model name restores the image with that model (the
    luma of gray and YCbCr files; RGB and CMYK/YCCK files have none and are decoded exactly);
    ``"auto"`` picks the best shipped model for the file's quality and the device (the exact
    decode for files above quality 50). Learned models use the weights trained nearest the
    file's quality, estimated from its luma quantization table.
    ``output``: ``"pil"`` (PIL.Image), ``"numpy"`` (uint8 HxW, HxWx3 or HxWx4) or ``"torch"`` (uint8
    CHW tensor on ``device``). ``read_options`` go to :func:`read_coefficients`
    (``max_pixels``, ``allow_truncated``).
    ``precision="bfloat16"`` runs a model's learned layers in bf16 (faster on a GPU's tensor
    cores and a CPU with AMX; several times slower on a CPU without bf16 arithmetic, where it
    warns; the README's quality table gives what it costs); the exact decode is unaffected.
    ``flips=2`` or ``4``: the model also restores the image mirrored left-right (and upside
    down) and the results are averaged, for a little more quality at 2x or 4x the model's time
    (:attr:`~kdecode.models.Decoder.flips`; the README's quality table gives what it gains).
    """
    if output not in _OUTPUTS:
        raise ValueError(f"output must be one of {_OUTPUTS}, got {output!r}")
    options = RunOptions(precision, flips)
    check_model(model, device, options)
    return decode_source(src, model, device, output, options, settings.threads(), read_options)


def decode_source(src: Source, model, device, output: str, options: RunOptions, threads: int, read_options: dict):
    """:func:`decode` of one source, arguments checked (``decode_iter``'s CPU workers call it).

    Where the result is the exact decode on CPU, its pixel stage runs in the reader's own call
    (beside the entropy decoding, on a second thread, with ``threads > 1``); for ``"auto"``
    that is decided from the quantization table the marker parser saw, before the read."""
    if exact_cpu.usable(device) and (model == "auto" or resolve_model(model, device) == "exact"):
        def auto_is_exact(luma_table) -> bool:
            return resolve_model(model, device, estimate_quality(luma_table)[0]) == "exact"
        decode_if = auto_is_exact if model == "auto" else None  # None: the exact decode, always
        coeffs, array = exact_cpu.read_and_decode(src, _rgbx(output), threads, decode_if, **read_options)
        if array is not None:  # the exact decode was asked for, or chosen by decode_if
            return _host_output(array, coeffs, device, output)
        decoder = decoder_for(coeffs, model, device, options)
    else:
        coeffs = read_coefficients(src, **read_options)
        decoder = decoder_for(coeffs, model, device, options)
    return decode_with(decoder, coeffs, device, output, threads)


def decode_with(decoder, coeffs, device, output: str, threads: int = 1):
    """``decoder``'s image of ``coeffs`` as ``output`` asks for it (the exact decode on CPU on
    up to ``threads`` threads)."""
    if decoder.name == "exact" and exact_cpu.usable(device):
        return _host_output(exact_cpu.decode_array(coeffs, _rgbx(output), threads), coeffs, device, output)
    with torch.inference_mode():
        image = decoder.decode(coeffs, device)  # uint8 [C, H, W]
    return _convert(image, output, device, coeffs)


def _rgbx(output: str) -> bool:
    # The C pixel stage writes straight into the output's layout: for PIL, Pillow's own storage
    # of RGB (4 bytes a pixel), which Pillow then uses without a copy.
    return output == "pil" and _pillow_maps_rgbx()


def _host_output(array: np.ndarray, coeffs, device, output: str):
    """uint8 ``[H, W, C]`` samples (``[H, W, 4]`` R, G, B, 255 for colour when ``_rgbx(output)``),
    from the C pixel stage or a copy to the host, as ``output``."""
    if output == "torch":
        return _convert(torch.from_numpy(array).permute(2, 0, 1), output, device)
    if array.shape[2] == 4 and len(coeffs.components) == 3:
        return _with_info(_map_rgbx(array), coeffs)
    return _from_array(array[..., 0] if array.shape[2] == 1 else array, output, coeffs)


def _convert(image: torch.Tensor, output: str, device, coeffs=None):
    """A decoder's uint8 ``[C, H, W]`` image (on any device) as ``output``."""
    if output == "torch":
        return image.to(device) if device is not None else image
    return _host_output(_to_host(_channels_last(image, output)).numpy(), coeffs, device, output)


def _channels_last(image: torch.Tensor, output: str) -> torch.Tensor:
    """uint8 ``[C, H, W]`` as contiguous ``[H, W, C]`` on its own device (``[H, W, 4]`` R, G, B,
    255 for a PIL RGB image, the layout Pillow maps without a copy). On a GPU this is one
    kernel; on the host, numpy's strided uint8 transpose cost 2.3 ms for a 768x512 image
    (torch's 0.6 ms), more than the GPU spends decoding it."""
    hwc = image.permute(1, 2, 0)
    if image.shape[0] == 3 and _rgbx(output):
        return torch.nn.functional.pad(hwc, (0, 1), value=255)
    return hwc.contiguous()


def _to_host(image: torch.Tensor, non_blocking: bool = False) -> torch.Tensor:
    """``image`` in host memory. ``non_blocking``: a GPU image goes to pinned memory by a copy
    queued on the current stream; it may be read only after that stream is synchronized."""
    if image.device.type == "cpu":
        return image
    if not non_blocking:
        return image.cpu()
    host = torch.empty(image.shape, dtype=image.dtype, pin_memory=True)
    return host.copy_(image, non_blocking=True)


def _from_array(array: np.ndarray, output: str, coeffs=None):
    """uint8 ``[H, W]``, ``[H, W, 3]`` or ``[H, W, 4]`` as a numpy array or a PIL image (mode L,
    RGB or CMYK, with the ``info`` of ``coeffs``' file)."""
    if output == "numpy":
        return array
    from PIL import Image

    if array.ndim == 2:  # Pillow stores L as the array does: no copy
        image = Image.frombuffer("L", (array.shape[1], array.shape[0]), array, "raw", "L", 0, 1)
    else:
        image = Image.fromarray(array, "RGB" if array.shape[2] == 3 else "CMYK")
    return _with_info(image, coeffs)


def _with_info(image, coeffs):
    if coeffs is not None:
        image.info.update(pil_info(coeffs))
    return image


def pil_info(coeffs) -> dict:
    """The ``info`` Pillow gives this file's image (JFIF version and density, ``dpi``, ``exif``,
    ``icc_profile``, ``xmp``, ``comment``, ``adobe``, ``progressive``...): Pillow's own JPEG
    header parser run on the file's markers (``coeffs.metadata``), so that decode's PIL images
    carry what Pillow's do (to be saved with their profile and EXIF, to read their orientation:
    a drop-in replacement has to). Empty for coefficients without the file's markers."""
    if not coeffs.metadata:
        return {}
    # Cached: files from one camera or one encoder share their markers, and the parse costs
    # about 25 us, 3% of decoding a 0.15 MP image. Large ones (a thumbnail in the EXIF, an ICC
    # profile) are parsed each time rather than kept.
    parse = _parse_info_cached if len(coeffs.metadata) <= _CACHED_METADATA_BYTES else _parse_info
    return dict(parse(coeffs.metadata))  # a copy: the cached dict stays as Pillow made it


_CACHED_METADATA_BYTES = 4096


def _parse_info(metadata: bytes) -> dict:
    from PIL import JpegImagePlugin

    try:
        with JpegImagePlugin.JpegImageFile(io.BytesIO(metadata)) as parsed:
            return dict(parsed.info)
    except Exception:  # noqa: BLE001  markers Pillow's parser refuses: Pillow opens no image, so has no info
        return {}


_parse_info_cached = functools.lru_cache(maxsize=256)(_parse_info)


def _map_rgbx(array: np.ndarray):
    """A mode RGB PIL image on uint8 ``[H, W, 4]`` (R, G, B, 255: how Pillow stores RGB), without
    a copy: what ``Image.frombuffer`` does for the modes it maps, for RGB. Read-only like every
    mapped image: Pillow copies it before anything changes it."""
    from PIL import Image

    im = Image.Image()._new(Image.core.map_buffer(array, (array.shape[1], array.shape[0]), "raw", 0, ("RGB", 0, 1)))
    im.readonly = 1
    return im


@functools.cache
def _pillow_maps_rgbx() -> bool:
    """Whether this Pillow maps 4-byte RGB memory as above (checked once on a probe image;
    otherwise ``Image.fromarray`` copies 3-byte RGB)."""
    try:
        im = _map_rgbx(np.array([[[1, 2, 3, 255], [4, 5, 6, 255]]], np.uint8))
        return im.mode == "RGB" and im.size == (2, 1) and im.tobytes() == bytes([1, 2, 3, 4, 5, 6])
    except Exception:  # noqa: BLE001 - any failure means: use the copying path
        return False
