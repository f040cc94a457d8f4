"""tools/ship.py: a run's weights and card go into the weights folder with the record of how
they came to be; sibling runs can be shipped as their weight average."""
import importlib.util
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def ship(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("ship", ROOT / "tools" / "ship.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "WEIGHTS", tmp_path / "weights")
    (tmp_path / "weights").mkdir()
    return module


def _run(folder: Path, seed: int, tensors: dict, steps=100, **training) -> Path:
    folder.mkdir()
    save_file(tensors, str(folder / "hrcnn_q10.safetensors"))
    card = {"model": "hrcnn", "arch_kwargs": {"activation": "relu"}, "qualities": [10],
            "training": {"seed": seed, "steps": steps, "wall_time_s": 60.0, "device": "cpu",
                         "init_from": "hrcnn_q10.safetensors", "batch": 8,
                         "validation": {"psnr": {"10": 27.9}}, **training}}
    (folder / "hrcnn_q10.json").write_text(json.dumps(card))
    return folder


def test_average_of_sibling_runs(ship, tmp_path):
    a = {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor([0.5])}
    b = {"w": torch.tensor([3.0, 6.0]), "b": torch.tensor([1.5])}
    run_a = _run(tmp_path / "a", 1, a, steps=100)
    run_b = _run(tmp_path / "b", 2, b, steps=120)
    ship.main([str(run_a), "--average", str(run_b), "--half"])
    shipped = load_file(str(tmp_path / "weights" / "hrcnn_q10.safetensors"))
    assert shipped["w"].dtype == torch.float16
    assert torch.equal(shipped["w"].float(), torch.tensor([2.0, 4.0]))
    assert torch.equal(shipped["b"].float(), torch.tensor([1.0]))
    card = json.loads((tmp_path / "weights" / "hrcnn_q10.json").read_text())
    runs = card["training"]["weight_average"]["runs"]
    assert [(r["run"], r["seed"], r["steps"]) for r in runs] == [("a", 1, 100), ("b", 2, 120)]
    assert card["training"]["seed"] == 1 and card["status"].startswith("not final")
    assert "mean of 2 such runs" in card["status"]


def test_average_across_peak_learning_rates_and_lengths(ship, tmp_path):
    """Runs from one start that differ only in the peak learning rate and the schedule's length
    average; the card keeps each run's optimizer."""
    t = {"w": torch.zeros(2)}
    run_a = _run(tmp_path / "a", 1, t, optimizer="Adam lr 0.0002 -> 1e-05 (warm-up 20, cosine over 60 s)")
    run_b = _run(tmp_path / "b", 2, t, optimizer="Adam lr 0.0001 -> 1e-05 (warm-up 20, cosine over 45 s)")
    ship.main([str(run_a), "--average", str(run_b)])
    card = json.loads((tmp_path / "weights" / "hrcnn_q10.json").read_text())
    assert [r["optimizer"][:12] for r in card["training"]["weight_average"]["runs"]] == ["Adam lr 0.00"] * 2
    assert [r["optimizer"].split()[2] for r in card["training"]["weight_average"]["runs"]] == ["0.0002", "0.0001"]


@pytest.mark.parametrize("other", [{"init_from": "other.safetensors"}, {"batch": 16},
                                   {"optimizer": "Adam lr 0.0002 -> 1e-06 (warm-up 20, cosine over 60 s)"},
                                   {"optimizer": "Adam lr 0.0002 -> 1e-05 (warm-up 20, linear over 60 s)"},
                                   {"optimizer": "SGD lr 0.0002 -> 1e-05 (warm-up 20, cosine over 60 s)"}],
                         ids=["start", "recipe", "floor", "schedule", "optimizer"])
def test_average_refuses_runs_that_are_not_siblings(ship, tmp_path, other):
    t = {"w": torch.zeros(2)}
    adam = {"optimizer": "Adam lr 0.0002 -> 1e-05 (warm-up 20, cosine over 60 s)"}
    run_a = _run(tmp_path / "a", 1, t, **adam)
    run_b = _run(tmp_path / "b", 2, t, **{**adam, **other})
    with pytest.raises(SystemExit, match="not a sibling"):
        ship.main([str(run_a), "--average", str(run_b)])
    assert not (tmp_path / "weights" / "hrcnn_q10.safetensors").exists()


def test_restatus_leaves_models_without_figures_alone(ship, tmp_path):
    # AR-CNN's figures closed with its issue: its cards (no "status", final to the registry)
    # must come out of a ship/restatus byte for byte, siblings included.
    texts = {}
    for q in (10, 20):
        path = tmp_path / "weights" / f"arcnn_q{q}.json"
        path.write_text(json.dumps({"model": "arcnn", "qualities": [q], "metrics": {}}))
        texts[path] = path.read_text()
    ship.restatus("arcnn")
    assert {p: p.read_text() for p in texts} == texts


def test_restatus_rejects_a_card_name(ship):
    # "hrcnn_q10" is a card of hrcnn, whose figures are open: a silent no-op would leave its
    # status stale after `kdecode eval --update-card`.
    with pytest.raises(SystemExit, match="not a card: 'hrcnn'"):
        ship.restatus("hrcnn_q10")


def test_average_of_stages_records_each_stage_and_the_choice(ship, tmp_path, capsys):
    """--stages: a run and the stages it continued from (another start, loss, schedule and
    copies of the files) ship as their mean; the card lists each stage and what chose the mean."""
    first = _run(tmp_path / "s1", 1, {"w": torch.tensor([1.0, 3.0])}, steps=500, loss="mse",
                 optimizer="Adam lr 0.0001 -> 1e-05 (warm-up 50, cosine over 7200 s)", augmentation="flips")
    last = _run(tmp_path / "s2", 2, {"w": torch.tensor([2.0, 5.0])}, steps=300, loss="mse, output term psnr",
                init_from="s1.safetensors", optimizer="Adam lr 5e-05 -> 1e-05 (warm-up 50, cosine over 6000 s)",
                augmentation="flips, files also transposed")
    with pytest.raises(SystemExit, match="not a sibling"):
        ship.main([str(last), "--average", str(first)])
    with pytest.raises(SystemExit) as refused:  # the choice must be recorded
        ship.main([str(last), "--average", str(first), "--stages"])
    assert refused.value.code == 2 and "--stages needs --chosen-on" in capsys.readouterr().err
    assert not (tmp_path / "weights" / "hrcnn_q10.safetensors").exists()
    ship.main([str(last), "--average", str(first), "--stages", "--chosen-on", "BSD68: 28.44 vs 28.43"])
    assert torch.equal(load_file(str(tmp_path / "weights" / "hrcnn_q10.safetensors"))["w"], torch.tensor([1.5, 4.0]))
    card = json.loads((tmp_path / "weights" / "hrcnn_q10.json").read_text())
    average = card["training"]["weight_average"]
    assert [(r["run"], r["init_from"], r["loss"], r["augmentation"]) for r in average["runs"]] == [
        ("s2", "s1.safetensors", "mse, output term psnr", "flips, files also transposed"),
        ("s1", "hrcnn_q10.safetensors", "mse", "flips")]
    assert average["chosen_on"] == "BSD68: 28.44 vs 28.43" and "one line of training" in average["how"]
    assert "mean of 2 stages" in card["status"]


def test_average_of_stages_refuses_other_data(ship, tmp_path):
    first = _run(tmp_path / "s1", 1, {"w": torch.zeros(2)}, patch=112)
    last = _run(tmp_path / "s2", 2, {"w": torch.zeros(2)}, patch=64)
    with pytest.raises(SystemExit, match="not a stage"):
        ship.main([str(last), "--average", str(first), "--stages", "--chosen-on", "BSD68"])
    assert not (tmp_path / "weights" / "hrcnn_q10.safetensors").exists()


def test_status_names_a_shortfall_finer_than_the_target(ship):
    """A figure a few thousandths short reads as short (29.4970 < 29.50), not "29.50 < 29.50";
    one at the target is final."""
    def card(psnr):
        return {"model": "dmcnn", "qualities": [10],
                "metrics": {"LIVE1_gray": {"10": {"jpeg": {"psnr": 27.77}, "model": {"psnr": psnr}}}},
                "training": {"device": "cpu", "wall_time_s": 60}}
    assert "q10 LIVE1_gray PSNR 29.4970 < target 29.50" in ship.status(card(29.497))
    assert ship.status(card(29.5)) == "final"
