"""HR-CNN: the paper's network, a decoder from coefficients on any grid, trained by the zoo's
pipeline. Small images only: the network costs ~250k multiply-adds per pixel."""
import importlib
import json
import shutil

import numpy as np
import pytest
import torch

from kdecode import decode, list_models, read_coefficients
from kdecode.errors import KdecodeError
from kdecode.models import registry
from kdecode.models import hrcnn
from kdecode.models.hrcnn import HRCNN, coded_masks
from kdecode.ops import blocks_to_planes
from kdecode.pipeline import component_blocks, decode_exact
from kdecode.train.cli import main as train_main

from test_zoo_train import _tiny_data
from zoo_helpers import adam_losses, check_decode_shape, jpeg, smooth_image


def _params(module):
    return sum(p.numel() for p in module.parameters())


def _model(**kw):
    torch.manual_seed(0)
    return HRCNN(**kw).eval()


def test_parameter_counts_match_table_iii():
    net = _model().net
    decoding = _params(net.spectral) + _params(net.decode5) + _params(net.decode3)
    assert decoding == 275_089 and _params(net.blocks) == 232_068 and _params(net) == 507_157
    # The masks are a constant: not a parameter, not part of the weights file.
    assert "masks" not in net.state_dict() and all(p is not net.masks for p in net.parameters())


def test_channel_extraction_takes_one_coefficient_per_channel():
    """Channel 8v+u of the extracted tensor is coefficient [v, u] of every block (eq. 2, 4)."""
    blocks = torch.randint(-50, 50, (2, 3, 5, 8, 8), dtype=torch.int16)
    model = _model()
    channels = model.net.extract(model.kspace(blocks, torch.ones(8, 8)))
    assert channels.shape == (2, 64, 3, 5)
    assert torch.equal(channels, blocks.float().permute(0, 3, 4, 1, 2).reshape(2, 64, 3, 5))
    assert torch.equal(coded_masks().sum((1, 2, 3)), torch.ones(64))


def test_dequantized_input_uses_the_real_table():
    coeffs = read_coefficients(jpeg(smooth_image(24, 32), 30))
    blocks, qtable = component_blocks(coeffs, 0)
    kspace = _model(input="dequantized").kspace(blocks[None], qtable)
    assert torch.allclose(kspace[0, 0, :8, :8], blocks[0, 0].float() * qtable / 255)
    assert torch.equal(_model().kspace(blocks[None], qtable)[0, 0, :8, 8:16], blocks[0, 1].float())


@pytest.mark.parametrize("mode", ["quantized", "dequantized"])
def test_idct_start_is_the_jpeg_decode(mode):
    """init="idct" starts at the float decode: within one grey level of libjpeg's decode."""
    coeffs = read_coefficients(jpeg(smooth_image(40, 56), 20))
    torch.manual_seed(0)
    with torch.no_grad():
        out = HRCNN(input=mode, quality=20, init="idct").decode(coeffs)
    assert (out.int() - decode_exact(coeffs).int()).abs().max() <= 1


def test_masks_stay_fixed_under_an_optimizer_step():
    model = HRCNN().train()
    before = {k: v.clone() for k, v in model.net.state_dict().items()}
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    blocks = torch.randint(-20, 20, (2, 2, 2, 8, 8), dtype=torch.int16)
    kspace = model.kspace(blocks, torch.ones(8, 8)).requires_grad_(True)
    loss = model.net(kspace).square().mean()
    loss.backward()
    opt.step()
    assert torch.equal(model.net.masks, coded_masks())
    assert not torch.equal(before["spectral.weight"], model.net.spectral.weight)
    # Every input position feeds exactly one channel: the input gradient is the extraction's adjoint.
    assert kspace.grad.abs().sum() > 0


@pytest.mark.parametrize("size, color", [((1, 1), False), ((9, 40), False), ((37, 45), False), ((33, 50), True),
                                         ((16, 24), True)])
def test_decode_any_size_gray_and_colour(size, color):
    check_decode_shape(_model(), size, color)


def test_colour_file_keeps_exact_chroma():
    """Only luma is restored: with the luma plane taken from the exact decode, the colour image
    would be the exact decode, so the restored image differs from it only through luma."""
    coeffs = read_coefficients(jpeg(smooth_image(32, 48, color=True), 30, subsampling=0))
    model = _model()
    exact_luma = blocks_to_planes(*component_blocks(coeffs, 0), exact=True)
    model._restore_luma = lambda c, d: exact_luma  # noqa: E731 (the hook decode() calls)
    assert torch.equal(model.decode(coeffs), decode_exact(coeffs))


