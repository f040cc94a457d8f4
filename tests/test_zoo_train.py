"""Training data and loop: pairs are what inference sees, patches sit on the block grid, runs
resume from their checkpoints and end with weights and a card."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from kdecode.jpeg.reader import read_coefficients
from kdecode.jpeg.quality import ijg_table
from kdecode.models import registry
from kdecode.models.d3 import D3
from kdecode.models.dmcnn import DMCNN
from kdecode.models.hrcnn import HRCNN
from kdecode.models.pixel import PixelRestorer
from kdecode.ops import dct_blocks, plane_to_blocks
from kdecode.pipeline import component_plane
from kdecode.train.data import FILE_COPIES, PatchSampler, decoded_plane, jpeg_bytes, luma, prepare_pairs
from kdecode.train.loop import TrainConfig, train

from zoo_helpers import need_data, smooth_image


def test_decoded_plane_is_the_inference_input():
    y = smooth_image(40, 56)
    plane = decoded_plane(y, 20)
    coeffs = read_coefficients(jpeg_bytes(y, 20))
    assert np.array_equal(plane, component_plane(coeffs, 0, exact=False).numpy())
    # ... and it is Pillow's decode before integer rounding.
    pillow = np.asarray(Image.open(__import__("io").BytesIO(jpeg_bytes(y, 20))))
    assert np.abs(np.clip(np.round(plane), 0, 255) - pillow).max() <= 1


def test_luma_is_matlab_rgb2ycbcr():
    data = need_data("LIVE1_color", "LIVE1_gray")
    color = luma(Image.open(data / "LIVE1_color" / "bikes.png"))
    assert np.array_equal(color, np.asarray(Image.open(data / "LIVE1_gray" / "bikes.png")))


def test_patches_sit_on_the_block_grid():
    """Every 8x8 tile of a patch is one whole block of its image (also after flips and
    transposes), and input and target patches stay paired."""
    h, w = 48, 64
    blocks = np.arange((h // 8) * (w // 8), dtype=np.uint8).reshape(h // 8, w // 8)
    target = np.kron(blocks, np.ones((8, 8), np.uint8))
    sampler = PatchSampler([target], {10: [target.astype(np.float32)]}, patch=24, device="cpu", seed=3)
    x, y = sampler.sample(64)
    assert x.shape == y.shape == (64, 1, 24, 24)
    assert torch.equal(x, y)
    tiles = (y[:, 0] * 255).round().reshape(64, 3, 8, 3, 8)
    assert (tiles == tiles[:, :, :1, :, :1]).all()


def _steps_of(patches: torch.Tensor, quality: int) -> torch.Tensor:
    """The patches' DCT coefficients in steps of the IJG table of ``quality``: integers when a
    patch is the decode of a file written with that table."""
    blocks = dct_blocks(plane_to_blocks(patches[:, 0].double() * 255 - 128))
    return blocks / torch.from_numpy(ijg_table(quality)).double()


@pytest.mark.parametrize("augment", ["flips", "dihedral"])
def test_flipped_patches_are_decodes_of_files_with_the_table(augment):
    """A flip of a decoded patch is the decode of the flipped file (same table, coefficients
    +-1 times the file's); a transpose is not: its coefficients fall between the steps of the
    table, so the coefficient models, which read the table, train on flips only."""
    y = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)  # every frequency
    plane = decoded_plane(y, 10)
    steps = _steps_of(torch.from_numpy(plane)[None, None] / 255.0, 10)
    assert (steps - steps.round()).abs().max() < 1e-3  # the decode itself: integer steps
    sampler = PatchSampler([y], {10: [plane]}, patch=64, device="cpu", seed=0, augment=augment)
    off = _steps_of(sampler.sample(64)[0], 10)
    off = (off - off.round()).abs().amax(dim=(1, 2, 3, 4))
    if augment == "flips":
        assert off.max() < 1e-3
    else:
        assert (off > 0.1).float().mean() > 0.25  # about half the patches are transposed
    assert HRCNN.augment == DMCNN.augment == D3.augment == "flips"
    assert PixelRestorer.augment == "dihedral"


def _tiny_data(root):
    for i, (h, w) in enumerate([(64, 96), (72, 56), (64, 96)]):
        folder = root / ("train" if i < 2 else "val")
        folder.mkdir(exist_ok=True)
        Image.fromarray(smooth_image(h, w, seed=i, color=i == 1)).save(folder / f"img{i}.png")


def test_prepare_pairs_caches(tmp_path):
    _tiny_data(tmp_path)
    targets, inputs = prepare_pairs([tmp_path / "train"], [10, 30], scales=(1.0, 0.5), cache_dir=tmp_path / "c",
                                    progress=False)
    assert len(targets) == 4 and set(inputs) == {10, 30}
    assert all(t.shape[0] <= t.shape[1] and t.shape[0] % 8 == 0 and t.shape[1] % 8 == 0 for t in targets)
    again, inputs2 = prepare_pairs([tmp_path / "train"], [10], scales=(1.0, 0.5), cache_dir=tmp_path / "c",
                                   progress=False)
    assert all(np.array_equal(a, b) for a, b in zip(targets, again))
    assert all(np.array_equal(a, b) for a, b in zip(inputs[10], inputs2[10]))


def test_transposed_files_are_compressed_after_the_transpose(tmp_path):
    """``flips+transposed`` gives a coefficient model transposed content as real files: the
    original is transposed, then compressed, so its decode has integer steps of the table,
    unlike the transposed decode (the ``dihedral`` patches)."""
    _tiny_data(tmp_path)
    targets, inputs = prepare_pairs([tmp_path / "train"], [10], cache_dir=tmp_path / "c", progress=False)
    both, inputs2 = prepare_pairs([tmp_path / "train"], [10], cache_dir=tmp_path / "c", progress=False,
                                  transposed=True)
    n = len(targets)
    assert len(both) == len(inputs2[10]) == 2 * n
    assert all(np.array_equal(a, b) for a, b in zip(targets, both[:n]))
    assert all(np.array_equal(a, b) for a, b in zip(inputs[10], inputs2[10][:n]))
    for k in range(n):
        assert np.array_equal(both[n + k], targets[k].T)
        decoded = torch.from_numpy(inputs2[10][n + k])[None, None] / 255.0
        steps = _steps_of(decoded, 10)
        assert (steps - steps.round()).abs().max() < 1e-3  # a file's decode
        assert (_steps_of(torch.from_numpy(inputs[10][k].T.copy())[None, None] / 255.0, 10)
                - steps).abs().max() > 0.1  # not the transposed decode
    sampler = PatchSampler(both, inputs2, patch=32, device="cpu", seed=0, augment="flips+transposed")
    off = _steps_of(sampler.sample(32)[0], 10)
    assert (off - off.round()).abs().max() < 1e-3


def test_shifted_files_move_the_coding_grid_under_the_content(tmp_path):
    """``flips+transposed+shifted`` adds each file with the content cropped by 4 pixels before
    compression: the target is the same content moved, the decode is a real file's (integer
    steps of the table) and not the first file's decode moved (its grid was elsewhere)."""
    _tiny_data(tmp_path)
    targets, inputs = prepare_pairs([tmp_path / "train"], [10], cache_dir=tmp_path / "c", progress=False,
                                    transposed=True)
    four, inputs4 = prepare_pairs([tmp_path / "train"], [10], cache_dir=tmp_path / "c", progress=False,
                                  **FILE_COPIES["flips+transposed+shifted"])
    n = len(targets)
    assert len(four) == len(inputs4[10]) == 2 * n
    assert all(np.array_equal(a, b) for a, b in zip(inputs[10], inputs4[10][:n]))
    for k in range(n):
        moved, t = four[n + k], targets[k]
        assert moved.shape[0] % 8 == 0 and moved.shape[1] % 8 == 0
        h, w = min(moved.shape[0], t.shape[0] - 4), min(moved.shape[1], t.shape[1] - 4)
        assert np.array_equal(moved[:h, :w], t[4:4 + h, 4:4 + w])
        decoded = torch.from_numpy(inputs4[10][n + k])[None, None] / 255.0
        steps = _steps_of(decoded, 10)
        assert (steps - steps.round()).abs().max() < 1e-3  # a file's decode
        assert np.abs(inputs4[10][n + k][:h, :w] - inputs[10][k][4:4 + h, 4:4 + w]).max() > 1  # another grid


