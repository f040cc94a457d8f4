"""Fused block ops: one call for every component of a batch, a CUDA kernel on GPUs.

Each op runs the matching ``csrc/`` kernel when :func:`kdecode.ops.dispatch.use_kernels` says
so, and otherwise its torch reference, built from the reference ops of this package (which the
kernels are tested against). Float paths are differentiable either way.

Components: ``blocks`` (or ``planes``) is one tensor or a sequence of tensors, one per
component, with the same leading dimensions (a batch). ``qtables`` holds each component's
table: ``[C, 8, 8]`` (shared by the batch) or ``[..., C, 8, 8]`` with the leading dimensions of
the blocks (one set per image); for a single tensor, ``[8, 8]`` or ``[..., 8, 8]``.
"""
from __future__ import annotations

from typing import Sequence, Union

import torch

from . import cuda
from .blocks import blocks_to_plane, plane_to_blocks
from .color import ycbcr_to_rgb
from .dct import dct_blocks, idct_blocks, idct_islow
from .dispatch import use_kernels
from .quant import clamp_to_interval, dequantize, quantize
from .upsample import fancy_mode, upsample

Tensors = Union[torch.Tensor, Sequence[torch.Tensor]]
_FLOATS = (torch.float32, torch.float64)


def _as_list(x: Tensors) -> tuple[list[torch.Tensor], bool]:
    if isinstance(x, torch.Tensor):
        return [x], True
    items = list(x)
    if not items:
        raise ValueError("expected at least one component")
    return items, False


def _lead(items: list[torch.Tensor], trailing: int) -> tuple[int, ...]:
    """Leading (batch) dimensions shared by every component."""
    leads = {tuple(t.shape[:-trailing]) for t in items}
    if len(leads) != 1 or any(t.dim() < trailing for t in items):
        raise ValueError(f"components must share their leading dimensions, got shapes {[tuple(t.shape) for t in items]}")
    return leads.pop()


def _component_tables(qtables, n_comp: int, single: bool, lead: tuple[int, ...], device) -> torch.Tensor | None:
    """``qtables`` as ``[..., C, 8, 8]`` on ``device`` (None stays None)."""
    if qtables is None:
        return None
    q = torch.as_tensor(qtables, device=device)
    if single:
        q = q.unsqueeze(-3)
    if q.dim() < 3 or tuple(q.shape[-3:]) != (n_comp, 8, 8) or (q.dim() > 3 and len(q.shape[:-3]) != len(lead)):
        raise ValueError(f"qtables must be [{n_comp}, 8, 8] or [..., {n_comp}, 8, 8] with the blocks' leading "
                         f"dimensions {lead}, got {tuple(torch.as_tensor(qtables).shape)}")
    return q


def _reference_table(q: torch.Tensor, c: int) -> torch.Tensor:
    """Component ``c``'s table, shaped to broadcast over ``[..., bh, bw, 8, 8]``."""
    qc = q[..., c, :, :]
    return qc if qc.dim() == 2 else qc[..., None, None, :, :]


def _kernel_tables(q: torch.Tensor | None, lead: tuple[int, ...], dtype) -> torch.Tensor | None:
    """``[Q, C, 64]`` contiguous, Q = 1 (shared) or N = prod(lead) (one set per image)."""
    if q is None:
        return None
    if q.dim() == 3:
        return q.to(dtype).reshape(1, q.shape[0], 64).contiguous()
    return q.to(dtype).expand(*lead, *q.shape[-3:]).reshape(-1, q.shape[-3], 64).contiguous()


def _flat(t: torch.Tensor, trailing: int) -> torch.Tensor:
    """``[..., *trailing dims]`` -> contiguous ``[N, *trailing dims]``, 16-byte aligned (the
    kernels read and write block rows with 16-byte accesses)."""
    t = t.reshape(-1, *t.shape[t.dim() - trailing:]).contiguous()
    return t.clone() if t.data_ptr() % 16 else t


