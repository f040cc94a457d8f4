"""D3 (Wang et al., "D3: Deep dual-domain based fast restoration of JPEG-compressed images",
CVPR 2016), with the quantization intervals from each file's real table.

Every 8x8 patch goes through two stages (Fig. 1), each an SC analysis module (1-SI, eq. 7-8)
followed by an SC synthesis module (Fig. 3):

- Stage I (DCT domain): ``y = T x`` (constant DCT of the level-shifted patch, 0..1 scale),
  ``alpha = theta * s1(D_A y / theta)``, ``Phi alpha = D_S alpha``;
- Stage II (pixel domain): ``z = T^-1 Phi alpha``, ``beta = gamma * s1(D_A' z / gamma)``, output
  ``Psi beta = D_S' beta`` (+ the level shift).

``s1`` is the unit-threshold shrinkage ``sign(u) max(|u| - 1, 0)``; eq. (8) writes the
shrinkage with a trainable threshold per atom, ``s_theta(u) = theta s1(u / theta)``: the two
diagonal layers ``diag(1/theta)`` and ``diag(theta)`` are tied reciprocals (the issue lists
them as ``diag(theta)`` / ``diag(1/theta)``: the same layers with ``theta`` named for its
reciprocal). ``D_A``: ``p x 64``, ``D_S``: ``64 x p``, no biases; ``p = 128`` or ``256``
(D3-128, D3-256). Parameters: ``2 (2 p 64 + p)``; the paper's 66,560 for D3-256 counts
``diag(theta)`` and ``diag(1/theta)`` separately (eq. 11).

Box constraint: ``Phi alpha`` should lie in the patch's quantization interval ``[(c - 1/2) q,
(c + 1/2) q]`` (``c``: integer coefficients, ``q``: the file's real table). Training adds the
box loss ``L_B = ||[Phi alpha - q_U]+||^2 + ||[q_L - Phi alpha]+||^2`` (eq. 3) to the L2 loss
of the output, equally weighted (Sec. 4.1); training runs the inference path on block-aligned
training crops (patches at stride 4, every position, averaged: :meth:`D3.training_loss`), L_B on
the patches inference clamps. At inference the stage-I output
is clamped into the interval (:func:`kdecode.ops.clamp_blocks`, the CUDA kernel on GPUs); the
same clamp runs in training so that training sees what inference computes (``L_B`` acts on
the unclamped output, whose gradient the clamp would stop). ``box=False`` drops both (the
ablation).

Inference (Sec. 4.1): 8x8 patches at stride 4, outputs averaged where they overlap. With
``offgrid_intervals`` (the paper's rule) a patch off the coding grid takes the interval of the
most similar coding block (least mean squared difference of the decoded samples) among those
it overlaps, all inside its 16x16 neighbourhood; by default only on-grid patches are clamped
(measured better: see :attr:`D3.offgrid_intervals`).

Initialisation: the paper initialises ``D_A, D_S, theta`` from a solved sparse-coding model
(``Phi^T, Phi, lambda``). ``init="sparse"`` (the training default) does that with dictionaries
learned at the start of training (:meth:`D3.init_from_data`, called by the training loop on a
first batch of training patches): ``Phi`` (stage I) from the DCT blocks of the decoded patches
(the paper's quantized ``y_i``), ``Psi`` (stage II) from the original pixel blocks, each by
:func:`learn_dictionary` (ISTA sparse codes and MOD dictionary updates, unit-norm atoms, seeded),
then ``D_A = Phi^T``, ``theta = lambda`` and ``D_S = pinv(D_A)`` (rather than ``Phi``: an
overcomplete ``Phi Phi^T`` is far from ``I``, and the (ridge-regularised) pseudo-inverse keeps
``D_S D_A = I`` on the blocks' span, so the start is the decode up to the shrinkage). Until then (and for ``init="frame"``) each stage
is a Parseval frame, ``D_A`` with orthonormal columns (random, seeded), ``D_S = D_A^T``, with
small thresholds: the model starts at the JPEG decode. ``init="random"``: PyTorch's defaults.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import blocks_to_planes, clamp_blocks, dct_blocks, idct_blocks, plane_to_blocks
from .coefficient import CoefficientRestorer

SIZES = (128, 256)
INITS = ("sparse", "frame", "random")
#: the sparse-coding weight lambda of the learned dictionaries (0..1 scale: ~5 grey levels)
SPARSITY = 0.02
STRIDE = 4


def shrink(u: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Eq. (8): ``theta * s1(u / theta)``, ``s1(v) = sign(v) max(|v| - 1, 0)``, computed as
    ``sign(u) max(|u| - theta, 0)`` (the same for theta > 0; measured 2-3x faster forward and
    backward than the literal form, and than ``u - clamp(u, -theta, theta)`` in training)."""
    return torch.sign(u) * torch.relu(u.abs() - theta)