def test_train_resume_and_card(tmp_path):
    _tiny_data(tmp_path)
    cfg = TrainConfig(model="fast_arcnn", qualities=[20], out=str(tmp_path / "run"), data_root=str(tmp_path),
                      train_sets=["train"], val_set="val", val_images=1, steps=3, batch=4, patch=32,
                      warmup=1, checkpoint_every=1, val_every=2, progress=False)
    assert train(TrainConfig(**{**cfg.__dict__, "max_time": 0.0})) == {}  # stops after one step
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert ckpt["step"] == 1
    card = train(cfg)  # resumes at step 1
    assert card["training"]["steps"] == 3
    assert "transposes" in card["training"]["augmentation"]  # a pixel model's default
    # The folder's checkpoint is this run's: another configuration refuses to resume it.
    for other in ({"qualities": [30]}, {"model": "arcnn"}):
        with pytest.raises(ValueError, match="another run"):
            train(TrainConfig(**{**cfg.__dict__, **other, "steps": 4}))
    saved = json.loads((tmp_path / "run" / "fast_arcnn_q20.json").read_text())
    assert saved["qualities"] == [20] and saved["model"] == "fast_arcnn"
    model = registry.load_weights(registry.card_for_weights(tmp_path / "run" / "fast_arcnn_q20.safetensors"))
    assert model.restore(torch.rand(1, 1, 16, 16)).shape == (1, 1, 16, 16)
    # Easy-to-hard transfer: a new run starts from those weights.
    cfg2 = TrainConfig(**{**cfg.__dict__, "out": str(tmp_path / "run10"), "qualities": [10], "steps": 1,
                          "init_from": str(tmp_path / "run")})
    assert train(cfg2)["training"]["init_from"] == "fast_arcnn_q20.safetensors"


