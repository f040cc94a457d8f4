"""The training loop behind ``kdecode train``: resumable, seeded, mixed precision on GPU.

A run lives in its own folder (``--out``): ``checkpoint.pt`` (model, optimizer, schedule,
sampler state, step, wall time; written every ``checkpoint_every`` steps, at the time limit
and at the end), ``log.jsonl`` (loss, speed and validation PSNR as training goes), and at the
end the weights (``STEM.safetensors``) and their card (``STEM.json``). Starting a run whose
folder holds a checkpoint resumes it. ``init_from`` starts from other weights (the papers'
easy-to-hard transfer: a lower quality starts from the model of the next higher one).
"""
from __future__ import annotations

import json
import math
import platform
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..metrics import psnr
from ..models.base import warn_if_emulated_bf16
from ..models.registry import build
from .data import AUGMENTATIONS, FILE_COPIES, PatchSampler, decoded_plane, image_files, luma, prepare_pairs

ARCH_DESCRIPTIONS = {
    "arcnn": "AR-CNN 64(9)-32(7)-16(1)-1(5), PReLU, residual output",
    "fast_arcnn": "Fast AR-CNN 64(9)-32(1)-32(7)-64(1)-1[9]-s2, PReLU, residual output",
    "dcsc": "DCSC: dilated 3x3 convs (1/2/4, 32 maps each), convolutional LISTA with shared S "
            "(64 maps, R iterations), 3x3 reconstruction of the residual",
    "hrcnn": "HR-CNN: 64 fixed coded masks 8x8/8, 64->64 transposed conv 8x8/8, decoding 8(5)-1(3) + ReLU, "
             "4 residual blocks 64(11)-16(7)-1(1), final ReLU; pixels straight from the coefficients",
    "dmcnn": "DMCNN: DCT auto-encoder (9 convs, 64 coefficient channels on the block grid) + DRU clamp to the "
             "file's real quantization intervals, pixel auto-encoder (15 convs, dilations 2/4/8, symmetric "
             "skips, side outputs at 1/2 and 1/4), learnable residual mix r, PReLU",
    "d3": "D3: 8x8 patches at stride 4; DCT stage and pixel stage, each 1-SI analysis D_A (p x 64), "
          "diag(1/theta), unit-threshold shrinkage, diag(theta), synthesis D_S (64 x p); stage-I output "
          "clamped to the real quantization intervals; overlap averaging",
}


#: architectures cheap enough for "auto" on a CPU (a few thousand multiply-adds per pixel):
#: Fast AR-CNN, and D3 (four 64 x p matrix products per 8x8 patch, 4 patches per block)
CPU_FRIENDLY = ("fast_arcnn", "d3")


@dataclass
class TrainConfig:
    model: str
    qualities: list[int]
    out: str
    data_root: str
    train_sets: list[str]
    val_set: str | None = None
    val_images: int = 16
    steps: int = 20000
    batch: int = 64
    patch: int = 48
    lr: float = 1e-3
    lr_min: float = 1e-5
    warmup: int = 500
    loss: str = "mse"
    scales: list[float] = field(default_factory=lambda: [1.0])
    arch_kwargs: dict = field(default_factory=dict)
    init_from: str | None = None
    seed: int = 0
    device: str = "cpu"
    #: bf16 autocast: "auto" on CUDA only; "on" on the CPU too (where it has AMX, 2.0-3.6x faster
    #: steps for the convolutional models; where it has neither AMX nor AVX512-BF16, 8-11x slower,
    #: and a warning says so: benchmarks/train_step.py); "off" float32 everywhere
    amp: str = "auto"
    grad_clip: float | None = None
    checkpoint_every: int = 1000
    val_every: int = 2000
    max_time: float | None = None
    time_budget: float | None = None
    #: decay of an exponential moving average of the weights (None: none). Small batches on a CPU
    #: leave the last step's weights noisy (8 BSD68 images moved by +-0.05 dB between checkpoints
    #: at the end of a cosine schedule); the average is what gets validated and shipped.
    ema: float | None = None
    workers: int = 0
    cache_dir: str | None = None
    progress: bool = True
    #: training patch symmetries, a key of :data:`AUGMENTATIONS` (None: the model's own, ``model.augment``)
    augment: str | None = None
    #: the registry name the weights ship under (default ``model``): ``d3_128`` is D3 with p = 128
    name: str | None = None
    #: DMCNN: weight of eq. (7)'s side terms (the 1/2 and 1/4 outputs, the DCT branch) against the
    #: output's MSE; 1 is the paper's loss, 0 a last fine-tuning of the output alone
    side_losses: float = 1.0

    @property
    def stem(self) -> str:
        """File name of the weights: ``arcnn_q10``; a multi-quality model is just ``dcsc``."""
        name = self.name or self.model
        return name if len(self.qualities) > 1 else f"{name}_q{self.qualities[0]}"