def test_tiled_inference_equals_the_whole_grid(monkeypatch):
    """Large inputs run in tiles with 5 blocks of context: the same numbers as one call."""
    blocks = torch.randint(-30, 30, (1, 8, 40, 8, 8), dtype=torch.int16)
    qtable = torch.ones(8, 8)
    torch.manual_seed(0)
    model = HRCNN(init="idct", quality=50)
    calls = []
    model.net.register_forward_hook(lambda *args: calls.append(1))
    with torch.no_grad():
        whole = model(blocks, qtable)
        monkeypatch.setattr(model, "max_call_samples", (8 * 17) ** 2)  # 7-block tiles + 5-block margins
        tiled = model(blocks, qtable)
    assert len(calls) == 1 + 2 * 6
    assert torch.allclose(whole, tiled, atol=1e-5)


def test_a_large_batch_runs_as_whole_images_not_tiles(monkeypatch):
    """A batch over the call size is split by images (no margins computed twice), each call
    as many whole images as fit, with each image's own table; the numbers are the one-call ones."""
    blocks = torch.randint(-30, 30, (5, 6, 7, 8, 8), dtype=torch.int16)
    qtables = torch.randint(2, 40, (5, 8, 8))
    torch.manual_seed(0)
    model = HRCNN(init="idct", quality=30, activation="relu")
    inputs = []
    model.net.register_forward_hook(lambda module, args, out: inputs.append(tuple(args[0].shape)))
    with torch.no_grad():
        whole = model(blocks, qtables)
        monkeypatch.setattr(model, "max_call_samples", 2 * 48 * 56 + 100)  # two images a call
        parts = model(blocks, qtables)
    assert inputs == [(5, 1, 48, 56), (2, 1, 48, 56), (2, 1, 48, 56), (1, 1, 48, 56)]
    assert torch.allclose(whole, parts, atol=1e-5)


def test_edges_are_restored_with_mirrored_context(monkeypatch):
    """decode() restores a file as the network restores the mirror-extended image, which
    libjpeg encodes to the same mirrored blocks (``edge_blocks``, here 2, a side): the zero
    padding of the convolutions falls outside the image. Farther from the edge than the
    receptive field's 35 samples, the result is the zero-padded one."""
    img = smooth_image(96, 112, seed=1)
    extended = np.pad(img, 16, mode="symmetric")  # 2 blocks a side
    torch.manual_seed(0)
    model = HRCNN(init="idct", quality=20, activation="relu").eval()
    assert model.edge_blocks == 1
    monkeypatch.setattr(model, "edge_blocks", 2)
    with torch.no_grad():
        mirrored = model.decode(read_coefficients(jpeg(img, 20)))[0]
        monkeypatch.setattr(model, "edge_blocks", 0)
        zero_padded = model.decode(read_coefficients(jpeg(img, 20)))[0]
        reference = model.decode(read_coefficients(jpeg(extended, 20)))[0, 16:-16, 16:-16]
    assert torch.equal(mirrored, reference)
    assert torch.equal(mirrored[40:-40, 40:-40], zero_padded[40:-40, 40:-40])
    assert not torch.equal(mirrored, zero_padded)


def test_batch_equals_one_by_one():
    files = [read_coefficients(jpeg(smooth_image(40, 48, seed=s), 20)) for s in range(2)]
    files.append(read_coefficients(jpeg(smooth_image(17, 30, seed=3), 20)))
    model = _model()
    with torch.no_grad():
        many = model.decode_many(files)
        single = [model.decode(c) for c in files]
    assert all(torch.equal(a, b) for a, b in zip(many, single))
    assert many[2].shape == (1, 17, 30)


def test_restore_from_planes_is_the_decode_from_coefficients():
    """Training feeds HR-CNN the stored float planes; restore() turns them back into the file's
    coefficients, so training sees exactly what decode() sees."""
    coeffs = read_coefficients(jpeg(smooth_image(32, 48), 20))
    blocks, qtable = component_blocks(coeffs, 0)
    plane = blocks_to_planes(blocks, qtable)[None, None] / 255.0
    for mode in ("quantized", "dequantized"):
        model = _model(input=mode, quality=20)
        with torch.no_grad():
            assert torch.equal(model.restore(plane), model(blocks[None], qtable))
    with pytest.raises(ValueError, match="training quality"):
        _model().restore(plane)


