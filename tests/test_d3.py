"""D3: 1-SI modules, patch-wise inference at stride 4 with the interval of the most similar
coding block, the box loss and clamp against each file's real table, trained by the zoo's
pipeline. D3-128 keeps the tests fast."""
import json

import numpy as np
import pytest
import torch

from kdecode import list_models, read_coefficients
from kdecode.errors import KdecodeError
from kdecode.models import registry
from kdecode.models.d3 import D3, SPARSITY, _interval_blocks, box_loss, shrink
from kdecode.ops import blocks_to_planes, dct_blocks, plane_to_blocks
from kdecode.pipeline import component_blocks, decode_exact
from kdecode.train.cli import main as train_main

from test_zoo_train import _tiny_data
from zoo_helpers import adam_losses, check_decode_shape, jpeg, smooth_image, training_pair


def _model(**kw):
    torch.manual_seed(0)
    return D3(**{"atoms": 128, **kw}).eval()


def test_parameters_and_shrinkage():
    for p in (128, 256):
        assert sum(t.numel() for t in D3(atoms=p).net.parameters()) == 2 * (2 * p * 64 + p)
    generator = torch.Generator().manual_seed(0)
    u, theta = torch.randn(1000, generator=generator), torch.rand(1000, generator=generator) + 0.1
    assert torch.allclose(shrink(u, theta), torch.sign(u) * torch.clamp(u.abs() - theta, min=0), atol=1e-6)
    with pytest.raises(ValueError):
        D3(atoms=64)


@pytest.mark.parametrize("size, color", [((1, 1), False), ((37, 45), False), ((33, 50), True)])
def test_decode_any_size_gray_and_colour(size, color):
    check_decode_shape(_model(), size, color)


def test_frame_start_is_the_jpeg_decode():
    """D_S D_A = I with tiny thresholds: without the box clamp the start is the float decode."""
    coeffs = read_coefficients(jpeg(smooth_image(32, 40), 20))
    with torch.no_grad():
        out = _model(box=False).decode(coeffs)
    assert (out.int() - decode_exact(coeffs).int()).abs().max() <= 1