def _dct_matrix(inverse: bool = False) -> torch.Tensor:
    """``[64, 64]``: the 2-D (I)DCT of row-major 8x8 blocks as one matrix product, ``x @ M``
    (row ``i``: the transform of the ``i``-th unit block): the constant T / T^-1 layers."""
    return (idct_blocks if inverse else dct_blocks)(torch.eye(64).reshape(64, 8, 8)).reshape(64, 64)


class SCStage(nn.Module):
    """SC analysis (1-SI) + SC synthesis on vectors ``[..., 64]``."""

    def __init__(self, atoms: int, init: str = "frame", threshold: float = 1e-3):
        super().__init__()
        self.analysis = nn.Linear(64, atoms, bias=False)    # D_A
        self.synthesis = nn.Linear(atoms, 64, bias=False)   # D_S
        self.theta = nn.Parameter(torch.full((atoms,), threshold))
        if init in ("frame", "sparse"):
            with torch.no_grad():
                frame, _ = torch.linalg.qr(torch.randn(atoms, 64, dtype=torch.float64))
                self.analysis.weight.copy_(frame)
                self.synthesis.weight.copy_(frame.T)

    @torch.no_grad()
    def init_sparse(self, signals: torch.Tensor, sparsity: float = SPARSITY) -> None:
        """``D_A = Phi^T``, ``D_S = pinv(D_A)``, ``theta = lambda`` from a dictionary learned on
        ``signals [M, 64]`` (see the module docstring)."""
        phi = learn_dictionary(signals, self.theta.numel(), sparsity)
        self.analysis.weight.copy_(phi.T)
        # D_S = (Phi Phi^T + eps I)^-1 Phi: the pseudo-inverse of D_A, regularised because
        # atoms learned on smooth blocks may not span all 64 dimensions.
        p = phi.double()
        frame = p @ p.T
        frame += 1e-4 * frame.trace() / 64 * torch.eye(64, dtype=p.dtype, device=p.device)
        self.synthesis.weight.copy_(torch.linalg.solve(frame, p).float())
        self.theta.fill_(sparsity)

    def forward(self, x):
        # |theta|: a threshold is a magnitude; an optimizer step may cross zero.
        return self.synthesis(shrink(self.analysis(x), self.theta.abs() + 1e-6))


