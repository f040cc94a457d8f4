"""Restoring decoders: shapes, the decoder contract, the registry's choice of weights."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from kdecode import decode, list_models, load_model, read_coefficients
from kdecode.errors import KdecodeError
from kdecode.models import registry
from kdecode.models.pixel import build
from kdecode.models.hrcnn import HRCNN
from kdecode.ops import dct_blocks, pad_to_blocks, plane_to_blocks
from kdecode.pipeline import component_blocks, decode_exact

from zoo_helpers import jpeg, need_data, smooth_image


def _params(model):
    return sum(p.numel() for p in model.net.parameters())


def test_parameter_counts_match_the_papers():
    # AR-CNN: 106,448 filter weights (Table I) + biases + PReLU slopes.
    assert _params(build("arcnn")) == 106_448 + (64 + 32 + 16 + 1) + (64 + 32 + 16)
    # Fast AR-CNN 64(9)-32(1)-32(7)-64(1)-1[9]: filter weights by eq. (9).
    weights = 81 * 64 + 64 * 32 + 49 * 32 * 32 + 32 * 64 + 64 * 81
    assert _params(build("fast_arcnn")) == weights + (64 + 32 + 32 + 64 + 1) + (64 + 32 + 32 + 64)
    # DCSC: 0.94e5 parameters in the paper (3x3 kernels, 32 maps per dilation, 64 features).
    assert abs(_params(build("dcsc")) - 94_000) < 1_500


@pytest.mark.parametrize("name", ["arcnn", "fast_arcnn", "dcsc"])
@pytest.mark.parametrize("size", [(16, 24), (17, 23), (9, 40)])
def test_restore_keeps_size(name, size):
    model = build(name, **({"iterations": 2} if name == "dcsc" else {}))
    x = torch.rand(2, 1, *size)
    with torch.no_grad():
        y = model.restore(x)
    assert y.shape == x.shape and y.dtype == torch.float32
    # Freshly built nets start near the identity (last layer initialised near zero).
    assert (y - x).abs().max() < 0.05


@pytest.mark.parametrize("name", ["arcnn", "fast_arcnn"])
def test_edges_are_restored_with_mirrored_context(name, monkeypatch):
    """decode() restores a file as the net restores the image extended by one mirrored block a
    side (which libjpeg encodes to the same mirrored blocks), cropped; with zero padding at the
    edge instead the edge samples differ and the interior does not."""
    img = smooth_image(48, 64, seed=2)
    torch.manual_seed(0)
    model = build(name).eval()
    for p in model.net.parameters():  # a net whose residual is far from zero
        p.data.normal_(0, 0.05)
    assert model.edge_blocks == 1
    with torch.no_grad():
        mirrored = model.decode(read_coefficients(jpeg(img, 20)))[0].int()
        monkeypatch.setattr(model, "edge_blocks", 0)
        reference = model.decode(read_coefficients(jpeg(np.pad(img, 8, mode="symmetric"), 20)))[0, 8:-8, 8:-8].int()
        zero_padded = model.decode(read_coefficients(jpeg(img, 20)))[0].int()
    assert torch.equal(mirrored, reference)
    assert torch.equal(mirrored[20:-20, 20:-20], zero_padded[20:-20, 20:-20])
    assert (mirrored - zero_padded)[:, :4].abs().max() > 1


def _checkerboard(module, args, out):
    """A forward hook: the net's output plus a +-25 grey-level checkerboard, which puts the
    highest frequencies of the output far outside the file's intervals."""
    i, j = torch.arange(out.shape[-2])[:, None], torch.arange(out.shape[-1])
    return out + (25 / 255) * (1 - 2 * ((i + j) % 2)).to(out.dtype)


@pytest.mark.parametrize("name", ["arcnn", "arcnn, no mirrored edge", "hrcnn"])
@pytest.mark.parametrize("size", [(48, 64), (41, 53)])
def test_output_box_gives_back_the_files_coefficients(name, size, monkeypatch):
    """decode() clamps the restored luma into the file's quantization box (``output_box``):
    encoded again with the file's table, its whole blocks give back the file's coefficients
    (but for the few that rounding to 8 bits moves over an interval's edge), which an output
    off the box does not; and the clamp brings that output closer to the original."""
    img = smooth_image(*size, seed=4)
    coeffs = read_coefficients(jpeg(img, 20))
    torch.manual_seed(0)
    model = (HRCNN(init="idct", quality=20, activation="relu") if name == "hrcnn" else build("arcnn")).eval()
    if name.endswith("no mirrored edge"):  # restored at the plane's own size: padded to whole blocks for the box
        monkeypatch.setattr(model, "edge_blocks", 0)
    model.net.register_forward_hook(_checkerboard)
    assert model.output_box
    with torch.no_grad():
        boxed = model.decode(coeffs)[0]
        monkeypatch.setattr(model, "output_box", False)
        raw = model.decode(coeffs)[0]
    blocks, qtable = component_blocks(coeffs, 0)
    rows, cols = size[0] // 8, size[1] // 8  # the whole blocks: the encoder padded the others

    def outside(out: torch.Tensor) -> torch.Tensor:
        """How far each coefficient of re-encoding ``out`` lies outside the file's interval, in
        quantization steps (<= 0: inside)."""
        x = dct_blocks(plane_to_blocks(pad_to_blocks(out.double()) - 128)) / qtable
        return ((x - blocks).abs() - 0.5)[:rows, :cols]

    # Rounding to 8 bits moves a coefficient by at most 8 (half the sum of a basis function's
    # absolute values, <= 64 / 4): all that the clamped output may exceed its interval by.
    assert (outside(boxed) <= 8 / qtable).all()
    assert (outside(raw)[..., 7, 7] > 0).double().mean() > 0.9  # the checkerboard's coefficient
    original = torch.from_numpy(img).double()
    assert ((boxed.double() - original) ** 2).mean() < ((raw.double() - original) ** 2).mean()