def test_patches_take_the_interval_of_the_most_similar_overlapping_block():
    torch.manual_seed(1)
    blocks = torch.randint(-20, 20, (2, 3, 4, 8, 8), dtype=torch.int16)
    qtable = torch.randint(1, 30, (8, 8))
    plane = blocks_to_planes(blocks, qtable)[:, None] / 255.0
    patches = torch.nn.functional.unfold(plane, 8, stride=4).transpose(1, 2).reshape(2, -1, 8, 8)
    chosen = _interval_blocks(patches, plane, blocks)
    coded = plane_to_blocks(plane[:, 0])
    nx = (32 - 8) // 4 + 1
    for n in range(2):
        for k in range(patches.shape[1]):
            y, x = 4 * (k // nx), 4 * (k % nx)
            cands = [(r, c) for r in {y // 8, (y + 7) // 8} for c in {x // 8, (x + 7) // 8}]
            dist = {rc: ((coded[n, rc[0], rc[1]] - patches[n, k]) ** 2).sum().item() for rc in cands}
            matches = [rc for rc in cands if torch.equal(chosen[n, k], blocks[n, rc[0], rc[1]])]
            assert matches and min(dist[rc] for rc in matches) <= min(dist.values()) + 1e-9
            if y % 8 == 0 and x % 8 == 0:  # on the grid: its own block
                assert torch.equal(chosen[n, k], blocks[n, y // 8, x // 8])


@pytest.mark.parametrize("table", ["flat", "camera"])
def test_box_clamp_uses_the_real_table(table):
    """Non-IJG tables read from the file: the stage-I output stays inside the real intervals
    (aligned patches: exactly the file's coefficients); without the box it leaves them."""
    values = np.full(64, 6) if table == "flat" else np.clip(np.arange(64) // 3 + 2, 1, 255)
    coeffs = read_coefficients(jpeg(smooth_image(32, 32), 50, qtables=[[int(v) for v in values]]))
    blocks, qtable = component_blocks(coeffs, 0)
    assert np.array_equal(qtable.numpy().reshape(64), values)
    patches = plane_to_blocks(blocks_to_planes(blocks, qtable) / 255.0 - 128 / 255).reshape(1, -1, 8, 8)
    quantized = blocks.reshape(1, -1, 8, 8)
    lo, hi = ((quantized.double() - 0.5) * qtable) / 255, ((quantized.double() + 0.5) * qtable) / 255
    for box in (True, False):
        model = _model(box=box)
        with torch.no_grad():
            model.net.dct_stage.synthesis.weight.normal_(0, 1.0)  # far from the identity
            seen = []
            model.net.pixel_stage.register_forward_hook(lambda m, inp, out: seen.append(inp[0]))
            model.net(patches, quantized, qtable)
        # The pixel stage's input is T^-1 of the (clamped) stage-I output.
        coefficients = dct_blocks(seen[0].double().reshape(1, -1, 8, 8))
        inside = ((coefficients >= lo - 1e-5) & (coefficients <= hi + 1e-5)).all()
        assert inside if box else not inside


def test_box_loss_penalises_only_outside_the_interval():
    c = torch.tensor([[2.0, -1.0, 0.0]])
    q = torch.tensor([10.0, 20.0, 4.0])
    inside = torch.tensor([[24.0, -29.0, 2.0]]) / 255
    assert box_loss(inside, c, q).item() == 0.0
    outside = torch.tensor([[27.0, -31.0, 2.0]]) / 255  # 2 above, 1 below
    assert box_loss(outside, c, q).item() == pytest.approx((4 + 1) / 255 ** 2 / 3, rel=1e-4)


def test_restore_from_planes_is_the_decode_from_coefficients():
    coeffs = read_coefficients(jpeg(smooth_image(32, 48), 20))
    blocks, qtable = component_blocks(coeffs, 0)
    plane = blocks_to_planes(blocks, qtable)[None, None] / 255.0
    model = _model(quality=20)
    with torch.no_grad():
        assert torch.allclose(model.restore(plane), model(blocks[None], qtable), atol=1e-6)


def test_training_loss_is_the_error_of_what_inference_computes():
    """Training runs the inference path (stride-4 patches, averaged): without the box its loss
    is the MSE of ``restore``; with it, L2 + L_B >= that MSE."""
    x, target = training_pair([smooth_image(32, 32, seed=s) for s in range(2)], 10)
    for box in (False, True):
        model = _model(quality=10, box=box)
        with torch.no_grad():
            model.net.dct_stage.synthesis.weight.normal_(0, 0.3)  # L_B > 0
            mse = torch.nn.functional.mse_loss(model.restore(x), target)
            loss = model.training_loss(x, target)
        assert loss.item() == pytest.approx(mse.item(), rel=1e-5) if not box else loss.item() > mse.item() * 1.01


def test_training_steps_lower_the_loss():
    x, target = training_pair([smooth_image(32, 32, seed=s) for s in range(2)], 10)
    model = _model(quality=10).train()
    losses = adam_losses(model, lambda: model.training_loss(x, target), steps=10)
    assert losses[-1] < losses[0]


def test_train_command_card_and_registry(tmp_path, monkeypatch):
    _tiny_data(tmp_path)
    run = tmp_path / "run"
    args = ["train", "--model", "d3", "--quality", "20", "--atoms", "128", "--data-root", str(tmp_path),
            "--train-sets", "train", "--val-set", "val", "--val-images", "1", "--steps", "2", "--batch", "1",
            "--patch", "32", "--warmup", "1", "--d3-init", "frame", "--out", str(run), "-q"]
    assert train_main(args + ["--loss", "l1"]) == 2  # D3 keeps its own loss (L2 + L_B)
    assert train_main(args) == 0
    card = json.loads((run / "d3_128_q20.json").read_text())  # D3-128 ships as "d3_128"
    assert card["model"] == "d3_128" and card["arch_kwargs"] == {"quality": 20, "atoms": 128, "box": True, "init": "frame"} and "L_B" in card["training"]["loss"]
    model = registry.load_weights(registry.card_for_weights(run / "d3_128_q20.safetensors"))
    assert isinstance(model, D3) and model.net.box
    # kdecode eval with the assumed-quality intervals: its own entry in the card.
    weights = str(run / "d3_128_q20.safetensors")
    assert train_main(["eval", "--weights", weights, "--quality", "20", "--data", str(tmp_path / "val"),
                       "--intervals", "assumed", "--update-card", "-q"]) == 0
    metrics = json.loads((run / "d3_128_q20.json").read_text())["metrics"]
    assert list(metrics) == ["val (assumed IJG intervals)"] and "20" in metrics["val (assumed IJG intervals)"]
    # ... and the network's own output, without the output box: its own entry too.
    assert train_main(["eval", "--weights", weights, "--quality", "20", "--data", str(tmp_path / "val"),
                       "--output-box", "off", "--update-card", "-q"]) == 0
    metrics = json.loads((run / "d3_128_q20.json").read_text())["metrics"]
    assert list(metrics) == ["val (assumed IJG intervals)", "val (no output box)"]
    assert train_main(["eval", "--quality", "20", "--data", str(tmp_path / "val"), "--intervals", "assumed",
                       "-q"]) == 2  # the exact decode has no box constraint
    assert "d3" in list_models() and "d3_128" in list_models()
    if not registry.shipped_cards("d3"):
        with pytest.raises(KdecodeError, match="no weights"):
            registry.load_model("d3")
        assert registry.resolve_model("auto", "cpu", 10) != "d3"
        assert registry.resolve_model("auto", "cuda", 10) != "d3"

    # Shipped beside D3-256 under its own name (a stand-in weights folder); "auto" never picks
    # weights whose card says "not final", however good the (here made-up) figure.
    shipped = tmp_path / "weights"
    shipped.mkdir()
    card.update(cpu_friendly=True, metrics={"LIVE1_gray": {"20": {"model": {"psnr": 99.0}}}})
    (shipped / "d3_128_q20.json").write_text(json.dumps(card))
    (shipped / "d3_128_q20.safetensors").write_bytes((run / "d3_128_q20.safetensors").read_bytes())
    monkeypatch.setattr(registry, "WEIGHTS_DIR", shipped)
    assert isinstance(registry.load_model("d3_128", 20), D3) and registry.resolve_model("auto", "cpu", 20) == "d3_128"
    (shipped / "d3_128_q20.json").write_text(json.dumps({**card, "status": "not final: q20 below target"}))
    registry._cards_in.cache_clear()
    assert registry.resolve_model("auto", "cpu", 20) == "exact"
    with pytest.raises(KdecodeError, match="no weights"):
        registry.load_model("d3", 20)  # D3-256: a name of its own
    registry._cards_in.cache_clear()


def test_tiled_inference_equals_the_whole_grid(monkeypatch):
    blocks = torch.randint(-10, 10, (2, 9, 13, 8, 8), dtype=torch.int16)
    qtable = torch.randint(1, 50, (8, 8))
    model = _model()
    with torch.no_grad():
        model.net.dct_stage.synthesis.weight.normal_(0, 0.3)  # clamps active: intervals matter
        whole = model(blocks, qtable)
        monkeypatch.setattr(model, "max_call_samples", 2 * 64 * 5 ** 2)  # 3-block cores + 2 x 1
        tiled = model(blocks, qtable)
    assert torch.allclose(whole, tiled, atol=1e-6)


def test_assumed_quality_intervals_change_the_result():
    camera = np.clip(np.arange(64) // 3 + 2, 1, 255)
    coeffs = read_coefficients(jpeg(smooth_image(32, 40), 50, qtables=[[int(v) for v in camera]]))
    model = _model()
    with torch.no_grad():
        model.net.dct_stage.synthesis.weight.normal_(0, 0.3)
        real = model.decode(coeffs)
        model.intervals = "assumed"
        assumed = model.decode(coeffs)
    assert real.shape == assumed.shape and not torch.equal(real, assumed)


def test_sparse_coding_start():
    """Dictionaries learned on training blocks: unit-norm atoms that reach a lower sparse-coding
    objective than random atoms; D_A = Phi^T, D_S D_A = I on the blocks, theta = lambda."""
    x, target = training_pair([smooth_image(64, 64, seed=s) for s in range(4)], 10)
    model = _model(quality=10)
    before = model.net.pixel_stage.analysis.weight.clone()
    model.init_from_data(x, target)
    stage = model.net.pixel_stage
    phi = stage.analysis.weight.T
    assert not torch.equal(stage.analysis.weight, before)
    assert torch.allclose(phi.norm(dim=0), torch.ones(128), atol=1e-5)
    assert torch.all(stage.theta == SPARSITY)
    signals = plane_to_blocks(target[:, 0] - 128 / 255).reshape(-1, 64)
    again = signals @ stage.analysis.weight.T @ stage.synthesis.weight.T  # D_S D_A x = x
    assert ((again - signals).norm() / signals.norm()).item() < 0.01

    def error(dictionary, steps=50):  # ISTA objective reached with a dictionary
        step, a = 1 / torch.linalg.matrix_norm(dictionary, 2) ** 2, torch.zeros(len(signals), 128)
        for _ in range(steps):
            u = a + step * (signals - a @ dictionary.T) @ dictionary
            a = torch.sign(u) * torch.relu(u.abs() - step * SPARSITY)
        return (0.5 * ((signals - a @ dictionary.T) ** 2).sum(1) + SPARSITY * a.abs().sum(1)).mean()

    random = torch.randn(64, 128, generator=torch.Generator().manual_seed(0))
    assert error(phi) < error(random / random.norm(dim=0))


def test_training_starts_from_the_training_patches(tmp_path, monkeypatch):
    """The loop hands a first batch of training patches to init_from_data (the sparse start)."""
    _tiny_data(tmp_path)
    seen = []
    monkeypatch.setattr(D3, "init_from_data", lambda self, x, y: seen.append((self.init, x.shape, y.shape)))
    args = ["train", "--model", "d3", "--quality", "20", "--atoms", "128", "--data-root", str(tmp_path),
            "--train-sets", "train", "--val-set", "", "--steps", "1", "--batch", "1", "--patch", "32",
            "--warmup", "1", "--out", str(tmp_path / "run"), "-q"]
    assert train_main(args) == 0
    assert seen == [("sparse", (64, 1, 32, 32), (64, 1, 32, 32))]


@pytest.mark.parametrize("offgrid", [False, True])
def test_which_patches_are_clamped(offgrid):
    """On-grid patches are clamped to their exact interval; off-grid ones only with the paper's
    rule (offgrid_intervals), else they pass unclamped."""
    blocks = torch.randint(-10, 10, (1, 3, 3, 8, 8), dtype=torch.int16)
    qtable = torch.randint(1, 50, (8, 8))
    seen = {}
    for box in (True, False):
        model = _model(box=box)
        model.offgrid_intervals = offgrid
        with torch.no_grad():
            model.net.dct_stage.synthesis.weight.normal_(0, 0.5)
            model.net.pixel_stage.register_forward_hook(lambda m, inp, out, box=box: seen.update({box: inp[0]}))
            model(blocks, qtable)
    clamped, free = (dct_blocks(seen[b].reshape(1, 25, 8, 8)) for b in (True, False))
    on_grid = torch.tensor([(k // 5) % 2 == 0 and (k % 5) % 2 == 0 for k in range(25)])
    own = blocks[0].reshape(9, 8, 8)
    lo, hi = (own.double() - 0.5) * qtable / 255, (own.double() + 0.5) * qtable / 255
    assert ((clamped[0, on_grid].double() >= lo - 1e-5) & (clamped[0, on_grid].double() <= hi + 1e-5)).all()
    assert not torch.allclose(clamped[0, on_grid], free[0, on_grid])
    assert torch.allclose(clamped[0, ~on_grid], free[0, ~on_grid], atol=1e-6) != offgrid
