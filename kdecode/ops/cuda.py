"""Running the CUDA kernels of ``csrc/``: NVRTC compilation through CuPy, launches, arguments.

Sources are compiled at run time (``cupy.RawModule``), once per device, and cached on disk by
CuPy. Tensors go to CuPy through DLPack (no copies) and kernels run on torch's current stream,
so they order with the surrounding torch work without synchronizing. CuPy is optional: this
module imports it only when a kernel first runs on a GPU.

The functions below take tensors already checked and shaped by :mod:`kdecode.ops.fused`
(contiguous, one device, leading dimensions flattened to ``N``) and allocate their outputs.
``HOST_BACKEND`` lets the tests run the same kernel sources on the CPU (built as host C++).
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import torch

THREADS_PER_BLOCK = 256
MAX_GRID = 2**31 - 1  # kernels loop with a grid stride past this
MAX_COMPONENTS = 4  # one launch handles up to 4 components (dct.cu, quant.cu)
NULL = np.uint64(0)  # a null pointer argument
HOST_BACKEND = None  # tests: an object with launch(source, name, threads, args, device)


def csrc_dir() -> Path:
    """The folder of the ``.cu`` sources (the repository's ``csrc/``)."""
    here = Path(__file__).resolve()
    for candidate in (here.parents[2] / "csrc", here.parents[1] / "csrc"):
        if (candidate / "dct.cu").is_file():
            return candidate
    raise FileNotFoundError(f"kdecode's CUDA sources (csrc/*.cu) were not found near {here.parents[1]}; "
                            "use a source checkout, or set KDECODE_FORCE_TORCH=1")


def source_text(name: str) -> str:
    """``csrc/name`` with its local ``#include "..."`` files inlined, so that NVRTC needs no
    include path and CuPy's cache (keyed on the text) sees changes to included files."""
    seen: set[str] = set()

    def expand(filename: str) -> str:
        if filename in seen:
            return ""
        seen.add(filename)
        text = (csrc_dir() / filename).read_text()
        return re.sub(r'^#include "([^"]+)"\s*$', lambda m: expand(m.group(1)), text, flags=re.M)

    return expand(name)


class CupyBackend:
    """Compiles each source once per device with NVRTC and launches on torch's current stream."""

    def __init__(self):
        import cupy

        self.cupy = cupy
        self._modules: dict = {}
        self._functions: dict = {}
        self._streams: dict = {}

    def function(self, source: str, name: str, index: int):
        key = (source, name, index)
        if key not in self._functions:
            cp = self.cupy
            with cp.cuda.Device(index):
                module = self._modules.get((source, index))
                if module is None:
                    module = cp.RawModule(code=source_text(source), options=("--std=c++17",))
                    self._modules[(source, index)] = module
                try:
                    self._functions[key] = module.get_function(name)
                except cp.cuda.compiler.CompileException as exc:
                    raise RuntimeError(f"NVRTC could not compile csrc/{source}: {exc}") from exc
        return self._functions[key]

    def stream(self, index: int):
        """CuPy's handle of torch's current stream on device ``index`` (made once per stream)."""
        ptr = torch.cuda.current_stream(index).cuda_stream
        if (index, ptr) not in self._streams:
            with warnings.catch_warnings():
                # CuPy 14 deprecates ExternalStream for Stream.from_external; every CuPy from
                # 10 on has ExternalStream, so it serves cupy-cuda12x and cupy-cuda13x alike.
                warnings.filterwarnings("ignore", "ExternalStream is deprecated", DeprecationWarning)
                self._streams[(index, ptr)] = self.cupy.cuda.ExternalStream(ptr, index)
        return self._streams[(index, ptr)]

    def launch(self, source: str, name: str, threads: int, args: list, device: torch.device) -> None:
        index = device.index if device.index is not None else torch.cuda.current_device()
        kernel = self.function(source, name, index)
        cp = self.cupy
        # One thread per work item: on an H100 a full grid beat a capped grid-stride one by
        # 0-12% (benchmarks/KERNELS.md).
        blocks = max(1, min(-(-threads // THREADS_PER_BLOCK), MAX_GRID))
        with cp.cuda.Device(index):
            with self.stream(index):
                arrays = {}  # one DLPack view per tensor (unused component slots repeat one)
                for a in args:
                    if isinstance(a, torch.Tensor) and id(a) not in arrays:
                        arrays[id(a)] = cp.from_dlpack(a.detach())
                kernel((blocks,), (THREADS_PER_BLOCK,),
                       tuple(arrays[id(a)] if isinstance(a, torch.Tensor) else a for a in args))


_cupy_backend: CupyBackend | None = None


def _launch(source: str, name: str, threads: int, args: list, device: torch.device) -> None:
    global _cupy_backend
    if threads <= 0:
        return
    if device.type == "cuda":
        if _cupy_backend is None:
            _cupy_backend = CupyBackend()
        backend = _cupy_backend
    elif HOST_BACKEND is not None:
        backend = HOST_BACKEND
    else:
        raise RuntimeError(f"CUDA kernels cannot run on {device}")
    backend.launch(source, name, threads, args, device)


def _component_args(inputs: list, outputs: list, grids: list[tuple[int, int, int]]) -> tuple[list, int]:
    """Pointers and extents of up to 4 components (``grids``: (N, bh, bw) each); unused slots
    repeat component 0 with empty block ranges. Returns (args, total number of blocks)."""
    if not 1 <= len(inputs) <= MAX_COMPONENTS:
        raise ValueError(f"kernels take 1 to {MAX_COMPONENTS} components, got {len(inputs)}")
    pad = MAX_COMPONENTS - len(inputs)
    grids = list(grids) + [(0, 1, 1)] * pad
    ends = np.cumsum([n * bh * bw for n, bh, bw in grids]).astype(np.int64)
    args = ([*inputs, *[inputs[0]] * pad] + [*outputs, *[outputs[0]] * pad]
            + [np.int32(g[1]) for g in grids] + [np.int32(g[2]) for g in grids] + list(ends))
    return args, int(ends[-1])


def _tables(qtables: torch.Tensor | None, n_comp: int) -> list:
    """(pointer, per-image stride) of ``[Q, C, 64]`` tables (Q = 1: shared by all images)."""
    if qtables is None:
        return [NULL, np.int64(0)]
    return [qtables, np.int64(n_comp * 64 if qtables.shape[0] > 1 else 0)]


_SUFFIX = {torch.int16: "s16", torch.float32: "f32", torch.float64: "f64"}


def idct(blocks: list[torch.Tensor], qtables: torch.Tensor | None, exact: bool, offset: float = 128.0) -> list:
    """Blocks ``[N, bh, bw, 8, 8]`` of each component -> planes ``[N, bh*8, bw*8]``.

    ``exact``: libjpeg islow on int16 blocks with int32 ``[Q, C, 64]`` tables -> uint8.
    Otherwise the orthonormal IDCT of ``blocks * qtables`` (tables None: no dequantization)
    plus ``offset``, in float32 (int16 or float32 blocks) or float64; tables in that dtype."""
    device = blocks[0].device
    if exact:
        out_dtype, name = torch.uint8, "idct_islow_s16_u8"
    else:
        out_dtype = torch.float64 if blocks[0].dtype == torch.float64 else torch.float32
        name = f"idct_{_SUFFIX[blocks[0].dtype]}_{_SUFFIX[out_dtype]}"
    grids = [tuple(b.shape[:3]) for b in blocks]
    planes = [torch.empty(n, bh * 8, bw * 8, dtype=out_dtype, device=device) for n, bh, bw in grids]
    args, total = _component_args(blocks, planes, grids)
    args += _tables(qtables, len(blocks))
    if not exact:
        args.append(np.float64(offset) if out_dtype == torch.float64 else np.float32(offset))
    _launch("dct.cu", name, total, args, device)
    return planes


def dct(planes: list[torch.Tensor], qtables: torch.Tensor | None, offset: float = 128.0) -> list:
    """Planes ``[N, H, W]`` (multiples of 8) -> orthonormal DCT of ``plane - offset`` as blocks
    ``[N, H/8, W/8, 8, 8]`` (same float dtype); with float32 tables: quantized int16."""
    device = planes[0].device
    grids = [(p.shape[0], p.shape[1] // 8, p.shape[2] // 8) for p in planes]
    dtype = torch.int16 if qtables is not None else planes[0].dtype
    blocks = [torch.empty(n, bh, bw, 8, 8, dtype=dtype, device=device) for n, bh, bw in grids]
    args, total = _component_args(planes, blocks, grids)
    if qtables is not None:
        name = "dct_quantize_f32_s16"
        args += _tables(qtables, len(planes)) + [np.float32(offset)]
    else:
        name = f"dct_{_SUFFIX[dtype]}_{_SUFFIX[dtype]}"
        args.append(np.float64(offset) if dtype == torch.float64 else np.float32(offset))
    _launch("dct.cu", name, total, args, device)
    return blocks


def clamp(x: list[torch.Tensor], quantized: list[torch.Tensor], qtables: torch.Tensor,
          grad: list[torch.Tensor] | None = None) -> list:
    """Clamp float blocks ``x`` into ``[(c - 1/2) q, (c + 1/2) q]`` (``quantized``: int16 c,
    ``qtables``: ``[Q, C, 64]`` in x's dtype). With ``grad``: the backward instead (``grad``
    where x is inside its interval, 0 elsewhere)."""
    device = x[0].device
    out = [torch.empty_like(t) for t in x]
    grids = [tuple(t.shape[:3]) for t in x]
    args, total = _component_args(x, out, grids)
    pad = [quantized[0]] * (MAX_COMPONENTS - len(x))
    args += [*quantized, *pad] + _tables(qtables, len(x))
    name = f"clamp_{_SUFFIX[x[0].dtype]}"
    if grad is not None:
        name = f"clamp_backward_{_SUFFIX[x[0].dtype]}"
        args += [*grad, *[grad[0]] * (MAX_COMPONENTS - len(x))]
    _launch("quant.cu", name, total * 8, args, device)
    return out


def upsample_color(planes: list[torch.Tensor], factors: list[tuple[int, int]], modes: list[int],
                   size: tuple[int, int], convert: bool) -> torch.Tensor:
    """Planes ``[N, h, w]`` (rows may be strided, e.g. crops of block-padded planes; last
    stride 1) of 1 or 3 components -> ``[N, C, H, W]`` upsampled by ``factors`` ((h, v) each)
    with the filters ``modes`` (see ``upsample.fancy_mode``), YCbCr->RGB if ``convert``."""
    device, dtype = planes[0].device, planes[0].dtype
    n, (height, width) = planes[0].shape[0], size
    out = torch.empty(n, len(planes), height, width, dtype=dtype, device=device)
    args = []
    for i in range(3):
        c = min(i, len(planes) - 1)  # unused slots repeat the last component
        p, (hf, vf) = planes[c], factors[c]
        args += [p, np.int64(p.stride(0)), np.int32(p.stride(1)), np.int32(p.shape[1]), np.int32(p.shape[2]),
                 np.int32(hf), np.int32(vf), np.int32(modes[c])]
    vector = width % 4 == 0 and out.data_ptr() % 16 == 0
    args += [out, np.int32(n), np.int32(len(planes)), np.int32(height), np.int32(width), np.int32(convert),
             np.int32(vector)]
    name = "upsample_color_u8" if dtype == torch.uint8 else "upsample_color_f32"
    _launch("color.cu", name, n * height * (-(-width // 4)), args, device)
    return out


# ---- a ragged batch (images of any sizes in one launch) ------------------------------------------

#: int64 fields per image of ``upsample_color_blocks`` (csrc/color.cu: KD_IMAGE_FIELDS): item end,
#: output offset, height, width, components, convert, vector; then per component slot (3) block
#: offset, blocks per row, real height, real width, h factor, v factor, mode.
RAGGED_FIELDS = 28


def idct_islow_ragged(blocks: torch.Tensor, seg_end: torch.Tensor, tables: torch.Tensor) -> torch.Tensor:
    """libjpeg islow on int16 blocks ``[B, 8, 8]`` of many components of many images: segment s
    (int64 ``seg_end``, inclusive prefix of block counts) uses int32 table ``tables[s]``
    (``[S, 64]``). Returns uint8 samples ``[B, 8, 8]``, block by block."""
    out = torch.empty(blocks.shape, dtype=torch.uint8, device=blocks.device)
    total = blocks.shape[0]
    _launch("dct.cu", "idct_islow_ragged_s16_u8", total, [blocks, out, seg_end, np.int32(seg_end.shape[0]), tables],
            blocks.device)
    return out


def upsample_color_blocks(samples: torch.Tensor, desc: torch.Tensor, items: int, out_size: int) -> torch.Tensor:
    """Upsampling and colour of a ragged batch: ``samples`` uint8 ``[B, 8, 8]`` (from
    :func:`idct_islow_ragged`), ``desc`` int64 ``[N, RAGGED_FIELDS]`` (``items``: the last
    image's item end). Returns the flat uint8 output of ``out_size`` elements, each image's
    ``[C, H, W]`` at its offset."""
    out = torch.empty(out_size, dtype=torch.uint8, device=samples.device)
    _launch("color.cu", "upsample_color_blocks_u8", items, [samples, desc, np.int32(desc.shape[0]), out],
            samples.device)
    return out
