"""From :class:`JpegCoefficients` to pixels: the stages every decoder shares.

``component_planes`` turns each component's blocks into its sample plane (exact islow IDCT or
float IDCT), cropped to the component's real size; ``assemble`` upsamples chroma and converts
colour. The exact decode is these two with integer arithmetic; a restoring model replaces
(some of) the planes between them.
"""
from __future__ import annotations

import numpy as np
import torch

from .jpeg.coefficients import JpegCoefficients
from .ops import adobe_cmyk, blocks_to_planes, cuda, exact_cpu, upsample_to_rgb
from .ops.dispatch import why_not_kernels_on
from .ops.upsample import plane_geometry


def component_blocks(coeffs: JpegCoefficients, index: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(int16 blocks ``[bh, bw, 8, 8]``, int32 qtable ``[8, 8]``) of one component on ``device``."""
    comp = coeffs.components[index]
    blocks = torch.from_numpy(comp.blocks)
    qtable = torch.from_numpy(comp.qtable.astype("int32"))
    if device is not None and torch.device(device).type == "cuda":
        # Through pinned memory, the copy runs asynchronously on the current stream: the CPU
        # goes on (reading the next file in decode_batch) while the GPU copies and computes.
        return (blocks.pin_memory().to(device, non_blocking=True),
                qtable.pin_memory().to(device, non_blocking=True))
    return blocks.to(device), qtable.to(device)


def component_plane(coeffs: JpegCoefficients, index: int, device=None, exact: bool = True) -> torch.Tensor:
    """Sample plane ``[comp_h, comp_w]`` of one component: uint8 (exact islow) or float32
    (orthonormal float IDCT, level-shifted, unclamped; what pixel-domain models see)."""
    blocks, qtable = component_blocks(coeffs, index, device)
    plane = blocks_to_planes(blocks, qtable, exact=exact)
    ch, cw = coeffs.component_size(index)
    return plane[:ch, :cw]


def assemble(coeffs: JpegCoefficients, planes: list[torch.Tensor]) -> torch.Tensor:
    """Upsample chroma to full size and convert to RGB (or keep gray; 4-component files to
    Pillow's CMYK): uint8 ``[C, H, W]``.

    ``planes`` are uint8 component planes at their real sizes (see ``component_plane``)."""
    factors = [(coeffs.max_h_samp // c.h_samp, coeffs.max_v_samp // c.v_samp) for c in coeffs.components]
    space = coeffs.color_space
    image = upsample_to_rgb(planes, factors, (coeffs.height, coeffs.width), convert=space == "ycbcr")
    return adobe_cmyk(image, space) if space in ("cmyk", "ycck") else image


def to_samples(plane: torch.Tensor) -> torch.Tensor:
    """A float plane on the 0..1 scale -> uint8 samples (rounded, clamped)."""
    return (plane * 255.0).round_().clamp_(0, 255).to(torch.uint8)


def decode_restoring_luma(coeffs: JpegCoefficients, restore_luma, device=None) -> torch.Tensor:
    """The exact decode with the luma plane replaced by ``restore_luma(coeffs, device)`` (uint8
    ``[comp_h, comp_w]``): uint8 ``[C, H, W]``. Luma is component 0 of gray and YCbCr files;
    other colour spaces (RGB, CMYK JPEGs) have no luma and are decoded exactly, whole."""
    restore = coeffs.color_space in ("gray", "ycbcr")
    planes = [None if i == 0 and restore else component_plane(coeffs, i, device)
              for i in range(len(coeffs.components))]
    if restore:
        planes[0] = restore_luma(coeffs, device)
    return assemble(coeffs, planes)


def decode_exact(coeffs: JpegCoefficients, device=None) -> torch.Tensor:
    """Bit-exact libjpeg-turbo decode (what Pillow returns): uint8 ``[C, H, W]``, C = 1, 3 or 4
    (gray, RGB, CMYK).

    On CPU the C fast path (:mod:`kdecode.ops.exact_cpu`) runs when it is built; on a GPU the
    CUDA kernels; both compute exactly what the torch reference ops compute."""
    if exact_cpu.usable(device):
        return exact_cpu.decode_exact(coeffs)
    indices = range(len(coeffs.components))
    blocks, qtables = zip(*(component_blocks(coeffs, i, device) for i in indices))
    planes = blocks_to_planes(list(blocks), torch.stack(qtables), exact=True)  # one launch on a GPU
    sizes = [coeffs.component_size(i) for i in indices]
    return assemble(coeffs, [p[:h, :w] for p, (h, w) in zip(planes, sizes)])


def _geometry(coeffs: JpegCoefficients) -> tuple:
    """What images must share to be decoded as one batch: size, colour space and, per
    component, sampling and block grid."""
    return (coeffs.height, coeffs.width, coeffs.color_space,
            tuple((c.h_samp, c.v_samp, *c.blocks.shape[:2]) for c in coeffs.components))


def decode_exact_many(coeffs: list[JpegCoefficients], device=None, placed: tuple | None = None) -> list[torch.Tensor]:
    """:func:`decode_exact` of many images. Where the kernels run, the gray and 3-component
    images go as one ragged batch, whatever their sizes and samplings (:func:`_decode_ragged`:
    two launches), up to :data:`MAX_BATCH_SAMPLES` a batch; the others (CMYK, and everything on
    the torch reference) as batches of one geometry each, one launch of each kernel a batch.
    Results in input order, each a view of its batch.

    ``placed``: the images' blocks already on ``device``, read from there instead of uploaded
    from their arrays: (int16 ``[N, bh, bw, 8, 8]`` per component, each image's grid at the top
    left of its row, zero padding after it; int32 ``[N, C, 8, 8]`` tables), image n of ``coeffs``
    in row n (a :class:`~kdecode.data.CoefficientBatch` moved there; one colour space and
    sampling)."""
    if device is None or why_not_kernels_on(device):
        return _decode_groups(coeffs, None, device, placed)
    if placed is not None:  # already on the device, one layout: no budget to split it by
        ragged = len(placed[0]) in (1, 3)
        return _decode_ragged(coeffs, device, placed) if ragged else _decode_groups(coeffs, None, device, placed)
    out: list = [None] * len(coeffs)
    ragged = [i for i, c in enumerate(coeffs) if len(c.components) in (1, 3)]
    for batch in _within_budget(ragged, coeffs, MAX_BATCH_SAMPLES["exact"]):
        for i, image in zip(batch, _decode_ragged([coeffs[i] for i in batch], device)):
            out[i] = image
    rest = [i for i, c in enumerate(coeffs) if len(c.components) not in (1, 3)]
    for i, image in zip(rest, _decode_groups([coeffs[i] for i in rest], None, device)):
        out[i] = image
    return out


def _within_budget(indices: list[int], coeffs: list[JpegCoefficients], budget: int):
    """``indices`` cut, in order, into runs of at most ``budget`` samples (an image larger
    than that alone)."""
    batch, samples = [], 0
    for i in indices:
        size = coeffs[i].height * coeffs[i].width
        if batch and samples + size > budget:
            yield batch
            batch, samples = [], 0
        batch.append(i)
        samples += size
    if batch:
        yield batch


def _decode_ragged(coeffs: list[JpegCoefficients], device, placed: tuple | None = None) -> list[torch.Tensor]:
    """The exact decode of gray and 3-component images of any sizes in one go on the kernels:
    every block of every component in one device buffer, one islow launch over all of them (a
    table per component segment), one upsampling+colour launch that finds each image's samples
    from a descriptor (csrc/color.cu). With images of as many sizes as images (LIVE1), batches
    of one geometry cost a dozen launches and copies an image.

    The blocks come from each image's arrays (copied from the pinned memory decode_iter reads
    into, without a staging copy), or, with ``placed`` = (blocks, tables), from a
    :class:`~kdecode.data.CoefficientBatch` already on ``device``: one int16 ``[N, bh, bw, 8, 8]``
    tensor per component, image n's grid at the top left of its slice (the padding blocks go
    through the IDCT and are never read), and its int32 ``[N, C, 8, 8]`` tables."""
    device = torch.device(device)
    if placed is None:  # image by image, each image's components in turn
        extents = [[c.blocks.shape[:2] for c in k.components] for k in coeffs]
        order = [(n, j) for n, k in enumerate(coeffs) for j in range(len(k.components))]
    else:  # component by component, as the batch holds them
        extents = [[b.shape[1:3] for b in placed[0]]] * len(coeffs)
        order = [(n, j) for j in range(len(placed[0])) for n in range(len(coeffs))]
    start, seg_end, offset = {}, [], 0
    for n, j in order:
        start[n, j] = offset
        offset += extents[n][j][0] * extents[n][j][1]
        seg_end.append(offset)
    if placed is None:
        blocks = torch.empty((offset, 8, 8), dtype=torch.int16, device=device)
        for n, j in order:
            grid = coeffs[n].components[j].blocks
            # non_blocking: from pinned memory the copy is queued and this thread goes on.
            blocks[start[n, j]:start[n, j] + grid.shape[0] * grid.shape[1]].copy_(
                torch.from_numpy(grid.reshape(-1, 8, 8)), non_blocking=True)
        tables = torch.from_numpy(np.array([coeffs[n].components[j].qtable.reshape(64) for n, j in order], np.int32))
    else:
        grids, batch_tables = placed
        blocks = torch.cat([b.reshape(-1, 8, 8) for b in grids]) if len(grids) > 1 else grids[0].reshape(-1, 8, 8)
        tables = batch_tables.transpose(0, 1).reshape(-1, 64)  # component-major, as `order`
    desc, views = [], []
    items = out_size = 0
    for n, k in enumerate(coeffs):
        n_comp, height, width = len(k.components), k.height, k.width
        comps = []
        for j, geometry in enumerate(plane_geometry(height, width, [(c.h_samp, c.v_samp) for c in k.components])):
            comps += [start[n, j], extents[n][j][1], *geometry]
        items += height * (-(-width // 4))
        desc.append([items, out_size, height, width, n_comp, k.color_space == "ycbcr", width % 4 == 0]
                    + comps + [0] * (7 * (3 - n_comp)))
        views.append((out_size, (n_comp, height, width)))
        out_size += -(-n_comp * height * width // 16) * 16  # each image 16-byte aligned: vector stores
    n_seg = len(seg_end)
    meta = torch.from_numpy(np.array(seg_end + [v for row in desc for v in row], np.int64))
    if device.type == "cuda":
        meta = meta.pin_memory()
        tables = tables.pin_memory() if tables.device.type == "cpu" else tables
    tables, meta = tables.to(device, non_blocking=True), meta.to(device, non_blocking=True)
    samples = cuda.idct_islow_ragged(blocks, meta[:n_seg], tables)
    out = cuda.upsample_color_blocks(samples, meta[n_seg:].view(len(coeffs), cuda.RAGGED_FIELDS), items, out_size)
    return [out[o:o + c * h * w].view(c, h, w) for o, (c, h, w) in views]


def decode_restoring_luma_many(coeffs: list[JpegCoefficients], restore_luma, device=None,
                               placed: tuple | None = None) -> list[torch.Tensor]:
    """:func:`decode_restoring_luma` of many images, batched like :func:`decode_exact_many`:
    ``restore_luma(blocks, qtables, size)`` gets the luma blocks of a batch of one geometry
    (int16 ``[N, bh, bw, 8, 8]``), their tables (``[N, 8, 8]``) and the plane's real size
    ``(comp_h, comp_w)``, and returns the uint8 restored planes ``[N, comp_h, comp_w]``.
    ``placed``: the blocks already on ``device`` (see :func:`decode_exact_many`)."""
    return _decode_groups(coeffs, restore_luma, device, placed)


#: Image samples (height x width, summed over a batch) decoded in one go: a batch of more is
#: split. A restoring model's activations take up to about 1 KB a sample (DCSC, measured: 8.5 GB
#: for one 3840x2160 image), the exact decode about 8 bytes; so at most ~16 GB and ~1 GB.
MAX_BATCH_SAMPLES = {"restore": 1 << 24, "exact": 1 << 27}


def _decode_groups(coeffs: list[JpegCoefficients], restore_luma, device, placed: tuple | None = None) -> list[torch.Tensor]:
    groups: dict[tuple, list[int]] = {}
    for i, c in enumerate(coeffs):
        groups.setdefault(_geometry(c), []).append(i)
    out: list = [None] * len(coeffs)
    budget = MAX_BATCH_SAMPLES["exact" if restore_luma is None else "restore"]
    for same in groups.values():
        first = coeffs[same[0]]
        per_batch = max(1, budget // (first.height * first.width))
        for start in range(0, len(same), per_batch):
            indices = same[start:start + per_batch]
            blocks, tables = (_stacked_blocks([coeffs[i] for i in indices], device) if placed is None
                              else _placed_rows(placed, indices, first))
            images = _decode_batch(first, blocks, tables, restore_luma)
            for j, i in enumerate(indices):
                out[i] = images[j]
    return out


def _decode_batch(first: JpegCoefficients, blocks: list[torch.Tensor], tables: torch.Tensor, restore_luma) -> torch.Tensor:
    """Images of one geometry (``first``'s) decoded as one batch from their stacked blocks
    (int16 ``[N, bh, bw, 8, 8]`` per component) and tables (int32 ``[N, C, 8, 8]``): uint8
    ``[N, C, H, W]``."""
    sizes = [first.component_size(k) for k in range(len(blocks))]
    restore = restore_luma is not None and first.color_space in ("gray", "ycbcr")
    exact = blocks_to_planes(blocks[restore:], tables[:, restore:], exact=True) if len(blocks) > restore else []
    planes = [restore_luma(blocks[0], tables[:, 0], sizes[0])] if restore else []
    planes += [p[..., :h, :w] for p, (h, w) in zip(exact, sizes[restore:])]
    return assemble(first, planes)


def _placed_rows(placed: tuple, indices: list[int], first: JpegCoefficients) -> tuple[list[torch.Tensor], torch.Tensor]:
    """What :func:`_stacked_blocks` gives, cut on the device from blocks already there (rows
    ``indices`` of ``placed``, images of ``first``'s geometry: each component's own grid)."""
    blocks, tables = placed
    pick = torch.tensor(indices, device=blocks[0].device)
    grids = [c.blocks.shape[:2] for c in first.components]
    return ([b.index_select(0, pick)[:, :bh, :bw].contiguous() for b, (bh, bw) in zip(blocks, grids)],
            tables.index_select(0, pick))


def _stacked_blocks(group: list[JpegCoefficients], device) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The blocks of images of one geometry stacked per component (``[N, bh, bw, 8, 8]`` int16)
    and their tables (``[N, C, 8, 8]`` int32), on ``device`` (None: the CPU). Each image's blocks
    are copied into their place from where they were read: on a GPU without blocking when that is
    pinned memory (decode_iter reads them there), so the host copies nothing."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    blocks = []
    for k, first in enumerate(group[0].components):
        out = torch.empty((len(group), *first.blocks.shape), dtype=torch.int16, device=device)
        for n, c in enumerate(group):
            out[n].copy_(torch.from_numpy(c.components[k].blocks), non_blocking=True)
        blocks.append(out)
    tables = torch.from_numpy(np.stack([c.qtables for c in group]).astype(np.int32))
    if device.type == "cuda":
        tables = tables.pin_memory()
    return blocks, tables.to(device, non_blocking=True)
