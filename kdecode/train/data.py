"""Training data: what the decoder sees (float luma planes decoded by kdecode from Pillow
JPEGs) paired with the original luma, and a patch sampler that lives on the training device.

Luma follows the literature's convention (MATLAB ``rgb2ycbcr``: ``Y = 16 + (65.481 R +
128.553 G + 24.966 B) / 255``, rounded), the one the gray test sets (LIVE1_gray) were made with.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..jpeg.reader import read_coefficients
from ..pipeline import component_plane

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


def luma(image: Image.Image) -> np.ndarray:
    """uint8 ``[H, W]`` luma of a PIL image: gray as is, colour by MATLAB's rgb2ycbcr."""
    if image.mode in ("1", "LA", "I", "I;16", "F"):
        image = image.convert("L")
    if image.mode == "L":
        return np.asarray(image, dtype=np.uint8).copy()
    rgb = np.asarray(image.convert("RGB"), dtype=np.float64)
    y = 16.0 + (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]) / 255.0
    return np.floor(y + 0.5).astype(np.uint8)


def image_files(folder: str | Path) -> list[Path]:
    """The images of a dataset folder, sorted by name."""
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no images in {folder}")
    return files


def jpeg_bytes(y: np.ndarray, quality: int, qtable: np.ndarray | None = None) -> bytes:
    """Gray JPEG of a uint8 plane by Pillow (libjpeg-turbo, standard IJG tables), or with its
    own ``qtable`` (``[8, 8]``, natural order: what Pillow's ``qtables=`` takes)."""
    buf = io.BytesIO()
    if qtable is None:
        Image.fromarray(y, "L").save(buf, "JPEG", quality=int(quality))
    else:
        Image.fromarray(y, "L").save(buf, "JPEG", qtables=[np.asarray(qtable).reshape(-1).tolist()])
    return buf.getvalue()


def decoded_plane(y: np.ndarray, quality: int) -> np.ndarray:
    """float32 ``[H, W]``: what a pixel model sees for ``y`` compressed at ``quality``: the
    Pillow JPEG read back by kdecode, float IDCT with the file's real table (0..255 scale)."""
    coeffs = read_coefficients(jpeg_bytes(y, quality))
    return component_plane(coeffs, 0, "cpu", exact=False).numpy().astype(np.float32)


#: how far ``prepare_pairs(shifted=True)`` crops each image before compression: half a block, the
#: coding grid's phase farthest from the one every other copy meets
GRID_SHIFT = 4