class D3Net(nn.Module):
    """Stage I (DCT) and stage II (pixel) on patches ``[..., 8, 8]``: what a weights file holds."""

    def __init__(self, atoms: int = 256, init: str = "sparse", box: bool = True):
        super().__init__()
        self.box = box
        self.dct_stage = SCStage(atoms, init)
        self.pixel_stage = SCStage(atoms, init)
        self.register_buffer("dct", _dct_matrix(), persistent=False)
        self.register_buffer("idct", _dct_matrix(inverse=True), persistent=False)

    def forward(self, patches: torch.Tensor, quantized: torch.Tensor, qtable: torch.Tensor, boxed=None):
        """Decoded patches ``[N, L, 8, 8]`` (0..1, level-shifted by the caller: 0 = grey 128),
        the integer coefficients of the clamped patches' intervals and tables (``[8, 8]`` or
        ``[N, 8, 8]``) -> (restored patches, stage-I coefficients before the clamp, 0..1
        scale), both ``[N, L, 8, 8]``. ``boxed``: bool ``[L]``, the patches clamped (default
        all); ``quantized`` holds theirs only, ``[N, boxed.sum(), 8, 8]`` (``[N, L, 8, 8]``)."""
        # float32 throughout, also under autocast: four small matrix products, and the box
        # intervals need the coefficients to a fraction of a quantization step.
        with torch.autocast(patches.device.type, enabled=False):
            return self._stages(patches.float(), quantized, qtable, boxed)

    def _stages(self, patches, quantized, qtable, boxed):
        n, length = patches.shape[:2]
        phi_alpha = self.dct_stage(patches.reshape(n, length, 64) @ self.dct)   # T, stage I
        constrained = phi_alpha
        if self.box:
            inside = phi_alpha if boxed is None else phi_alpha[:, boxed]
            inside = clamp_blocks((inside * 255.0).reshape(n, -1, 1, 8, 8), quantized[:, :, None], qtable) / 255.0
            if boxed is None:
                constrained = inside.reshape(n, length, 64)
            else:
                constrained = phi_alpha.clone()
                constrained[:, boxed] = inside.reshape(n, -1, 64)
        out = self.pixel_stage(constrained @ self.idct)                          # T^-1, stage II
        return out.reshape(n, length, 8, 8), phi_alpha.reshape(n, length, 8, 8)


def learn_dictionary(signals: torch.Tensor, atoms: int, sparsity: float, rounds: int = 10,
                     ista_steps: int = 20, seed: int = 0) -> torch.Tensor:
    """A dictionary ``Phi [64, atoms]`` (unit-norm columns) for ``min ||x - Phi a||^2 / 2 +
    sparsity ||a||_1`` over ``signals [M, 64]``: ``rounds`` of ISTA codes (from the previous
    round's) and MOD updates (the least-squares dictionary for those codes). Starts from
    random signals (random atoms when there are fewer signals than atoms); float64."""
    x = signals.detach().double().reshape(-1, 64).cpu()
    g = torch.Generator().manual_seed(seed)
    phi = torch.randn(64, atoms, generator=g, dtype=torch.float64)
    picked = x[torch.randperm(len(x), generator=g)[:atoms]].T
    phi[:, :picked.shape[1]] += picked * 10
    phi /= phi.norm(dim=0, keepdim=True)
    codes = torch.zeros(len(x), atoms, dtype=torch.float64)
    for _ in range(rounds):
        step = 1.0 / torch.linalg.matrix_norm(phi, 2) ** 2
        for _ in range(ista_steps):
            u = codes + step * (x - codes @ phi.T) @ phi
            codes = torch.sign(u) * torch.relu(u.abs() - step * sparsity)
        gram = codes.T @ codes + 1e-6 * torch.eye(atoms, dtype=torch.float64)
        phi = torch.linalg.solve(gram, codes.T @ x).T
        unused = phi.norm(dim=0) < 1e-8  # atoms no code uses: restart them on random signals
        phi[:, unused] = x[torch.randint(len(x), (int(unused.sum()),), generator=g)].T + 1e-3
        norms = phi.norm(dim=0, keepdim=True)
        phi /= norms
        codes *= norms  # the same representation with unit-norm atoms
    return phi.float().to(signals.device)


def box_loss(coefficients: torch.Tensor, quantized: torch.Tensor, qtable: torch.Tensor) -> torch.Tensor:
    """Eq. (3), mean over coefficients: squared distance of each coefficient (0..1 scale) to
    its interval ``[(c - 1/2) q, (c + 1/2) q] / 255``; zero inside."""
    q = qtable.float() / 255.0
    c = quantized.float()
    return (torch.relu(coefficients - (c + 0.5) * q) ** 2 + torch.relu((c - 0.5) * q - coefficients) ** 2).mean()