#: on a CPU, a training step this many times slower than the recent ones (and over 1 s) means
#: the process was stopped and continued (a shared machine pauses niced jobs while someone
#: benchmarks): that time is not training time, so it neither ends a --time-budget run early nor
#: shortens its schedule (elapsed and the card's wall time count training only).
PAUSED = 50


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _progress(step: int, elapsed: float, cfg: TrainConfig) -> float:
    """How far the run is, 0..1: by steps, or by wall time when a ``time_budget`` is set
    (whichever ends first), so a run on borrowed GPU time still finishes its schedule."""
    p = step / cfg.steps
    if cfg.time_budget:
        p = max(p, elapsed / cfg.time_budget)
    return min(1.0, p)


def _lr_factor(step: int, progress: float, cfg: TrainConfig) -> float:
    """Linear warm-up (steps), then cosine decay from ``lr`` to ``lr_min`` over the run."""
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    floor = cfg.lr_min / cfg.lr
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def load_validation(val_dir: str, qualities: list[int], count: int) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """``(quality, decoded float plane, original)`` for the first ``count`` images of ``val_dir``."""
    from PIL import Image

    out = []
    for path in image_files(val_dir)[:count]:
        y = luma(Image.open(path))
        out += [(q, decoded_plane(y, q), y) for q in qualities]
    return out


@torch.no_grad()
def validate(model, val, device, amp: bool) -> dict[int, float]:
    """Mean PSNR of the rounded restored planes per quality (what ``kdecode eval`` measures)."""
    model.eval()
    scores: dict[int, list[float]] = {}
    for q, plane, y in val:
        x = torch.from_numpy(plane).to(device)[None, None] / 255.0
        with torch.autocast(device.type, torch.bfloat16, enabled=amp and device.type == "cuda"):
            out = model.restore(x)
        out = (out[0, 0] * 255.0).round().clamp(0, 255).cpu()
        scores.setdefault(q, []).append(psnr(y, out))
    model.train()
    return {q: float(np.mean(v)) for q, v in scores.items()}


def _load_init(model, path: str) -> str:
    """Load weights (a ``.safetensors`` file, or a run folder with its final weights). A model
    whose input depends on the training quality or the input form (HR-CNN) adapts them from the
    ``arch_kwargs`` in their card (``transfer_from``)."""
    from safetensors.torch import load_file

    p = Path(path)
    if p.is_dir():
        found = sorted(p.glob("*.safetensors"))
        if not found:
            raise FileNotFoundError(f"no .safetensors weights in run folder {p}")
        p = found[0]
    model.net.load_state_dict(load_file(str(p)))
    card = p.with_suffix(".json")
    source = json.loads(card.read_text()).get("arch_kwargs", {}) if card.is_file() else {}
    if source and hasattr(model, "transfer_from"):
        model.transfer_from(source)
    return str(p)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (torch {torch.__version__})"
    return f"CPU {platform.processor() or platform.machine()} x{torch.get_num_threads()} threads (torch {torch.__version__})"


def psnr_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the patches of ``10 log10(MSE + 1e-5)``: minus their mean PSNR (peak 1), up to
    the constant. The test sets' figure is the mean of per-image PSNRs, in which an image's error
    weighs ``1 / MSE``; a plain MSE weighs every pixel's error alike, so it favours the
    hard images over the figure (NAFNet trains on this loss). The 1e-5 caps a patch at 50 dB,
    so that a flat patch's near-zero error does not take the step."""
    mse = ((output.float() - target.float()) ** 2).flatten(1).mean(1)
    return 10 * torch.log10(mse + 1e-5).mean()


LOSSES = {"mse": torch.nn.functional.mse_loss, "l1": torch.nn.functional.l1_loss, "psnr": psnr_loss}