def _result(items: list[torch.Tensor], single: bool):
    return items[0] if single else items


# ---- dequantize + IDCT + level shift ------------------------------------------------------------

class _IdctFunction(torch.autograd.Function):
    """Kernel IDCT of float blocks; the adjoint of the orthonormal IDCT is the DCT, so the
    gradient is DCT(grad) (times the table when the blocks were dequantized)."""

    @staticmethod
    def forward(ctx, q, lead, *blocks):
        ctx.save_for_backward(q)
        ctx.lead = lead
        planes = cuda.idct([_flat(b, 4) for b in blocks], q, exact=False)
        return tuple(p.reshape(*lead, *p.shape[1:]) for p in planes)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *grads):
        (q,) = ctx.saved_tensors
        grads = cuda.dct([_flat(g, 2) for g in grads], None, offset=0.0)
        if q is not None:
            grads = [g * q[:, c].view(q.shape[0], 1, 1, 8, 8) for c, g in enumerate(grads)]
        return (None, None, *(g.reshape(*ctx.lead, *g.shape[1:]) for g in grads))


def blocks_to_planes(blocks: Tensors, qtables=None, *, exact: bool = False):
    """Dequantize, inverse-DCT and level-shift the blocks ``[..., bh, bw, 8, 8]`` of every
    component into sample planes ``[..., bh*8, bw*8]`` (not cropped to the image size).

    ``exact=True``: libjpeg's integer islow IDCT on integer blocks and tables, uint8 planes
    bit-identical to libjpeg-turbo (what the exact decode uses). ``exact=False``: the
    orthonormal float IDCT of ``blocks * qtables`` plus 128, unclamped (float32 for integer
    blocks, else the blocks' float dtype); ``qtables=None`` means already dequantized.
    Differentiable with respect to float blocks.
    """
    items, single = _as_list(blocks)
    lead = _lead(items, 4)
    q = _component_tables(qtables, len(items), single, lead, items[0].device)
    if exact and (q is None or items[0].is_floating_point()):
        raise ValueError("exact=True needs integer blocks and their quantization tables")
    dtypes = {t.dtype for t in items}
    float_in = items[0].is_floating_point()
    supported = (len(items) <= cuda.MAX_COMPONENTS and len(dtypes) == 1
                 and (dtypes <= set(_FLOATS) if float_in else True))
    if use_kernels(*items, *([q] if q is not None else []), supported=supported):
        if exact:
            planes = cuda.idct([_flat(b.to(torch.int16), 4) for b in items],
                               _kernel_tables(q, lead, torch.int32), exact=True)
        elif not float_in:
            planes = cuda.idct([_flat(b.to(torch.int16), 4) for b in items],
                               _kernel_tables(q, lead, torch.float32), exact=False)
        else:
            planes = _IdctFunction.apply(_kernel_tables(q, lead, items[0].dtype), lead, *items)
            return _result(list(planes), single)
        return _result([p.reshape(*lead, *p.shape[1:]) for p in planes], single)
    out = []
    for c, b in enumerate(items):
        if exact:
            out.append(blocks_to_plane(idct_islow(b, _reference_table(q, c))))
            continue
        x = b if float_in else b.to(torch.float32)
        if q is not None:
            x = dequantize(x, _reference_table(q, c), dtype=x.dtype)
        out.append(blocks_to_plane(idct_blocks(x)) + 128.0)
    return _result(out, single)


# ---- level shift + forward DCT (+ quantization) -----------------------------------------------

class _DctFunction(torch.autograd.Function):
    """Kernel DCT of float planes; its gradient is the IDCT (without level shift)."""

    @staticmethod
    def forward(ctx, lead, *planes):
        ctx.lead = lead
        blocks = cuda.dct([_flat(p, 2) for p in planes], None)
        return tuple(b.reshape(*lead, *b.shape[1:]) for b in blocks)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *grads):
        planes = cuda.idct([_flat(g, 4) for g in grads], None, exact=False, offset=0.0)
        return (None, *(p.reshape(*ctx.lead, *p.shape[1:]) for p in planes))