@pytest.mark.parametrize("mode", ["quantized", "dequantized"])
def test_training_steps_lower_the_loss(mode):
    ys = [smooth_image(16, 16, seed=s) for s in range(4)]
    coeffs = [read_coefficients(jpeg(y, 10)) for y in ys]
    blocks = torch.stack([component_blocks(c, 0)[0] for c in coeffs])
    qtable = component_blocks(coeffs[0], 0)[1]
    target = torch.from_numpy(np.stack(ys)).float()[:, None] / 255
    model = HRCNN(input=mode).train()
    torch.manual_seed(0)
    losses = adam_losses(model, lambda: torch.nn.functional.mse_loss(model(blocks, qtable), target), steps=6, lr=5e-4)
    assert losses[-1] < 0.5 * losses[0]


def test_train_command_card_and_registry(tmp_path, monkeypatch):
    _tiny_data(tmp_path)
    run = tmp_path / "run"
    args = ["train", "--model", "hrcnn", "--quality", "20", "--input", "dequantized", "--data-root", str(tmp_path),
            "--train-sets", "train", "--val-set", "val", "--val-images", "1", "--steps", "2", "--batch", "2",
            "--patch", "32", "--warmup", "1", "--out", str(run), "-q"]
    assert train_main(args) == 0
    card = json.loads((run / "hrcnn_q20.json").read_text())
    assert card["model"] == "hrcnn" and card["qualities"] == [20] and card["parameters"] == 507_157
    assert card["arch_kwargs"] == {"input": "dequantized", "quality": 20, "init": "idct", "activation": "none"}
    assert not card["cpu_friendly"] and "dequantized" in card["training"]["jpeg"]
    # Loaded through the registry, from that folder: same weights, a working decoder.
    picked = registry.select_card("hrcnn", 25, run)
    model = registry.load_weights(picked)
    assert isinstance(model, HRCNN) and model.input == "dequantized"
    # map_location: training ran on the GPU where there is one; the registry loads on the CPU.
    saved = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=False)["model"]
    assert all(torch.equal(v, saved[f"net.{k}"]) for k, v in model.net.state_dict().items())
    coeffs = read_coefficients(jpeg(smooth_image(20, 28), 20))
    with torch.no_grad():
        assert model.decode(coeffs).shape == (1, 20, 28)
    # One model per quality, as in the paper.
    assert train_main(args[:4] + ["10", "20"] + args[5:]) == 2

    # Shipped (here: in a stand-in weights folder), decode(model="hrcnn") uses it; "auto" does
    # not pick it (not cpu_friendly; no measured LIVE1 table on a GPU either).
    shipped = tmp_path / "weights"
    shipped.mkdir()
    for suffix in (".safetensors", ".json"):
        shutil.copy2(run / f"hrcnn_q20{suffix}", shipped / f"hrcnn_q20{suffix}")
    monkeypatch.setattr(registry, "WEIGHTS_DIR", shipped)
    monkeypatch.setattr(importlib.import_module("kdecode.decode"), "_model_cache", {})
    image = decode(jpeg(smooth_image(20, 28, color=True), 25), model="hrcnn")
    assert image.size == (28, 20) and image.mode == "RGB"
    assert registry.resolve_model("auto", "cpu", 20) != "hrcnn"
    assert registry.resolve_model("auto", "cuda", 20) != "hrcnn"


def test_registered():
    assert "hrcnn" in list_models()
    if not registry.shipped_cards("hrcnn"):
        with pytest.raises(KdecodeError, match="no weights"):
            registry.load_model("hrcnn")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_decode_matches_cpu():
    files = [read_coefficients(jpeg(smooth_image(40, 56, seed=s, color=s == 1), 20)) for s in range(2)]
    model = _model()
    with torch.no_grad():
        cpu = [model.decode(c, "cpu") for c in files]
        gpu = model.decode_many(files, "cuda")
    for a, b in zip(cpu, gpu):
        assert a.shape == b.shape and (a.int() - b.cpu().int()).abs().max() <= 1