def _zero_net(name="arcnn"):
    model = build(name)
    for p in model.net.parameters():
        torch.nn.init.zeros_(p)
    return model


def test_untrained_restorer_is_the_float_decode():
    """With a zero residual the restorer returns the float-IDCT luma rounded: within one grey
    level of libjpeg's integer decode; chroma untouched."""
    gray = read_coefficients(jpeg(smooth_image(37, 45), 30))
    out = _zero_net().decode(gray)
    exact = decode_exact(gray)
    assert out.shape == exact.shape == (1, 37, 45) and out.dtype == torch.uint8
    assert (out.int() - exact.int()).abs().max() <= 1

    color = read_coefficients(jpeg(smooth_image(33, 50, color=True), 30))
    out = _zero_net("fast_arcnn").decode(color)
    exact = decode_exact(color)
    assert out.shape == exact.shape == (3, 33, 50)
    assert (out.int() - exact.int()).abs().max() <= 3  # luma +-1 spreads through YCbCr -> RGB


def _fake_weights(folder, stem, model, qualities):
    from safetensors.torch import save_file

    net = build(model).net
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(folder / f"{stem}.safetensors"))
    card = {"model": model, "qualities": qualities, "arch_kwargs": {}, "metrics": {}}
    (folder / f"{stem}.json").write_text(json.dumps(card))


def test_select_card_nearest_quality(tmp_path):
    for q in (10, 20, 30, 40):
        _fake_weights(tmp_path, f"arcnn_q{q}", "arcnn", [q])
    pick = lambda q: registry.select_card("arcnn", q, tmp_path)["qualities"]  # noqa: E731
    assert pick(10) == [10] and pick(12) == [10] and pick(18) == [20] and pick(37) == [40]
    assert pick(15) == [10]  # a tie goes to the stronger restoration
    assert pick(95) == [40] and pick(1) == [10] and pick(None) == [10]
    with pytest.raises(KdecodeError, match="no weights"):
        registry.select_card("dcsc", 10, tmp_path)


def test_registry_names_and_errors():
    assert {"exact", "arcnn", "fast_arcnn", "dcsc"} <= set(list_models())
    with pytest.raises(KdecodeError, match="unknown model"):
        load_model("nope")
    assert registry.resolve_model("auto", quality=90) == "exact"
    assert registry.resolve_model(None) == "exact"


SHIPPED = registry.shipped_cards()


@pytest.mark.skipif(not SHIPPED, reason="no weights shipped in kdecode/weights")
@pytest.mark.parametrize("card", SHIPPED, ids=[c["_weights"].rsplit("/", 1)[-1] for c in SHIPPED])
def test_shipped_card_is_complete(card):
    for key in ("model", "architecture", "parameters", "qualities", "training", "metrics"):
        assert key in card
    for key in ("data", "steps", "wall_time_s", "device"):
        assert key in card["training"]
    model = registry.load_weights(card)
    assert _params(model) == card["parameters"]
    for dataset in ("LIVE1_gray", "Classic5"):
        for q in card["qualities"]:
            scores = card["metrics"][dataset][str(q)]
            assert set(scores["model"]) == {"psnr", "ssim", "psnrb"}


@pytest.mark.skipif(not SHIPPED, reason="no weights shipped in kdecode/weights")
def test_decode_restores_with_weights_nearest_the_file_quality():
    """decode(model=...) estimates the file's quality and uses the nearest weights: a q10
    file restored by AR-CNN gets closer to the original than the plain decode."""
    data = need_data("Classic5")
    y = np.asarray(Image.open(data / "Classic5" / "lena.png").convert("L"))[:128, :128]
    blob = jpeg(y, 10)
    name = next(c["model"] for c in SHIPPED if c["model"] in ("fast_arcnn", "arcnn"))
    restored = np.asarray(decode(blob, model=name))
    plain = np.asarray(decode(blob, model=None))
    err = lambda a: np.mean((a.astype(float) - y) ** 2)  # noqa: E731
    assert err(restored) < 0.9 * err(plain)
    assert registry.select_card(name, 12)["qualities"] == [10]


@pytest.mark.parametrize("grad", [True, False])
def test_fast_arcnn_subpixel_equals_the_deconvolution(grad):
    torch.manual_seed(0)
    net = build("fast_arcnn").net
    torch.nn.init.normal_(net.deconv.weight, std=0.1)
    torch.nn.init.normal_(net.deconv.bias)
    x = torch.rand(2, 1, 34, 46)
    with torch.set_grad_enabled(grad):
        ref = net.deconv(net.layers(x))
        assert torch.allclose(net(x), ref, atol=1e-5)
        with torch.no_grad():
            net.deconv.weight.mul_(2)  # the inference cache follows weight updates
        assert torch.allclose(net(x), net.deconv(net.layers(x)), atol=1e-5)


def test_models_loaded_inside_inference_mode_are_ordinary():
    # decode_iter picks (and so first loads) its decoders inside torch.inference_mode(): the
    # parameters must still be ordinary tensors (Fast AR-CNN keys its inference cache on their
    # version counter, which inference tensors lack; and they could never be trained).
    from conftest import encode, photo

    with torch.inference_mode():
        model = load_model("fast_arcnn", quality=10)
        image = model.decode(read_coefficients(encode(photo(40, 56, 1), quality=12, subsampling="4:2:0")), "cpu")
    assert not any(p.is_inference() for p in model.parameters())
    assert image.shape == (3, 40, 56)