class D3(CoefficientRestorer):
    """D3 as a :class:`Decoder`: luma restored patch-wise from its blocks and the file's real
    table (chroma exact). ``atoms``: 128 or 256 (D3-128, D3-256); ``quality``: the training
    quality (see :class:`CoefficientRestorer`)."""

    name = "d3"
    loss_description = "L2 on the output + box loss L_B on the DCT-stage output (equal weights)"
    input_description = "8x8 patches of the float decode, intervals from the quantized blocks and real qtable"

    def __init__(self, atoms: int = 256, init: str = "sparse", box: bool = True, quality: int | None = None):
        super().__init__()
        if atoms not in SIZES or init not in INITS:
            raise ValueError(f"atoms must be one of {SIZES} and init one of {INITS}, got {atoms!r}, {init!r}")
        self.quality, self.init = quality, init
        self.net = D3Net(atoms, init, box)

    #: a block reaches the patches overlapping it: 4 samples beyond it
    margin_blocks = 1
    #: no mirrored context at the edge (:attr:`LumaRestorer.edge_blocks`): the 8x8 patches see
    #: little beyond their block, and one block measured LIVE1_gray q10 29.044 -> 29.043 dB
    edge_blocks = 0
    #: True: off-grid patches take the interval of the most similar coding block they overlap
    #: (the paper's rule); False: only on-grid patches, whose interval is exact, are clamped.
    #: Measured with the shipped d3_q10 on LIVE1_gray q10: paper's rule 26.26 dB, on-grid only
    #: 28.96, no clamp at inference 28.96, JPEG 27.77 (a 60 s D3-128 smoke run on Classic5 gave
    #: 25.88 / 28.43 / 28.42 / 27.82): an off-grid patch straddles a block edge, and another
    #: block's interval cuts its high frequencies. Default: on-grid.
    offgrid_intervals = False

    def forward(self, blocks: torch.Tensor, qtable: torch.Tensor) -> torch.Tensor:
        """Integer blocks ``[N, bh, bw, 8, 8]`` + tables -> restored luma ``[N, 1, 8 bh, 8 bw]``:
        patches at stride 4, averaged (Sec. 4.1); large inputs in tiles."""
        return self.tiled(self._patchwise, blocks, qtable)

    def _patchwise(self, blocks: torch.Tensor, qtable: torch.Tensor, with_stage1: bool = False):
        """The restored plane; ``with_stage1``: also the stage-I coefficients before the clamp,
        the interval coefficients and table of the clamped patches, and which those are (training)."""
        n = blocks.shape[0]
        plane = blocks_to_planes(blocks, qtable)[:, None] / 255.0 - 128.0 / 255.0   # [N, 1, H, W], level-shifted
        h, w = plane.shape[-2:]
        patches = F.unfold(plane, 8, stride=STRIDE)                                  # [N, 64, L]
        length = patches.shape[-1]
        patches = patches.transpose(1, 2).reshape(n, length, 8, 8)
        interval_blocks, interval_table = self.interval_blocks(blocks, qtable)
        if self.offgrid_intervals:
            boxed, quantized = None, _interval_blocks(patches, plane, interval_blocks)
        else:  # only the patches on the coding grid: in unfold order, the blocks in raster order
            ny, nx = (h - 8) // STRIDE + 1, (w - 8) // STRIDE + 1
            on_grid = torch.arange(ny, device=blocks.device)[:, None] % 2 == 0
            boxed = (on_grid & (torch.arange(nx, device=blocks.device)[None] % 2 == 0)).reshape(-1)
            quantized = interval_blocks.reshape(n, -1, 8, 8)
        out, phi_alpha = self.net(patches, quantized, interval_table, boxed)
        out = out.reshape(n, length, 64).transpose(1, 2)
        ones = torch.ones(1, 64, length, dtype=out.dtype, device=out.device)
        total = F.fold(out, (h, w), 8, stride=STRIDE)
        restored = total / F.fold(ones, (h, w), 8, stride=STRIDE) + 128.0 / 255.0
        if with_stage1:
            return restored, phi_alpha, quantized, interval_table, boxed
        return restored

    def init_from_data(self, plane: torch.Tensor, target: torch.Tensor) -> None:
        """The sparse-coding start (``init="sparse"``) from decoded and original training
        planes ``[N, 1, H, W]`` (block-aligned); other starts are left as they are."""
        if self.init != "sparse":
            return
        decoded = plane_to_blocks(plane[:, 0].float() - 128.0 / 255.0)
        original = plane_to_blocks(target[:, 0].float() - 128.0 / 255.0)
        self.net.dct_stage.init_sparse(dct_blocks(decoded).reshape(-1, 64))
        self.net.pixel_stage.init_sparse(original.reshape(-1, 64))

    def training_loss(self, plane: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """L2 on the output + L_B on the stage-I output of the clamped patches, for block-aligned
        decoded planes ``[N, 1, H, W]``: the training patches are taken at stride 4, at every
        position, and averaged as inference does (the paper's training patches are "extracted
        from arbitrary positions", Sec. 4.1), so the weights learn what inference computes. L_B
        applies where inference clamps: the on-grid patches (exact intervals; all patches with
        :attr:`offgrid_intervals`). Measured against training on the coding blocks alone (the
        first version), D3-256 q20, 300 s on one CPU thread: LIVE1_gray 30.96 dB vs 30.85 dB,
        which had stopped improving after 60 s."""
        restored, phi_alpha, quantized, table, boxed = self._patchwise(*self.plane_blocks(plane), with_stage1=True)
        loss = F.mse_loss(restored, target.float())
        if not self.net.box:
            return loss
        return loss + box_loss(phi_alpha if boxed is None else phi_alpha[:, boxed], quantized, table)


def _interval_blocks(patches: torch.Tensor, plane: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
    """The integer coefficients whose intervals each stride-4 patch takes: its own coding
    block on the grid, else the most similar (least squared difference of decoded samples)
    of the coding blocks it overlaps. ``patches``: ``[N, L, 8, 8]`` in unfold order;
    ``plane``: the decoded ``[N, 1, H, W]``; ``blocks``: ``[N, bh, bw, 8, 8]``."""
    n, bh, bw = blocks.shape[:3]
    ny, nx = (plane.shape[-2] - 8) // STRIDE + 1, (plane.shape[-1] - 8) // STRIDE + 1
    coded = plane_to_blocks(plane[:, 0])                                              # [N, bh, bw, 8, 8]
    iy = torch.arange(ny, device=blocks.device) * STRIDE
    ix = torch.arange(nx, device=blocks.device) * STRIDE
    rows = torch.stack([iy // 8, torch.clamp((iy + 7) // 8, max=bh - 1)])            # [2, ny] candidates
    cols = torch.stack([ix // 8, torch.clamp((ix + 7) // 8, max=bw - 1)])            # [2, nx]
    cand_r = rows[:, None, :, None].expand(2, 2, ny, nx).reshape(4, -1)              # [4, L]
    cand_c = cols[None, :, None, :].expand(2, 2, ny, nx).reshape(4, -1)
    candidates = coded[:, cand_r, cand_c]                                             # [N, 4, L, 8, 8]
    distance = ((candidates - patches[:, None]) ** 2).sum((-1, -2))                   # [N, 4, L]
    best = distance.argmin(1)                                                         # [N, L]
    r = cand_r.T.gather(1, best.T).T if n else cand_r[0]
    c = cand_c.T.gather(1, best.T).T if n else cand_c[0]
    return blocks[torch.arange(n, device=blocks.device)[:, None], r, c]              # [N, L, 8, 8]