@pytest.mark.parametrize("amp, dtype, recorded", [("auto", torch.float32, "none"), ("on", torch.bfloat16, "bf16")])
def test_amp_on_the_cpu(tmp_path, monkeypatch, amp, dtype, recorded):
    """--amp: "auto" keeps a CPU run in float32; "on" runs its training steps' convolutions in
    bf16 (autocast, as on a GPU), and the card says which; on a CPU without bf16 arithmetic
    (emulated here, whatever this machine has) "on" warns that float32 is faster."""
    import warnings

    import kdecode.models.base as base

    monkeypatch.setattr(base, "native_bf16", lambda device_type: False)
    seen = []
    conv = torch.nn.Conv2d.forward

    def record(self, x):
        out = conv(self, x)
        if self.training:
            seen.append(out.dtype)
        return out

    monkeypatch.setattr(torch.nn.Conv2d, "forward", record)
    _tiny_data(tmp_path)
    cfg = TrainConfig(model="fast_arcnn", qualities=[20], out=str(tmp_path / "run"), data_root=str(tmp_path),
                      train_sets=["train"], val_set=None, steps=2, batch=2, patch=32, warmup=1,
                      checkpoint_every=10, progress=False, device="cpu", amp=amp)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        card = train(cfg)
    assert seen and set(seen) == {dtype}
    assert card["training"]["mixed_precision"] == recorded
    emulated = [w for w in caught if issubclass(w.category, RuntimeWarning) and "no bf16 arithmetic" in str(w.message)]
    assert len(emulated) == (amp == "on")


def test_amp_rejects_other_values(tmp_path):
    """The old boolean (``amp=True``) would silently mean float32: it is refused by name."""
    cfg = TrainConfig(model="fast_arcnn", qualities=[20], out=str(tmp_path / "run"), data_root=str(tmp_path),
                      train_sets=["train"], val_set=None, steps=1, progress=False, device="cpu", amp=True)
    with pytest.raises(ValueError, match="amp"):
        train(cfg)


