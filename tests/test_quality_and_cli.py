"""IJG quality estimation and the command line."""
from __future__ import annotations

import json

import numpy as np
import pytest

import kdecode
from kdecode.cli import main
from kdecode.jpeg.quality import estimate_quality, ijg_table
from conftest import ROOT, encode, photo


@pytest.mark.parametrize("quality", [1, 5, 10, 20, 33, 50, 51, 75, 90, 95, 100])
def test_quality_estimate_exact_on_pillow_files(quality):
    c = kdecode.read_coefficients(encode(photo(16, 16, 1), quality=quality))
    assert estimate_quality(c.components[0].qtable) == (quality, True)
    assert estimate_quality(c.components[1].qtable, chroma=True) == (quality, True)
    assert np.array_equal(c.components[0].qtable, ijg_table(quality))


def test_quality_estimate_nearest_for_custom_tables():
    table = ijg_table(40).astype(np.int64)
    table[0, 1] += 1  # no longer an IJG table
    assert estimate_quality(table) == (40, False)
    flat = np.full((8, 8), 255)
    assert estimate_quality(flat)[0] < 10


def test_info(capsys):
    assert main(["info", str(ROOT / "examples" / "example.jpg")]) == 0
    out = capsys.readouterr().out
    assert "320x240" in out and "4:2:0" in out and "estimated IJG quality: 20" in out


def test_info_json(tmp_path, capsys):
    path = tmp_path / "r.jpg"
    path.write_bytes(encode(photo(33, 17, 2), quality=80, progressive=True, restart_marker_rows=1))
    assert main(["info", "--json", str(path)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["width"] == 17 and info["height"] == 33 and info["progressive"] is True
    assert info["quality"] == 80 and info["restart_interval"] > 0 and len(info["components"]) == 3


def test_restore_skips_bad_files_and_fails(tmp_path):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    (src / "a.jpg").write_bytes(encode(photo(20, 30, 3), quality=30))
    (src / "sub" / "b.jpeg").write_bytes(encode(photo(10, 10, 4, gray=True), quality=30))
    (src / "broken.jpg").write_bytes(b"not a jpeg")
    from PIL import Image

    Image.fromarray(photo(12, 14, 5)).convert("CMYK").save(src / "c.jpg", quality=80)
    out = tmp_path / "out"
    assert main(["restore", str(src), "-o", str(out), "--model", "exact", "-q"]) == 1
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png", "c.tiff"]  # PNG has no CMYK
    for name, written in (("a.jpg", "a.png"), ("c.jpg", "c.tiff")):
        assert np.array_equal(np.asarray(Image.open(out / written)),
                              kdecode.decode(src / name, model=None, output="numpy"))
    (src / "broken.jpg").unlink()
    assert main(["restore", str(src), "-o", str(out), "-q"]) == 0


def test_restore_unknown_model(tmp_path):
    assert main(["restore", str(ROOT / "examples" / "example.jpg"), "-o", str(tmp_path), "--model", "nope"]) == 2
