"""scripts/run_grid.py: config checks, a tiny real grid, and resuming without redoing finished cells."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from saliencyssl.embedded import write_embedded_dataset
from saliencyssl.eval.grid import GridConfig, StaleCellError, cells, policy_gap, run_grid

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import run_grid as run_grid_cli  # noqa: E402  (scripts/run_grid.py)


def _write(tmp_path: Path, **overrides) -> Path:
    data = write_embedded_dataset(tmp_path / "data", per_class_train=6, per_class_test=3, size=32, photos=False)
    config = {
        "name": "tiny", "out": str(tmp_path / "grid"), "train": str(data["train"]), "test": str(data["test"]),
        "cache": str(tmp_path / "cache"), "methods": ["simclr"], "policies": ["default", "sal"],
        "pretrain": {"image_size": 32, "epochs": 1, "batch_size": 8, "device": "cpu", "seed": 0, "knn_every": 1},
        "evaluation": {"fractions": "0.5,1.0", "protocols": ["linear", "knn"], "seeds": 2, "no_cache": True},
        **overrides}
    path = tmp_path / "grid.json"
    path.write_text(json.dumps(config))
    return path


def test_config_errors_name_the_file_and_key(tmp_path):
    path = _write(tmp_path, colour="blue")
    with pytest.raises(ValueError, match="unknown keys.*colour"):
        GridConfig.load(path)
    with pytest.raises(ValueError, match="policy 'salt'"):
        GridConfig.load(_write(tmp_path, policies=["salt"]))
    with pytest.raises(ValueError, match="unknown method"):
        GridConfig.load(_write(tmp_path, methods=["dino"]))
    with pytest.raises(FileNotFoundError, match="configs/"):
        GridConfig.load(tmp_path / "nope.json")
    assert run_grid_cli.main([str(tmp_path / "nope.json")]) == 2


def test_results_are_named_after_the_evaluation(tmp_path):
    assert GridConfig.load(_write(tmp_path)).results_stem == "grid"
    assert GridConfig.load(_write(tmp_path, evaluation_name="evals_full")).results_stem == "evals_full"


def test_shipped_configs_load():
    for path in (REPO / "configs").glob("*.json"):
        config = GridConfig.load(path)
        assert cells(config), path


def test_tiny_grid_runs_collects_and_skips_finished_cells(tmp_path, monkeypatch, capsys):
    path = _write(tmp_path)
    config = GridConfig.load(path)
    rows = run_grid(config, progress=False)
    out = Path(config.out)
    assert {(r["policy"], r["protocol"], r["fraction"]) for r in rows} >= {
        ("default", "linear", "0.5"), ("sal", "knn", "1.0"), ("random init", "linear", "1.0")}
    assert (out / "grid_results.md").read_text().count("| simclr |") == 4
    assert (out / "grid_simclr_linear.png").is_file() and (out / "grid_results.csv").is_file()
    capsys.readouterr()
    assert run_grid_cli.main([str(path), "--collect-only", "--quiet"]) == 0
    assert f"table: {out}/grid_results.md" in capsys.readouterr().out
    monitored = [r["pretrain_final_knn"] for r in rows if r["method"] == "simclr"]
    assert all(0.0 <= k <= 1.0 for k in monitored), "knn_every monitors kNN on the grid's train/test sets"

    sal, ref = (json.loads((out / "evals" / f"simclr__{p}" / "results.json").read_text())["linear"]
                for p in ("sal", "default"))
    gap = policy_gap(rows, "sal", "default", "linear")
    assert gap["fractions"] == ["0.5", "1.0"]
    assert gap["mean_gap"] == pytest.approx(sum(sal[f]["accuracy_mean"] - ref[f]["accuracy_mean"]
                                                for f in ("0.5", "1.0")) / 2)
    assert gap["spread"] == max(e["accuracy_std"] for e in (*sal.values(), *ref.values()))
    assert policy_gap(rows, "sal", "sal+default", "linear") is None  # not in this grid

    calls = []
    monkeypatch.setattr("saliencyssl.ssl.pretrain.Pretrainer.run", lambda self: calls.append(self))
    assert len(run_grid(config, progress=False)) == len(rows)
    assert calls == [], "finished cells are not pretrained again"

    # A finished cell made with other settings than the config now asks for is refused, not reused.
    changed = GridConfig.load(_write(tmp_path, pretrain={**config.pretrain, "epochs": 3}))
    with pytest.raises(StaleCellError, match="epochs 1 .config: 3."):
        run_grid(changed, progress=False)
    changed = GridConfig.load(_write(tmp_path, evaluation={**config.evaluation, "fractions": "0.25,1.0"}))
    with pytest.raises(StaleCellError, match="fractions"):
        run_grid(changed, progress=False)
    assert calls == []
    assert json.loads((out / "grid.json").read_text())["evaluation"]["fractions"] == "0.5,1.0", "record kept"


def test_quickstart_rerun_replaces_its_training_outputs_and_keeps_data_and_cache(tmp_path):
    import quickstart  # scripts/quickstart.py

    for name in (*quickstart.RERUN_FOLDERS, "data", "cache"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "file").write_text("from the previous run")
    quickstart.clear_previous_run(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "data"]
    assert (tmp_path / "cache" / "file").is_file()