def test_ema_weights_are_the_average_and_survive_a_resume(tmp_path, monkeypatch):
    """--ema: the run's weights are the exponential moving average of every step's weights
    (``avg <- d avg + (1 - d) w``, from the first step's), the last step's are kept in
    last_step/, and a run stopped and resumed continues the same average (its checkpoint holds it)."""
    from safetensors.torch import load_file

    from kdecode.train import loop

    steps = []
    update = loop.AveragedModel.update_parameters

    def record(self, model):
        steps.append({k: v.detach().clone() for k, v in model.net.state_dict().items()})
        return update(self, model)

    monkeypatch.setattr(loop.AveragedModel, "update_parameters", record)
    _tiny_data(tmp_path)
    cfg = TrainConfig(model="fast_arcnn", qualities=[20], out=str(tmp_path / "run"), data_root=str(tmp_path),
                      train_sets=["train"], val_set="val", val_images=1, steps=4, batch=4, patch=32, warmup=1,
                      checkpoint_every=1, val_every=2, progress=False, ema=0.6)
    assert train(TrainConfig(**{**cfg.__dict__, "max_time": 0.0})) == {}  # stops after one step
    card = train(cfg)  # resumes
    assert len(steps) == 4 and "moving average" in card["training"]["weights"]
    expected = dict(steps[0])
    for w in steps[1:]:
        expected = {k: 0.6 * expected[k] + 0.4 * w[k] for k in expected}
    shipped = load_file(str(tmp_path / "run" / "fast_arcnn_q20.safetensors"))
    last = load_file(str(tmp_path / "run" / "last_step" / "fast_arcnn_q20.safetensors"))
    for k in expected:
        assert torch.allclose(shipped[k], expected[k], atol=1e-6), k
        assert torch.equal(last[k], steps[-1][k]), k
    assert any(not torch.allclose(shipped[k], last[k]) for k in expected)
    # each with its card, so that `kdecode eval --weights` measures either
    last_card = registry.card_for_weights(tmp_path / "run" / "last_step" / "fast_arcnn_q20.safetensors")
    assert "last step" in last_card["training"]["weights"] and last_card["qualities"] == [20]


def test_time_budget_skips_a_paused_process(tmp_path, monkeypatch):
    """A --time-budget run on a CPU counts training time: a step during which the process was
    stopped (here a clock jump of 1000 s) neither ends the run nor enters the card's time."""
    import types

    from kdecode.train import loop

    clock = {"t": 0.0, "calls": 0}

    def fake_time():  # 10 ms per call, one 1000 s gap at the 40th call
        clock["calls"] += 1
        clock["t"] += 0.01 + (1000.0 if clock["calls"] == 40 else 0.0)
        return clock["t"]

    monkeypatch.setattr(loop, "time", types.SimpleNamespace(time=fake_time))
    _tiny_data(tmp_path)
    cfg = TrainConfig(model="fast_arcnn", qualities=[20], out=str(tmp_path / "run"), data_root=str(tmp_path),
                      train_sets=["train"], val_set=None, steps=10 ** 6, batch=1, patch=16, warmup=1,
                      checkpoint_every=10 ** 6, time_budget=1.0, progress=False)
    card = train(cfg)
    assert clock["calls"] > 60 and card["training"]["wall_time_s"] < 1.1


def test_training_lowers_the_error(tmp_path):
    """Some steps on two small images bring the restored planes closer to the originals than
    the decoded input: the loop learns (MSE on the training images, before vs after)."""
    _tiny_data(tmp_path)
    cfg = TrainConfig(model="arcnn", qualities=[10], out=str(tmp_path / "d"), data_root=str(tmp_path),
                      train_sets=["train"], val_set=None, steps=40, batch=8, patch=32, lr=1e-3, warmup=1,
                      checkpoint_every=100, progress=False, seed=1)
    train(cfg)
    model = registry.load_weights(registry.card_for_weights(tmp_path / "d" / "arcnn_q10.safetensors"))
    targets, inputs = prepare_pairs([tmp_path / "train"], [10], progress=False)
    before = after = 0.0
    with torch.no_grad():
        for x, t in zip(inputs[10], targets):
            x = torch.from_numpy(x)[None, None] / 255
            t = torch.from_numpy(t).float()[None, None] / 255
            before += float(((x - t) ** 2).mean())
            after += float(((model.restore(x) - t) ** 2).mean())
    assert after < before
