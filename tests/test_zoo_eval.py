"""The evaluation protocol reproduces the published JPEG baselines (../shared/data/README.md)."""
import numpy as np
import pytest
from PIL import Image

from kdecode.jpeg.reader import read_coefficients
from kdecode.metrics import psnr
from kdecode.models.base import ExactDecoder
from kdecode.pipeline import decode_exact
from kdecode.train.cli import main
from kdecode.train.data import image_files, jpeg_bytes, luma
from kdecode.train.evaluate import evaluate, format_table

from zoo_helpers import need_data


@pytest.mark.parametrize("quality,published", [(10, 27.77), (40, 32.35)])
def test_live1_jpeg_baseline_psnr(quality, published):
    data = need_data("LIVE1_gray")
    scores = []
    for path in image_files(data / "LIVE1_gray"):
        y = luma(Image.open(path))
        scores.append(psnr(y, decode_exact(read_coefficients(jpeg_bytes(y, quality)))[0]))
    assert round(float(np.mean(scores)), 2) == published


def test_classic5_jpeg_row_and_table():
    """PSNR and PSNR-B of plain JPEG on Classic5 q10 as published (27.82 / 25.21); SSIM as
    scikit-image computes it (0.7595 with the 11x11 Gaussian window)."""
    data = need_data("Classic5")
    r = evaluate(ExactDecoder(), data / "Classic5", 10, progress=False)
    assert r["images"] == 5
    assert round(r["jpeg"]["psnr"], 2) == 27.82 and round(r["jpeg"]["psnrb"], 2) == 25.21
    assert round(r["jpeg"]["ssim"], 4) == 0.7595
    assert r["model"] == r["jpeg"]  # the exact decoder is the JPEG row
    table = format_table([r], "exact")
    assert "| Classic5 | 10 | 27.82 | 0.7595 | 25.21 |" in table


def test_eval_command(tmp_path, capsys):
    folder = tmp_path / "set"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (24, 32)).astype(np.uint8)).save(folder / "a.png")
    assert main(["eval", "--quality", "50", "--data", str(folder), "--json", str(tmp_path / "r.json"), "-q"]) == 0
    out = capsys.readouterr().out
    assert "| set | 50 |" in out and (tmp_path / "r.json").is_file()