def _training_luma(path: Path, scale: float, transposed: bool = False, offset: int = 0) -> np.ndarray:
    y = luma(Image.open(path))
    if (y.shape[0] > y.shape[1]) != transposed:
        # landscape, so images of one size stack into one tensor (``transposed``: portrait)
        y = np.ascontiguousarray(y.T)
    if scale != 1.0:
        h, w = y.shape
        size = (max(8, round(w * scale)), max(8, round(h * scale)))
        y = np.asarray(Image.fromarray(y, "L").resize(size, Image.BICUBIC))
    y = y[offset:, offset:]  # ``offset``: the coding grid moved against the content (a new file)
    h, w = (y.shape[0] // 8) * 8, (y.shape[1] // 8) * 8
    return np.ascontiguousarray(y[:h, :w])  # whole blocks: the JPEG grid starts at (0, 0)


def _targets_job(args):
    return _training_luma(*args)


def _inputs_job(args):
    y, quality = args
    return decoded_plane(y, quality)


def _cached(path: Path | None, compute):
    """Load a list of arrays from ``path`` (.npz) or compute and store it."""
    if path is not None and path.is_file():
        data = np.load(path)
        return [data[f"a{i}"] for i in range(len(data.files))]
    arrays = compute()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")  # one per process: runs may race
        np.savez(tmp, **{f"a{i}": a for i, a in enumerate(arrays)})
        tmp.replace(path)  # atomic: processes sharing the cache never read half a file
    return arrays


def _one_thread() -> None:
    # Each worker does small tensor ops: torch's own thread pool in every worker would
    # oversubscribe the cores many times over (measured: minutes instead of seconds).
    torch.set_num_threads(1)


def _map(fn, jobs, workers: int, desc: str, progress: bool):
    from tqdm import tqdm

    if workers > 1:
        with ProcessPoolExecutor(workers, initializer=_one_thread) as pool:
            return list(tqdm(pool.map(fn, jobs, chunksize=4), total=len(jobs), desc=desc, disable=not progress))
    return [fn(j) for j in tqdm(jobs, desc=desc, disable=not progress)]


def prepare_pairs(folders: list[str | Path], qualities: list[int], scales=(1.0,), workers: int = 0,
                  cache_dir: str | Path | None = None, progress: bool = True, transposed: bool = False,
                  shifted: bool = False):
    """Training pairs of every image of ``folders`` at every scale.

    Returns ``(targets, inputs)``: ``targets`` a list of uint8 ``[H, W]`` original luma planes
    (portrait images transposed, cropped to whole blocks), ``inputs[q]`` the float32 decoded
    planes at quality ``q`` in the same order. ``transposed``: every image also transposed
    before it is compressed (the portrait copies follow the landscape ones), so that a model
    reading the table sees transposed content as a real file. ``shifted``: every image (and
    transpose) also cropped by half a block, 4 pixels, at the top and left before it is
    compressed, so the same content meets the coding grid at another phase: its blocks, their
    coefficients and their artifacts are another file's, where a crop of the decoded plane can
    only move the patch, never the grid under the content. With ``cache_dir``, each quality is
    stored once as ``.npz`` there and shared by later runs (and by training processes running
    side by side)."""
    jobs = [(f, s) for s in scales for folder in folders for f in image_files(folder)]
    jobs += [(f, s, True) for f, s in jobs] if transposed else []
    # jobs stay (f, s) or (f, s, True) (transposed) as before, so the caches of runs without
    # shifts keep their keys; a shifted job is (f, s, transposed, offset)
    jobs += [(j[0], j[1], len(j) == 3, GRID_SHIFT) for j in jobs] if shifted else []
    key = hashlib.sha1(json.dumps([[str(j[0]), *j[1:]] for j in jobs]).encode()).hexdigest()[:12]
    root = Path(cache_dir) if cache_dir else None
    targets = _cached(root / f"pairs-{key}-original.npz" if root else None,
                      lambda: _map(_targets_job, jobs, workers, "luma", progress))
    inputs = {}
    for q in qualities:
        inputs[q] = _cached(root / f"pairs-{key}-q{q}.npz" if root else None,
                            lambda: _map(_inputs_job, [(t, q) for t in targets], workers, f"jpeg q{q}", progress))
    return targets, inputs


#: the patch symmetries :class:`PatchSampler` draws from, with what a model card says of them
AUGMENTATIONS = {"flips": "random horizontal and vertical flips (4 symmetries)",
                 "dihedral": "random flips and transposes (8 symmetries)",
                 "flips+transposed": "random horizontal and vertical flips, every image also transposed before "
                                     "compression (8 symmetries, each patch a real file's decode)",
                 "flips+transposed+shifted": "random horizontal and vertical flips, every image also transposed, "
                                             "and each of the two also cropped by 4 pixels at the top and left "
                                             "(the coding grid at half a block's phase) before compression "
                                             "(each patch a real file's decode)"}
#: the extra files each augmentation compresses (``prepare_pairs`` keyword arguments)
FILE_COPIES = {"flips+transposed": {"transposed": True},
               "flips+transposed+shifted": {"transposed": True, "shifted": True}}


class PatchSampler:
    """Random 8-aligned square patches of (decoded, original) planes, with random flips (and
    transposes: ``augment="dihedral"``), drawn on ``device`` (all planes live there: no loader in
    the training loop).

    Patches start on the 8x8 grid and have a side that is a multiple of 8, and a flip or
    transpose of such a patch keeps block edges on the grid, so the artifacts a patch shows sit
    where they sit in a real file. Only a flip also keeps the coefficients a real file's: it
    turns coefficient ``[v, u]`` of every block into ``+-[v, u]``, integers of the same table.
    A transpose moves coefficient ``[v, u]`` to ``[u, v]``, whose IJG step differs (``[0, 5]``
    and ``[5, 0]``: 40 and 24 x the quality's scale), so the transposed decode is no file's
    decode with that table: requantized, 4-10% of its nonzero coefficients move (LIVE1 q10)
    and every interval has the other frequency's width. Models that read the coefficients and
    the table learn from flips only; pixel models, which never see the table, may take both.
    ``"flips+transposed"`` gives the coefficient models the transposes too, as files: the
    planes hold each image transposed before compression (``prepare_pairs(transposed=True)``),
    and the patches are flipped only; ``"flips+transposed+shifted"`` also each of those with
    the coding grid moved by half a block (``shifted=True``).
    Images of equal size are stacked into one tensor; a patch's image is drawn with probability
    proportional to the image's area."""

    def __init__(self, targets: list[np.ndarray], inputs: dict[int, list[np.ndarray]], patch: int,
                 device, seed: int = 0, augment: str = "dihedral"):
        if patch % 8:
            raise ValueError(f"patch size must be a multiple of 8, got {patch}")
        if augment not in AUGMENTATIONS:
            raise ValueError(f"augment must be one of {tuple(AUGMENTATIONS)}, got {augment!r}")
        self.patch, self.device, self.augment = patch, torch.device(device), augment
        groups: dict[tuple, list[tuple[np.ndarray, np.ndarray]]] = {}
        for q, planes in inputs.items():
            for t, x in zip(targets, planes):
                if min(t.shape) >= patch:
                    groups.setdefault(t.shape, []).append((x, t))
        if not groups:
            raise ValueError(f"no training image is at least {patch}x{patch}")
        self.inputs, self.targets, weights = [], [], []
        for shape, items in groups.items():
            self.inputs.append(torch.from_numpy(np.stack([x for x, _ in items])).to(self.device))
            self.targets.append(torch.from_numpy(np.stack([t for _, t in items])).to(self.device))
            weights.append(len(items) * (shape[0] // 8 - patch // 8 + 1) * (shape[1] // 8 - patch // 8 + 1))
        self.weights = torch.tensor(weights, dtype=torch.float64)
        self.generator = torch.Generator(self.device).manual_seed(seed)
        self._cpu_generator = torch.Generator().manual_seed(seed)
        self._ramp = torch.arange(patch, device=self.device)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "cpu_generator": self._cpu_generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self._cpu_generator.set_state(state["cpu_generator"])

    def sample(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(decoded, original)`` float32 ``[batch, 1, patch, patch]`` on 0..1 scale."""
        counts = torch.multinomial(self.weights, batch, replacement=True, generator=self._cpu_generator)
        counts = torch.bincount(counts, minlength=len(self.weights)).tolist()
        xs, ys = [], []
        g, p = self.generator, self.patch
        for k, n in enumerate(counts):
            if not n:
                continue
            inp, tgt = self.inputs[k], self.targets[k]
            _, h, w = inp.shape
            i = torch.randint(inp.shape[0], (n,), device=self.device, generator=g)
            oy = torch.randint((h - p) // 8 + 1, (n,), device=self.device, generator=g) * 8
            ox = torch.randint((w - p) // 8 + 1, (n,), device=self.device, generator=g) * 8
            rows = (oy[:, None] + self._ramp)[:, :, None]
            cols = (ox[:, None] + self._ramp)[:, None, :]
            xs.append(inp[i[:, None, None], rows, cols])
            ys.append(tgt[i[:, None, None], rows, cols])
        x = torch.cat(xs) / 255.0
        y = torch.cat(ys).float() / 255.0
        # Two flips (and a transpose), each drawn per patch: the 4 (8) symmetries of the square.
        ops = [lambda t: t.flip(-1), lambda t: t.flip(-2)]
        if self.augment == "dihedral":
            ops.append(lambda t: t.transpose(-1, -2))
        for op in ops:
            m = (torch.rand(batch, device=self.device, generator=g) < 0.5)[:, None, None]
            x, y = torch.where(m, op(x), x), torch.where(m, op(y), y)
        return x.unsqueeze(1).contiguous(), y.unsqueeze(1).contiguous()