def train_step(model, opt, x: torch.Tensor, y: torch.Tensor, loss_fn, amp: bool, grad_clip: float | None = None,
               side_losses: float = 1.0) -> torch.Tensor:
    """One optimizer step on a batch (decoded float planes ``x``, originals ``y``, ``[N, 1, H, W]``);
    returns its loss. The loss is the model's own where it has one (DMCNN's multi-scale loss, its
    side terms weighted by ``side_losses``; with them at 0 its output term is ``loss_fn`` when
    that is not the MSE), else ``loss_fn`` on what ``restore`` computes, which validation and
    inference compute too."""
    own = {"side_weight": side_losses} if side_losses != 1.0 else {}
    if loss_fn not in (None, torch.nn.functional.mse_loss):
        own["output_loss"] = loss_fn  # a model's own loss that takes none refuses it (a TypeError)
    with torch.autocast(x.device.type, torch.bfloat16, enabled=amp):
        loss = model.training_loss(x, y, **own) if hasattr(model, "training_loss") else loss_fn(model.restore(x).float(), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    return loss


def train(cfg: TrainConfig) -> dict:
    """Run (or resume) one training run; returns its card."""
    from safetensors.torch import save_file
    from tqdm import tqdm

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(cfg.device)
    _seed_everything(cfg.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if cfg.amp not in ("auto", "on", "off"):
        raise ValueError(f"TrainConfig.amp must be 'auto', 'on' or 'off', not {cfg.amp!r}")
    amp = cfg.amp == "on" or (cfg.amp == "auto" and device.type == "cuda")
    if amp:
        warn_if_emulated_bf16(device.type, f"kdecode train --amp {cfg.amp}")

    model = build(cfg.model, **cfg.arch_kwargs).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    root = Path(cfg.data_root)
    augment = cfg.augment or model.augment
    targets, inputs = prepare_pairs([root / s for s in cfg.train_sets], cfg.qualities, cfg.scales, cfg.workers,
                                    cfg.cache_dir, cfg.progress, **FILE_COPIES.get(augment, {}))
    sampler = PatchSampler(targets, inputs, cfg.patch, device, cfg.seed, augment)
    n_pixels = sum(t.size for t in targets)
    del targets, inputs
    val = load_validation(root / cfg.val_set, cfg.qualities, cfg.val_images) if cfg.val_set else []

    ckpt_path = out / "checkpoint.pt"
    step, elapsed, init_used, ckpt = 0, 0.0, None, {}
    if ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=False)
        saved = {k: ckpt.get("config", {}).get(k) for k in ("model", "arch_kwargs", "qualities")}
        wanted = {k: getattr(cfg, k) for k in saved}
        if saved != wanted:  # resuming would fail on the weights' shapes, or silently mix two runs
            raise ValueError(f"{ckpt_path}: this run folder holds a checkpoint of another run ({saved}), not "
                             f"{wanted}: give another --out, or delete the folder to start again")
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sampler.load_state_dict({k: v.cpu() for k, v in ckpt["sampler"].items()})
        torch.set_rng_state(ckpt["torch_rng"].cpu())  # map_location moved it to the device
        step, elapsed, init_used = ckpt["step"], ckpt["elapsed"], ckpt.get("init_from")
    elif cfg.init_from:
        init_used = _load_init(model, cfg.init_from)
    elif hasattr(model, "init_from_data"):  # a data-dependent start (D3's sparse-coding dictionaries)
        model.init_from_data(*sampler.sample(max(cfg.batch, 64)))

    # The average starts at the weights the run starts (or resumes without one) from: the first
    # update copies them.
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema)) if cfg.ema else None
    if ema is not None and "ema" in ckpt:
        ema.load_state_dict(ckpt["ema"])
    shipped = ema.module if ema is not None else model  # what is validated and saved as the run's weights

    def save_checkpoint():
        tmp = ckpt_path.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                    "sampler": sampler.state_dict(), "torch_rng": torch.get_rng_state(), "step": step,
                    "elapsed": elapsed, "init_from": init_used, "config": asdict(cfg),
                    **({"ema": ema.state_dict()} if ema is not None else {})}, tmp)
        tmp.replace(ckpt_path)

    log = open(out / "log.jsonl", "a")
    loss_fn = LOSSES[cfg.loss]
    model.train()
    last_t, last_step, step_end, typical = time.time(), step, time.time(), None
    stopped_early = False
    bar = tqdm(total=cfg.steps, initial=step, desc=f"train {cfg.stem}", disable=not cfg.progress, mininterval=2)
    while _progress(step, elapsed, cfg) < 1.0:
        for group in opt.param_groups:
            group["lr"] = cfg.lr * _lr_factor(step, _progress(step, elapsed, cfg), cfg)
        x, y = sampler.sample(cfg.batch)
        loss = train_step(model, opt, x, y, loss_fn, amp, cfg.grad_clip, cfg.side_losses)
        if ema is not None:
            ema.update_parameters(model)
        step += 1
        bar.update(1)
        seconds, step_end = time.time() - step_end, time.time()
        if device.type == "cpu" and typical is not None and seconds > max(PAUSED * typical, 1.0):
            seconds = typical  # the process was stopped (SIGSTOP: see PAUSED), not training
        else:
            typical = seconds if typical is None else 0.95 * typical + 0.05 * seconds
        elapsed += seconds
        done = _progress(step, elapsed, cfg) >= 1.0
        if step % 200 == 0 or done:
            now = time.time()
            mpx = (step - last_step) * cfg.batch * cfg.patch ** 2 / max(1e-9, now - last_t) / 1e6
            bar.set_postfix(loss=f"{loss.item():.2e}", mpx_s=f"{mpx:.1f}")
            log.write(json.dumps({"step": step, "loss": loss.item(), "lr": opt.param_groups[0]["lr"],
                                  "mpx_per_s": mpx, "elapsed": elapsed}) + "\n")
            last_t, last_step = now, step
        if val and step % cfg.val_every == 0 and not done:
            scores = validate(shipped, val, device, amp)
            elapsed += time.time() - step_end
            log.write(json.dumps({"step": step, "val_psnr": scores, "elapsed": elapsed}) + "\n")
            bar.write(f"[{cfg.stem}] step {step}: validation PSNR " +
                      ", ".join(f"q{q} {v:.3f}" for q, v in scores.items()))
        log.flush()
        if step % cfg.checkpoint_every == 0:
            save_checkpoint()
        step_end = time.time()  # validation counted above, logging and checkpoints not
        if cfg.max_time is not None and elapsed >= cfg.max_time and not done:
            stopped_early = True
            break
    bar.close()
    save_checkpoint()
    if stopped_early:
        log.write(json.dumps({"step": step, "stopped": "max_time", "elapsed": elapsed}) + "\n")
        log.close()
        print(f"[{cfg.stem}] stopped at step {step}/{cfg.steps} (time limit); run again to resume")
        return {}

    scores = validate(shipped, val, device, amp) if val else {}

    def weights(m) -> dict:
        return {k: v.detach().float().cpu().contiguous() for k, v in m.net.state_dict().items()}

    save_file(weights(shipped), str(out / f"{cfg.stem}.safetensors"))
    if ema is not None:  # the last step's weights beside the average, to measure what it brings
        (out / "last_step").mkdir(exist_ok=True)
        save_file(weights(model), str(out / "last_step" / f"{cfg.stem}.safetensors"))
    card = {
        "model": cfg.name or cfg.model,
        "architecture": ARCH_DESCRIPTIONS[cfg.model],
        "arch_kwargs": cfg.arch_kwargs,
        "parameters": sum(p.numel() for p in model.net.parameters()),
        "qualities": list(cfg.qualities),
        "cpu_friendly": cfg.model in CPU_FRIENDLY,
        "training": {
            "data": cfg.train_sets,
            "data_pixels": n_pixels,
            "jpeg": f"Pillow quality q, gray, read back by kdecode ({getattr(model, 'input_description', 'float IDCT luma plane')})",
            "luma": "MATLAB rgb2ycbcr Y (16..235), portrait images transposed",
            "scales": cfg.scales, "augmentation": AUGMENTATIONS[augment], "patch": cfg.patch, "batch": cfg.batch, "steps": step,
            "optimizer": f"Adam lr {cfg.lr} -> {cfg.lr_min} (warm-up {cfg.warmup}, cosine over "
                         + (f"{cfg.time_budget:.0f} s of training)" if cfg.time_budget else f"{cfg.steps} steps)"),
            "loss": getattr(model, "loss_description", cfg.loss)
                    + (f", side terms weighted {cfg.side_losses:g}" if cfg.side_losses != 1.0 else "")
                    + (f", output term {cfg.loss}" if hasattr(model, "loss_description") and cfg.loss != "mse" else ""), "grad_clip": cfg.grad_clip, "mixed_precision": "bf16" if amp else "none",
            "seed": cfg.seed, "init_from": Path(init_used).name if init_used else None,
            **({"weights": f"exponential moving average of the weights, decay {cfg.ema} (the last step's in "
                           "last_step/)"} if ema is not None else {}),
            "wall_time_s": round(elapsed, 1), "device": _device_name(device),
            "validation": {"set": cfg.val_set, "images": cfg.val_images,
                           "psnr": {str(q): round(v, 3) for q, v in scores.items()}},
        },
        "metrics": {},
    }
    (out / f"{cfg.stem}.json").write_text(json.dumps(card, indent=2) + "\n")
    if ema is not None:  # a card beside the last step's weights too: `kdecode eval` reads it
        last = dict(card, training=dict(card["training"], weights="the last step's (the run's own are the average)"))
        (out / "last_step" / f"{cfg.stem}.json").write_text(json.dumps(last, indent=2) + "\n")
    log.write(json.dumps({"step": step, "done": True, "val_psnr": scores, "elapsed": elapsed}) + "\n")
    log.close()
    return card