@pytest.mark.parametrize("activation, linear", [("none", True), ("relu", False)])
def test_residual_blocks_are_linear_as_printed(activation, linear):
    # Eq. (7) as printed has no activation inside a block: the block is an affine map (so the
    # four of them are one linear filter). activation="relu" makes it nonlinear, with the same
    # parameters.
    torch.manual_seed(0)
    block = hrcnn.ResidualBlock(activation)
    for layer in block.layers:
        if isinstance(layer, torch.nn.Conv2d):
            torch.nn.init.normal_(layer.weight, std=0.1)
    x = torch.randn(1, 1, 24, 24)
    with torch.no_grad():
        f = lambda v: block(v) - block(torch.zeros_like(v))  # noqa: E731 (the bias removed)
        assert torch.allclose(f(2 * x), 2 * f(x), atol=1e-4) == linear
    model = HRCNN(activation=activation)
    assert sum(p.numel() for p in model.net.parameters()) == 507_157
    with pytest.raises(ValueError, match="activation"):
        HRCNN(activation="gelu")


def test_quantized_input_counts_steps_of_the_training_table():
    # The paper feeds the integer coefficients, which count steps of the file's table; the
    # network learned steps of its training table. A file with another table is rescaled to
    # those steps (unrounded); a file with the training table goes in as its integers.
    from kdecode.jpeg.quality import ijg_table

    model = HRCNN(quality=10)
    blocks = torch.randint(-20, 20, (1, 2, 3, 8, 8), dtype=torch.int16)
    for q in (10, 37):
        table = torch.from_numpy(ijg_table(q).astype("int32"))
        want = blocks.float() * table.float() / torch.from_numpy(ijg_table(10).astype("float32"))
        assert torch.allclose(model.kspace(blocks, table), blocks_to_planes_input(want), rtol=1e-6, atol=0)
    assert torch.equal(model.kspace(blocks, torch.from_numpy(ijg_table(10).astype("int32"))),
                       blocks_to_planes_input(blocks.float()))


@pytest.mark.parametrize("source_input, target_input, target_quality", [
    ("quantized", "quantized", 30), ("dequantized", "dequantized", 30), ("quantized", "dequantized", 10),
    ("dequantized", "quantized", 30), ("quantized", "dequantized", 30)])
def test_init_from_other_weights_starts_where_they_are(tmp_path, source_input, target_input, target_quality):
    """--init-from q10 weights for a run of another quality or the other input: the start
    restores files of any table exactly as the old weights do. The inputs differ by a fixed
    factor per coefficient (255 / the training table's entry for quantized input, 1 for
    dequantized) that the spectral layer's weights absorb, so the two inputs are one family of
    networks: the input is how Adam sees the first layer, not what the network can compute
    (docs/hrcnn.md)."""
    from safetensors.torch import save_file

    from kdecode.train.loop import _load_init

    torch.manual_seed(0)
    source = HRCNN(input=source_input, quality=10, init="idct", activation="relu")
    save_file({k: v.contiguous() for k, v in source.net.state_dict().items()}, str(tmp_path / "hrcnn_q10.safetensors"))
    (tmp_path / "hrcnn_q10.json").write_text(json.dumps({"arch_kwargs": {"quality": 10, "input": source_input}}))
    start = HRCNN(input=target_input, quality=target_quality, activation="relu")
    _load_init(start, str(tmp_path))
    for quality in (10, 37, 80):
        coeffs = read_coefficients(jpeg(smooth_image(40, 48), quality))
        blocks, qtable = component_blocks(coeffs, 0)
        with torch.no_grad():
            a, b = start(blocks[None], qtable), source(blocks[None], qtable)
            assert torch.allclose(a, b, atol=1e-5), quality
            assert (a - 0.5).abs().max() > 0.05  # not a flat output that any weights would match
            assert torch.allclose(start.decode(coeffs).float(), source.decode(coeffs).float(), atol=1)
    moved = not torch.equal(start.net.spectral.weight, source.net.spectral.weight)
    assert moved == (source_input == "quantized" or target_input == "quantized")


def blocks_to_planes_input(x):
    from kdecode.ops import blocks_to_plane

    return blocks_to_plane(x).unsqueeze(1)


@pytest.mark.skipif(not registry.shipped_cards("hrcnn"), reason="no HR-CNN weights shipped")
@pytest.mark.parametrize("quality", [15, 40])
def test_shipped_weights_restore_files_of_other_qualities(quality):
    # Weights trained at q10..50 restore a file of any quality (the nearest weights, the file's
    # coefficients in their table's steps): better than the plain decode, not garbage.
    from conftest import encode, photo
    from kdecode.metrics import psnr

    img = photo(96, 128, 3, gray=True)
    data = encode(img, quality=quality)
    plain, restored = (psnr(torch.from_numpy(img), torch.from_numpy(decode(data, model=m, output="numpy")))
                       for m in (None, "hrcnn"))
    assert restored > plain + 0.1