def planes_to_blocks(planes: Tensors, qtables=None):
    """Level-shift (-128) and forward-DCT float sample planes ``[..., H, W]`` (H, W multiples
    of 8; pad with :func:`pad_to_blocks`) into blocks ``[..., H/8, W/8, 8, 8]``.

    With ``qtables``: quantized int16 blocks, rounded half away from zero like libjpeg's
    encoder (:func:`quantize`). Without: float blocks, differentiable.
    """
    items, single = _as_list(planes)
    lead = _lead(items, 2)
    for p in items:
        if not p.is_floating_point() or p.shape[-1] % 8 or p.shape[-2] % 8:
            raise ValueError(f"planes must be float with sizes that are multiples of 8, got {p.dtype} "
                             f"{tuple(p.shape)}")
    q = _component_tables(qtables, len(items), single, lead, items[0].device)
    dtypes = {t.dtype for t in items}
    supported = (len(items) <= cuda.MAX_COMPONENTS and len(dtypes) == 1 and dtypes <= set(_FLOATS)
                 and (q is None or dtypes == {torch.float32}))
    if use_kernels(*items, *([q] if q is not None else []), supported=supported):
        if q is not None:
            blocks = cuda.dct([_flat(p, 2) for p in items], _kernel_tables(q, lead, torch.float32))
            return _result([b.reshape(*lead, *b.shape[1:]) for b in blocks], single)
        return _result(list(_DctFunction.apply(lead, *items)), single)
    out = []
    for c, p in enumerate(items):
        coefficients = dct_blocks(plane_to_blocks(p - 128.0))
        out.append(coefficients if q is None else quantize(coefficients, _reference_table(q, c)))
    return _result(out, single)


# ---- box constraint ------------------------------------------------------------------------------

class _ClampFunction(torch.autograd.Function):
    """Kernel clamp into the quantization interval; gradient: the clamp's own (1 inside the
    interval, bounds included, 0 outside), the same as the reference's torch.clamp."""

    @staticmethod
    def forward(ctx, q, lead, n_comp, *tensors):
        x = [_flat(t, 4) for t in tensors[:n_comp]]
        k = [_flat(t, 4) for t in tensors[n_comp:]]
        ctx.save_for_backward(q, *x, *k)
        ctx.lead, ctx.n_comp = lead, n_comp
        return tuple(o.reshape(*lead, *o.shape[1:]) for o in cuda.clamp(x, k, q))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *grads):
        q, *saved = ctx.saved_tensors
        x, k = saved[:ctx.n_comp], saved[ctx.n_comp:]
        out = cuda.clamp(x, k, q, grad=[_flat(g, 4) for g in grads])
        return (None, None, None, *(g.reshape(*ctx.lead, *g.shape[1:]) for g in out), *[None] * ctx.n_comp)


def clamp_blocks(coefficients: Tensors, quantized: Tensors, qtables):
    """Clamp float coefficient blocks ``[..., bh, bw, 8, 8]`` (dequantized scale) of every
    component into the interval each was quantized from, ``[(c - 1/2) q, (c + 1/2) q]``, with
    ``c`` the integer ``quantized`` blocks and ``q`` each component's real table.

    Gradient with respect to ``coefficients``: 1 inside the interval (bounds included), 0
    outside, i.e. the clamp's own gradient; none for ``quantized`` and ``qtables``.
    """
    x, single = _as_list(coefficients)
    k, _ = _as_list(quantized)
    if len(k) != len(x) or any(a.shape != b.shape for a, b in zip(x, k)):
        raise ValueError("coefficients and quantized must have one tensor per component, of the same shapes")
    lead = _lead(x, 4)
    q = _component_tables(qtables, len(x), single, lead, x[0].device)
    dtypes = {t.dtype for t in x}
    supported = len(x) <= cuda.MAX_COMPONENTS and len(dtypes) == 1 and dtypes <= set(_FLOATS)
    if use_kernels(*x, *k, q, supported=supported):
        out = _ClampFunction.apply(_kernel_tables(q, lead, x[0].dtype), lead, len(x), *x,
                                   *(t.to(torch.int16) for t in k))
        return _result(list(out), single)
    return _result([clamp_to_interval(xc, kc, _reference_table(q, c)) for c, (xc, kc) in enumerate(zip(x, k))],
                   single)


