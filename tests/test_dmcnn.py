"""DMCNN: the paper's architecture, the DCT Rectify Unit against each file's real quantization
intervals (IJG and non-IJG tables), trained by the zoo's pipeline. Narrow nets (features=8)
keep the tests fast on 2 CPU cores; the architecture is the same at any width."""
import json

import numpy as np
import pytest
import torch
from torch import nn

from kdecode import list_models, read_coefficients
from kdecode.errors import KdecodeError
from kdecode.jpeg.quality import ijg_table
from kdecode.models import registry
from kdecode.models.dmcnn import DMCNN, LAMBDA, THETA
from kdecode.ops import blocks_to_planes
from kdecode.pipeline import component_blocks, decode_exact
from kdecode.train.cli import main as train_main

from test_zoo_train import _tiny_data
from zoo_helpers import adam_losses, check_decode_shape, jpeg, smooth_image, training_pair


def _model(**kw):
    torch.manual_seed(0)
    return DMCNN(**{"features": 8, **kw}).eval()


def _convs(module):
    return [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]


def test_architecture_as_in_the_paper():
    net = DMCNN().net
    # Depths 9 (DCT) and 15 (pixel main path; the two side outputs feed only the multi-scale loss).
    assert len(_convs(net.dct)) == 9
    side = {net.pixel.side2, net.pixel.side4}
    assert len([c for c in _convs(net.pixel) if c not in side]) == 15
    assert [c.dilation[0] for c in _convs(net.pixel.dilated)] == [2, 4, 8, 1]
    assert net.r.item() == 0.5 and net.dct.head[0][0].in_channels == 64
    prelus = [m for m in net.modules() if isinstance(m, nn.PReLU)]
    assert prelus and all(torch.all(p.weight == 0.1) for p in prelus)
    assert not [m for m in net.modules() if isinstance(m, nn.ReLU)]
    assert (THETA, LAMBDA) == (0.618, 0.9)


@pytest.mark.parametrize("size, color", [((1, 1), False), ((9, 40), False), ((37, 45), False), ((33, 50), True),
                                         ((16, 24), True)])
def test_decode_any_size_gray_and_colour(size, color):
    check_decode_shape(_model(), size, color)


def test_untrained_start_is_near_the_jpeg_decode():
    """The residual layers start small: the untrained model returns (nearly) the float decode."""
    coeffs = read_coefficients(jpeg(smooth_image(32, 40), 20))
    with torch.no_grad():
        out = _model().decode(coeffs)
    assert (out.int() - decode_exact(coeffs).int()).abs().max() <= 2


def _intervals(blocks, qtable):
    q = qtable.double()
    return (blocks.double() - 0.5) * q, (blocks.double() + 0.5) * q


def _wild(model):
    """Large DCT-branch output weights: its estimates go far outside the intervals."""
    with torch.no_grad():
        model.net.dct.out.weight.normal_(0, 5.0)
    return model


