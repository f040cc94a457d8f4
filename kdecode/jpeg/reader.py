"""``read_coefficients``: from a path, bytes or file object to :class:`JpegCoefficients`.

The marker parser checks the file first (cheap, no allocation); a backend then entropy-decodes it.
For the native backend the parser stops at the first scan (everything that sizes the arrays is
before it): libjpeg itself reports what lies beyond (truncation, restart markers out of order,
corrupt data, too many scans), and only a file it flags is walked whole, to raise the same error as
the jpeglib backend would. Backends share one interface (``read(data, path, header, source,
allow_truncated, pixels) -> (list of int16 block arrays, uint16 [n_components, 8, 8] tables,
warning count, messages)``, where ``pixels`` may be given only to a backend whose
``decodes_pixels`` is true) so the reader can be swapped without touching anything above. The
native backend (``kdecode._jpegnative``, libjpeg-turbo, built with the package) is used when it is
built; otherwise, or with ``KDECODE_READER=jpeglib`` in the environment, the jpeglib backend is.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO, Iterable, Union

import numpy as np

from ..errors import CorruptJpegError, KdecodeError, UnsupportedJpegError
from .coefficients import Component, JpegCoefficients
from .markers import JpegHeader, parse_header

Source = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO]


@dataclass
class Settings:
    """Process-wide defaults; every reading function also takes them as arguments.

    ``max_image_pixels``: width*height above which a file is refused before decoding (like
    Pillow's ``Image.MAX_IMAGE_PIXELS``; the default equals the size at which Pillow raises
    ``DecompressionBombError``). ``None`` disables the check.
    ``allow_truncated``: accept truncated or corrupt entropy-coded data (missing blocks are
    zero, like Pillow's ``ImageFile.LOAD_TRUNCATED_IMAGES``); the count of corrupt-data
    warnings is kept in ``JpegCoefficients.warnings``.
    ``max_scans``: files with more scans are refused (a progressive file with thousands of
    scans would re-walk the whole image for each; encoders' progressive scripts use about 10).
    ``None`` disables the check.
    ``decode_threads``: threads ``decode(model=None)`` may use for one image on CPU (with 2 or
    more, a single-scan file of 64K pixels or more is decoded to pixels on a second thread while
    libjpeg entropy-decodes it, and a progressive one is cut into bands of rows of at least 128K
    pixels after the read; same result); ``None``: as many as torch's
    intra-op threads (``torch.get_num_threads()``: one in a ``DataLoader`` worker, so that worker
    processes do not oversubscribe the cores), at most the process's CPUs and 8; 1: the calling
    thread only. ``decode_batch`` and ``decode_iter`` run images side by side, one thread each
    (a list of fewer images than workers gives each image the spare workers instead).
    """

    max_image_pixels: int | None = 2 * 89_478_485
    allow_truncated: bool = False
    max_scans: int | None = 500
    decode_threads: int | None = None

    def threads(self) -> int:
        """``decode_threads`` resolved to a number."""
        if self.decode_threads is not None:
            return max(1, int(self.decode_threads))
        import torch

        return max(1, min(_CPUS, 8, torch.get_num_threads()))


settings = Settings()
_CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _load_source(src: Source) -> tuple[bytes, str | None, str]:
    """Return (data, path or None, display name)."""
    if isinstance(src, (str, os.PathLike)):
        path = os.fspath(src)
        with open(path, "rb") as f:
            return f.read(), path, path
    if isinstance(src, (bytes, bytearray, memoryview)):
        return bytes(src), None, "<bytes>"
    if hasattr(src, "read"):
        data = src.read()
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError("file object must be opened in binary mode")
        name = getattr(src, "name", None)
        return bytes(data), None, name if isinstance(name, str) else "<file object>"
    raise TypeError(f"expected a path, bytes or a binary file object, got {type(src).__name__}")


class JpeglibBackend:
    """Reads coefficients with jpeglib (a ctypes binding of libjpeg).

    jpeglib needs a path, so bytes go through a temporary file; it prints libjpeg's warnings
    on the C stderr, so they are captured there to turn corrupt data into an error (jpeglib
    itself returns zero-filled blocks for truncated files). Both make this backend slow and
    serial (a lock guards the stderr redirection): the native reader replaces it.
    """

    name = "jpeglib"
    checks_whole_file = False  # libjpeg's warnings only: the marker parser walks every scan first
    decodes_pixels = False
    _lock = threading.Lock()

    def __init__(self):
        import jpeglib

        self._jpeglib = jpeglib
        # libjpeg-turbo 2.1 reads arithmetic-coded files, IJG 6b (jpeglib's default) does not.
        jpeglib.version.set("turbo210")
        self.library = f"jpeglib {jpeglib.__version__} (libjpeg-turbo 2.1.0 build, no SIMD)"

    def read(self, data: bytes, path: str | None, header: JpegHeader, source: str,
             allow_truncated: bool = True, pixels: None = None, empty=np.empty):
        if pixels is not None:
            raise ValueError("the jpeglib reader does not decode pixels (decodes_pixels is False)")
        import tempfile

        import ctypes

        from jpeglib._bind import CJpegLib

        # jpeglib's own read_dct() reads the file three times (info, markers, coefficients) and
        # copies it to one more temporary file; its C function alone reads it once, into arrays
        # allocated here from the checked header (twice as fast).
        planes = [empty((bh, bw, 8, 8), np.int16) for bh, bw in header.block_grids()]
        qt = np.zeros((4, 64), np.uint16)
        table_of = np.zeros(4, np.int16)
        pointers = [p.ctypes.data_as(ctypes.c_void_p) for p in planes] + [None] * (4 - len(planes))
        with self._lock:
            tmp = None
            try:
                if path is None:
                    fd, tmp = tempfile.mkstemp(suffix=".jpg")
                    with os.fdopen(fd, "wb") as f:
                        f.write(data)
                with _CaptureStderr() as err:
                    status = CJpegLib.get().read_jpeg_dct(
                        os.fsencode(path or tmp), *pointers, qt.ctypes.data_as(ctypes.c_void_p),
                        table_of.ctypes.data_as(ctypes.c_void_p))
                if status == 0:
                    raise CorruptJpegError(source, f"libjpeg failed: {err.text().strip() or 'unknown error'}")
            finally:
                if tmp:
                    os.unlink(tmp)
        # Each decode pass prints the warning; count distinct lines. The two warnings libjpeg
        # gives about markers, not data, are harmless (as in the native reader) and dropped.
        lines = dict.fromkeys(ln for ln in err.text().splitlines()
                              if ln.strip() and not ln.startswith(_HARMLESS_WARNINGS))
        messages, warnings = "\n".join(lines), len(lines)
        qtables = qt[table_of[: len(planes)].astype(np.intp)].reshape(-1, 8, 8)
        return planes, qtables, warnings, messages


#: libjpeg's texts of JWRN_JFIF_MAJOR and JWRN_ADOBE_XFORM (jerror.h).
_HARMLESS_WARNINGS = ("Warning: unknown JFIF revision number", "Unknown Adobe color transform code")


class _CaptureStderr:
    """Redirect the process-level fd 2 to a temporary file (libjpeg writes there directly)."""

    def __enter__(self):
        import sys
        import tempfile

        sys.stderr.flush()
        self._file = tempfile.TemporaryFile()
        self._saved = os.dup(2)
        os.dup2(self._file.fileno(), 2)
        return self

    def __exit__(self, *exc):
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._file.seek(0)
        self._text = self._file.read().decode("utf-8", "replace")
        self._file.close()
        return False

    def text(self) -> str:
        return getattr(self, "_text", "")


class NativeBackend:
    """Reads coefficients with kdecode._jpegnative (C, libjpeg-turbo's jpeg_read_coefficients).

    One entropy-decoding pass from memory, straight into arrays allocated here from the checked
    frame header, with the GIL released: threads read in parallel. libjpeg's warnings are
    counted instead of printed; it counts the scans and stops past ``max_scans``.
    """

    name = "native"
    checks_whole_file = True
    decodes_pixels = True  # read(..., pixels): the exact pixel stage in the same call

    def __init__(self):
        import importlib

        self._native = importlib.import_module("kdecode._jpegnative")
        self.library = self._native.libjpeg_version

    def read(self, data: bytes, path: str | None, header: JpegHeader, source: str,
             allow_truncated: bool = True, pixels: tuple | None = None, empty=np.empty):
        grids = header.block_grids()
        # libjpeg decodes whole MCUs: it gets arrays padded to them and returns each component's
        # own grid at the start of its array. One array per component, not one per image: with
        # glibc's malloc the single larger block was not reused from the heap when many results
        # stay alive (a batch), and was page-faulted afresh each time (about 6x the faults).
        padded = [empty((-(-bh // c.v_samp) * c.v_samp, -(-bw // c.h_samp) * c.h_samp, 8, 8), np.int16)
                  for (bh, bw), c in zip(grids, header.components)]
        qtables = np.empty((len(grids), 8, 8), np.uint16)
        status, warnings, message, scans, restart_interval = self._native.read(
            data, padded, qtables, settings.max_scans or 0, not allow_truncated, pixels)
        if status == 3:
            raise UnsupportedJpegError(source, f"{message} (kdecode.settings.max_scans)")
        if status:
            # 2: a corrupt-data warning stopped it early; the others are libjpeg errors or a
            # frame that libjpeg reads differently from the marker parser (never trusted).
            kind = "corrupt entropy-coded data" if status == 2 else "libjpeg failed"
            raise CorruptJpegError(source, f"{kind} ({message})")
        if not header.whole_file:  # what the parser did not see, as libjpeg saw it
            header.scans, header.restart_interval = scans, restart_interval
        planes = [p.reshape(-1)[:bh * bw * 64].reshape(bh, bw, 8, 8) for p, (bh, bw) in zip(padded, grids)]
        return planes, qtables, warnings, message


_backend = None
_fallback_reason: str | None = None


def set_backend(name: str | None = None):
    """Choose the coefficient reader: ``"native"``, ``"jpeglib"``, or ``None`` for the default
    (``$KDECODE_READER`` if set, else native when it is built, else jpeglib). Returns it."""
    global _backend, _fallback_reason
    name = (name or os.environ.get("KDECODE_READER") or "auto").strip().lower()
    if name not in ("auto", "native", "jpeglib"):
        raise ValueError(f"unknown coefficient reader {name!r} (expected native or jpeglib)")
    _fallback_reason = None
    if name != "jpeglib":
        try:
            _backend = NativeBackend()
            return _backend
        except ImportError as e:
            if name == "native":
                raise ImportError(f"the native reader kdecode._jpegnative is not built ({e}); "
                                  "install libjpeg-turbo's headers and reinstall kdecode") from e
            _fallback_reason = f"kdecode._jpegnative not built ({e})"
    _backend = JpeglibBackend()
    return _backend


def get_backend():
    return _backend or set_backend()


def backend_info() -> dict:
    """Which coefficient reader is active, and its details."""
    b = get_backend()
    info = {"reader": b.name, "library": b.library}
    if os.environ.get("KDECODE_READER"):
        info["forced_by"] = f"KDECODE_READER={os.environ['KDECODE_READER']}"
    if _fallback_reason:
        info["fallback_reason"] = _fallback_reason
    return info


def read_coefficients(src: Source, *, max_pixels: int | None | str = "default",
                      allow_truncated: bool | None = None, pin_memory: bool = False) -> JpegCoefficients:
    """Read the quantized DCT coefficients and quantization tables of a JPEG.

    ``src``: a path, ``bytes`` or a binary file object. Returns :class:`JpegCoefficients`
    (int16 ``[blocks_h, blocks_w, 8, 8]`` blocks per component, natural order, with the file's
    own uint16 ``[8, 8]`` tables). Raises a :class:`KdecodeError` subclass for anything that is
    not a decodable 8-bit JPEG, is over ``max_pixels``, or is truncated/corrupt (unless
    ``allow_truncated``). ``pin_memory``: the blocks are read straight into pinned (page-locked)
    memory, for copies to a GPU that do not block (needs CUDA). Keep the result until such
    copies are done (their stream synchronized): its memory goes back to torch's pinned pool
    when it is freed, and torch cannot see copies made from a numpy view of it.
    """
    data, path, name = _load_source(src)
    return read_coefficients_from_bytes(data, name, path=path, max_pixels=max_pixels,
                                        allow_truncated=allow_truncated, pin_memory=pin_memory)


def read_coefficients_from_bytes(data: bytes, name: str = "<bytes>", *, path: str | None = None,
                                 max_pixels: int | None | str = "default",
                                 allow_truncated: bool | None = None, pin_memory: bool = False) -> JpegCoefficients:
    return _read(data, name, path, max_pixels, allow_truncated, empty=_pinned_empty if pin_memory else np.empty)[0]


def _pinned_empty(shape: tuple, dtype) -> np.ndarray:
    """``np.empty`` for the int16 blocks, in pinned memory (torch's caching host allocator: a
    batch's blocks reuse the last batch's pages). Without CUDA, torch raises a RuntimeError."""
    import torch

    assert np.dtype(dtype) == np.int16
    return torch.empty(shape, dtype=torch.int16, pin_memory=True).numpy()


def read_and_decode(src: Source, pixels, *, max_pixels: int | None | str = "default",
                    allow_truncated: bool | None = None):
    """:func:`read_coefficients` that also decodes the pixels in the reader's call, when the
    reader can (the native one compiles the exact pixel stage in): ``pixels(header)`` gives the
    output array and the reader's pixel arguments (see ``kdecode.ops.exact_cpu.read_and_decode``),
    or ``(None, None)`` for no pixels. Returns ``(coefficients, the array or None)``: None from a
    reader that cannot, or when not asked."""
    data, path, name = _load_source(src)
    return _read(data, name, path, max_pixels, allow_truncated, pixels)


def _read(data: bytes, name: str, path: str | None, max_pixels, allow_truncated, pixels=None, empty=np.empty):
    if max_pixels == "default":
        max_pixels = settings.max_image_pixels
    if allow_truncated is None:
        allow_truncated = settings.allow_truncated
    backend = get_backend()
    if backend.checks_whole_file:
        header = parse_header(data, name, max_pixels, allow_truncated, whole_file=False)
    else:
        header = _parse_whole_file(data, name, max_pixels, allow_truncated)
    image, pixel_args = pixels(header) if pixels and backend.decodes_pixels else (None, None)
    try:
        planes, qtables, warnings, messages = backend.read(data, path, header, name, allow_truncated, pixel_args, empty)
    except KdecodeError:
        if backend.checks_whole_file:  # the parser's reason, where it has one, as on the jpeglib path
            _parse_whole_file(data, name, max_pixels, allow_truncated)
        raise
    if warnings and not header.whole_file:
        # Tolerated corrupt data (allow_truncated): restart markers out of order are still
        # refused, and a truncated end counts as one more warning, as on the jpeglib path.
        header = _parse_whole_file(data, name, max_pixels, allow_truncated)
    if warnings and not allow_truncated:
        first = messages.strip().splitlines()[0] if messages.strip() else "corrupt data"
        raise CorruptJpegError(name, f"corrupt entropy-coded data ({first})")
    _check_grid(planes, qtables, header, name)
    comps = [Component(id=fc.id, h_samp=fc.h_samp, v_samp=fc.v_samp, qtable=qt, blocks=blocks,
                       qtable_index=fc.qtable_index)
             for fc, blocks, qt in zip(header.components, planes, qtables)]
    return JpegCoefficients(width=header.width, height=header.height, color_space=header.color_space,
                            components=comps, progressive=header.progressive,
                            arithmetic=header.arithmetic, restart_interval=header.restart_interval,
                            source=name, warnings=warnings + int(header.truncated),
                            metadata=header.metadata(data)), image


def _parse_whole_file(data: bytes, name: str, max_pixels: int | None, allow_truncated: bool) -> JpegHeader:
    header = parse_header(data, name, max_pixels, allow_truncated)
    if settings.max_scans and header.scans > settings.max_scans:
        raise UnsupportedJpegError(name, f"{header.scans} scans, over the limit of {settings.max_scans} "
                                   "(kdecode.settings.max_scans)")
    return header


def read_coefficients_batch(srcs: Iterable[Source], *, workers: int | None = None,
                            max_pixels: int | None | str = "default", allow_truncated: bool | None = None,
                            return_exceptions: bool = False) -> list:
    """:func:`read_coefficients` on many sources with ``workers`` threads (default: one per
    CPU). The native reader releases the GIL while it decodes, so threads scale; results come
    back in input order. With ``return_exceptions``, a rejected file's :class:`KdecodeError`
    takes its place in the list instead of being raised."""
    srcs = list(srcs)

    def one(src):
        try:
            return read_coefficients(src, max_pixels=max_pixels, allow_truncated=allow_truncated)
        except KdecodeError as e:
            if return_exceptions:
                return e
            raise

    workers = min(workers or os.cpu_count() or 1, max(len(srcs), 1))
    if workers == 1:
        return [one(s) for s in srcs]
    get_backend()  # choose it once, before the threads race to
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, srcs))


def _check_grid(planes: list, qtables: np.ndarray, header: JpegHeader, name: str) -> None:
    """The block grid a backend returns must be the component's own size: anything else would
    silently shift the image. Every component needs a table without zeros (one the file
    defined)."""
    for i, (blocks, (bh, bw)) in enumerate(zip(planes, header.block_grids())):
        if blocks.shape != (bh, bw, 8, 8):
            raise KdecodeError(name, f"reader returned blocks {blocks.shape} for component {i}, "
                               f"expected {(bh, bw, 8, 8)}")
    if qtables.shape != (len(planes), 8, 8) or np.count_nonzero(qtables) != qtables.size:  # cheaper than all()
        i = next((i for i, q in enumerate(qtables) if not q.all()), 0)
        raise CorruptJpegError(name, f"component {i} has no valid quantization table")


__all__ = ["read_coefficients", "read_coefficients_batch", "read_coefficients_from_bytes", "read_and_decode", "settings",
           "Settings", "backend_info", "set_backend"]