def clamp_planes(planes: Tensors, quantized: Tensors, qtables):
    """Float sample planes ``[..., 8 bh, 8 bw]`` (0..255 scale) made consistent with a file's
    blocks: each 8x8 block's DCT coefficients clamped into the interval its integer coefficient
    in ``quantized`` was quantized from (:func:`clamp_blocks`), then back to samples.

    The DCT is orthonormal and the intervals are a box, so this is the Euclidean projection of
    the planes onto the set of planes the file's blocks could have been coded from: it moves
    them closer to every plane in that set (the original's, up to libjpeg's integer forward
    DCT, which decides which interval a coefficient falls in). A restoring model's output sits
    outside it in a few coefficients; the projection brings those back (docs/dual_domain.md).
    """
    return blocks_to_planes(clamp_blocks(planes_to_blocks(planes), quantized, qtables))


# ---- chroma upsampling + colour conversion -------------------------------------------------------

def upsample_to_rgb(planes: Sequence[torch.Tensor], factors: Sequence[tuple[int, int]], size: tuple[int, int],
                    convert: bool = True) -> torch.Tensor:
    """Upsample each component plane ``[..., h, w]`` (its real size, e.g. a crop of the
    block-padded plane) by its ``(h_factor, v_factor)``, crop to ``size = (H, W)``, stack to
    ``[..., C, H, W]`` and, if ``convert``, convert YCbCr to RGB.

    uint8 planes: libjpeg-turbo's fancy upsampling and fixed-point colour, bit-exact. Float
    planes: the same filters and the real-valued matrix, unrounded and unclamped (the kernel
    runs only when no gradient is needed; otherwise the differentiable reference does).
    """
    items = list(planes)
    if len(factors) != len(items):
        raise ValueError(f"one (h_factor, v_factor) per plane: {len(items)} planes, {len(factors)} factors")
    if convert and len(items) != 3:
        raise ValueError(f"YCbCr->RGB needs 3 components, got {len(items)}")
    height, width = size
    for p, (hf, vf) in zip(items, factors):
        if p.shape[-2] * vf < height or p.shape[-1] * hf < width:
            raise ValueError(f"plane {tuple(p.shape)} upsampled by {hf}x{vf} does not cover {height}x{width}")
    lead = _lead(items, 2)
    dtypes = {p.dtype for p in items}
    supported = (len(items) in (1, 3) and len(dtypes) == 1 and dtypes <= {torch.uint8, torch.float32}
                 and not (torch.is_grad_enabled() and any(p.requires_grad for p in items))
                 and all(p.stride(-1) == 1 for p in items))
    if use_kernels(*items, supported=supported):
        flat = [p.reshape(-1, *p.shape[-2:]) if p.dim() != 3 else p for p in items]
        modes = [fancy_mode(hf, vf, p.shape[-1]) for p, (hf, vf) in zip(items, factors)]
        out = cuda.upsample_color(flat, list(factors), modes, (height, width), convert)
        return out.reshape(*lead, *out.shape[1:])
    full = [upsample(p, hf, vf)[..., :height, :width] for p, (hf, vf) in zip(items, factors)]
    image = torch.stack(full, dim=-3)
    return ycbcr_to_rgb(image, dim=-3) if convert else image