@pytest.mark.parametrize("table", ["ijg", "flat", "camera", "ijg_edited"])
def test_dru_never_leaves_the_real_interval(table):
    """Files written with non-IJG tables: the DRU clamps to the table read from the file."""
    base = ijg_table(50).astype(int)
    tables = {"ijg": None, "flat": np.full(64, 6), "camera": np.clip(np.arange(64) // 3 + 2, 1, 255),
              "ijg_edited": np.where(np.arange(64) % 7 == 0, 99, base.reshape(64))}
    kw = {} if tables[table] is None else {"qtables": [[int(v) for v in tables[table]]]}
    coeffs = read_coefficients(jpeg(smooth_image(40, 48), 50, **kw))
    blocks, qtable = component_blocks(coeffs, 0)
    if tables[table] is not None:  # the file really carries that table
        assert np.array_equal(qtable.numpy().reshape(64), tables[table])
    for dru in (True, False):
        model = _wild(_model(dru=dru))
        with torch.no_grad():
            estimate = model.net.coefficients(blocks[None], qtable).double()
        lo, hi = _intervals(blocks[None], qtable)
        inside = ((estimate >= lo - 1e-3) & (estimate <= hi + 1e-3)).all()
        assert inside if dru else not inside  # without the DRU the same net does leave them


def test_dru_uses_each_images_table_in_a_batch():
    blocks = torch.randint(-20, 20, (2, 3, 4, 8, 8), dtype=torch.int16)
    tables = torch.stack([torch.full((8, 8), 3), torch.randint(1, 120, (8, 8))])
    with torch.no_grad():
        estimate = _wild(_model()).net.coefficients(blocks, tables).double()
    lo, hi = _intervals(blocks, tables[:, None, None])
    assert ((estimate >= lo - 1e-3) & (estimate <= hi + 1e-3)).all()
    assert (estimate - blocks.double() * tables[:, None, None]).abs().amax() > 0  # it did move


def test_restore_from_planes_is_the_decode_from_coefficients():
    """Training feeds the stored float planes; restore() recovers the file's coefficients with
    the training quality's table (CoefficientRestorer, shared with HR-CNN)."""
    coeffs = read_coefficients(jpeg(smooth_image(32, 48), 20))
    blocks, qtable = component_blocks(coeffs, 0)
    plane = blocks_to_planes(blocks, qtable)[None, None] / 255.0
    model = _model(quality=20)
    with torch.no_grad():
        assert torch.equal(model.restore(plane), model(blocks[None], qtable))
    with pytest.raises(ValueError, match="training quality"):
        _model().restore(plane)


def test_training_steps_lower_the_loss():
    x, target = training_pair([smooth_image(32, 32, seed=s) for s in range(2)], 10)
    model = _model(quality=10).train()
    losses = adam_losses(model, lambda: model.training_loss(x, target), steps=8)
    assert losses[-1] < losses[0]
    assert model.net.r.grad is not None and model.net.dct.out.weight.grad.abs().sum() > 0


def test_loss_is_eq7_and_its_side_terms_can_be_weighted():
    """Eq. (7) recomputed by hand; ``side_weight`` scales all but the output's MSE, and at 0 the
    loss is the error of what inference computes (the side heads get no gradient)."""
    import torch.nn.functional as F

    x, target = training_pair([smooth_image(32, 32, seed=3)], 10)
    model = _model(quality=10)
    with torch.no_grad():
        out, half, quarter, plane_d = model.net(*model.plane_blocks(x), side_outputs=True)
        terms = [F.mse_loss(out, target), F.mse_loss(half, F.avg_pool2d(target, 2)),
                 F.mse_loss(quarter, F.avg_pool2d(target, 4)), F.mse_loss(plane_d, target)]
        for w in (1.0, 0.25):
            expected = terms[0] + w * (THETA * terms[1] + THETA ** 2 * terms[2] + LAMBDA * terms[3])
            assert torch.allclose(model.training_loss(x, target, side_weight=w), expected, rtol=1e-5)
        assert torch.allclose(model.training_loss(x, target, side_weight=0),
                              F.mse_loss(model.restore(x), target), rtol=1e-5)
        output_mse = F.mse_loss(model.restore(x), target)
    model.train()
    from kdecode.train.loop import train_step

    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    loss = train_step(model, opt, x, target, None, amp=False, side_losses=0.0)  # what the loop calls
    assert torch.allclose(loss, output_mse, rtol=1e-5)
    assert model.net.pixel.side2.weight.grad is None and model.net.r.grad is not None


def test_psnr_loss_is_minus_the_mean_patch_psnr_and_replaces_the_output_term():
    """``--loss psnr``: minus the mean of the metrics module's per-patch PSNRs (with the 50 dB
    cap), as DMCNN's output term when its side terms are off, and refused beside them."""
    from kdecode.metrics import psnr
    from kdecode.train.loop import psnr_loss, train_step

    x, target = training_pair([smooth_image(32, 32, seed=4), smooth_image(32, 32, seed=5)], 10)
    mses = [10 ** (-psnr(t[0].numpy() * 255, o[0].numpy() * 255) / 10) for o, t in zip(x, target)]
    assert abs(psnr_loss(x, target).item() - sum(10 * np.log10(m + 1e-5) for m in mses) / 2) < 1e-3
    model = _model(quality=10)
    with torch.no_grad():
        assert torch.allclose(model.training_loss(x, target, side_weight=0, output_loss=psnr_loss),
                              psnr_loss(model.restore(x), target), rtol=1e-5)
        with pytest.raises(ValueError):
            model.training_loss(x, target, output_loss=psnr_loss)
    model.train()
    loss = train_step(model, torch.optim.SGD(model.parameters(), lr=0.0), x, target, psnr_loss, amp=False,
                      side_losses=0.0)
    assert -40 < loss.item() < -20


def test_train_command_card_and_registry(tmp_path):
    _tiny_data(tmp_path)
    run = tmp_path / "run"
    args = ["train", "--model", "dmcnn", "--quality", "20", "--no-dru", "--data-root", str(tmp_path),
            "--train-sets", "train", "--val-set", "val", "--val-images", "1", "--steps", "1", "--batch", "1",
            "--patch", "32", "--warmup", "1", "--out", str(run), "-q"]
    assert train_main(args) == 0
    card = json.loads((run / "dmcnn_q20.json").read_text())
    assert card["model"] == "dmcnn" and card["arch_kwargs"] == {"quality": 20, "dru": False}
    assert "multi-scale" in card["training"]["loss"] and not card["cpu_friendly"]
    model = registry.load_weights(registry.card_for_weights(run / "dmcnn_q20.safetensors"))
    assert isinstance(model, DMCNN) and not model.net.dru
    assert train_main(args[:4] + ["10", "20"] + args[5:]) == 2  # one model per quality
    assert train_main(args + ["--side-losses", "0", "--out", str(tmp_path / "run0")]) == 0
    assert json.loads((tmp_path / "run0" / "dmcnn_q20.json").read_text())["training"]["loss"].endswith("side terms weighted 0")
    assert train_main(["train", "--model", "arcnn"] + args[3:5] + ["--side-losses", "0"]) == 2
    assert train_main(args + ["--side-losses", "-1"]) == 2
    assert train_main(args + ["--loss", "psnr"]) == 2  # eq. 7's MSE terms and a log loss do not mix
    assert train_main(args + ["--side-losses", "0", "--loss", "psnr", "--out", str(tmp_path / "run1")]) == 0
    assert json.loads((tmp_path / "run1" / "dmcnn_q20.json").read_text())["training"]["loss"].endswith(
        "side terms weighted 0, output term psnr")


def test_registered_without_weights_and_never_auto():
    assert "dmcnn" in list_models()
    if not registry.shipped_cards("dmcnn"):
        with pytest.raises(KdecodeError, match="no weights"):
            registry.load_model("dmcnn")
        for device in ("cpu", "cuda"):
            assert registry.resolve_model("auto", device, 10) != "dmcnn"


def test_tiled_inference_equals_the_whole_grid(monkeypatch):
    """Large inputs run in tiles with 22 blocks of context: the same numbers as one call."""
    blocks = torch.randint(-10, 10, (1, 50, 79, 8, 8), dtype=torch.int16)
    qtable = torch.randint(1, 50, (8, 8))
    model = _model(features=4)
    calls = []
    model.net.register_forward_hook(lambda *args: calls.append(1))
    with torch.no_grad():
        whole = model(blocks, qtable)
        monkeypatch.setattr(model, "max_call_samples", 64 * 60 ** 2)  # 16-block cores + 2 x 22
        tiled = model(blocks, qtable)
    assert len(calls) == 1 + 4 * 5
    assert torch.allclose(whole, tiled, atol=1e-5)


def test_assumed_quality_intervals_for_the_comparison():
    """``intervals="assumed"``: the IJG table of the nearest quality, the decoded coefficients
    requantized with it. Same as the real ones for an IJG file; different boxes for a non-IJG
    table, and the DRU then keeps to those."""
    model = _wild(_model())
    model.intervals = "assumed"
    ijg = component_blocks(read_coefficients(jpeg(smooth_image(24, 24), 35)), 0)
    c, q = model.interval_blocks(ijg[0][None], ijg[1])
    assert torch.equal(c[0], ijg[0]) and torch.equal(q.int(), ijg[1])
    camera = np.clip(np.arange(64) // 3 + 2, 1, 255)
    blocks, qtable = component_blocks(read_coefficients(jpeg(smooth_image(40, 48), 50, qtables=[[int(v) for v in camera]])), 0)
    c, q = model.interval_blocks(blocks[None], qtable)
    assert not torch.equal(q.int(), qtable)
    lo, hi = _intervals(c, q)
    decoded = blocks[None].double() * qtable
    assert ((decoded >= lo - 1e-6) & (decoded <= hi + 1e-6)).all()  # the decode lies in both boxes
    with torch.no_grad():
        estimate = model.net.coefficients(blocks[None], qtable, (c, q)).double()
        restored = model(blocks[None], qtable)
    assert ((estimate >= lo - 1e-3) & (estimate <= hi + 1e-3)).all()
    real_lo, real_hi = _intervals(blocks[None], qtable)
    assert not ((estimate >= real_lo - 1e-3) & (estimate <= real_hi + 1e-3)).all()
    model.intervals = "real"
    with torch.no_grad():
        assert not torch.equal(restored, model(blocks[None], qtable))
