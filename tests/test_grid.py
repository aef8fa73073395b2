"""scripts/run_grid.py: config checks, a tiny real grid, and resuming without redoing finished cells."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from saliencyssl.cache import TargetCache
from saliencyssl.embedded import write_embedded_dataset
from saliencyssl.app.grid import GridConfig, StaleCellError, cell_pretrain_config, cell_state, cells, collect, run
from saliencyssl.app.pretrain import pretrain_settings
from saliencyssl.app.rundir import RunDir
from saliencyssl.eval.gridtable import policy_gap
from saliencyssl.saliency import LabellerConfig
from _paths import REPO
from saliencyssl.app import grid as run_grid_cli


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
    with pytest.raises(ValueError, match="cells lists .*simclr.*default.* more than once"):
        GridConfig.load(_write(tmp_path, cells=[["simclr", "default"], ["simclr", "default"]], methods=[], policies=[]))
    with pytest.raises(ValueError, match="either cells or methods and policies, not both"):
        GridConfig.load(_write(tmp_path, cells=[["simclr", "default"]]))
    with pytest.raises(ValueError, match="nothing to run"):
        GridConfig.load(_write(tmp_path, methods=[], policies=[], baselines=[]))
    with pytest.raises(ValueError, match="nothing to run"):
        GridConfig.load(_write(tmp_path, methods=[], policies=[], cells=[], baselines=[]))
    with pytest.raises(ValueError, match="give both methods and policies"):
        GridConfig.load(_write(tmp_path, policies=[]))
    config = json.loads(_write(tmp_path).read_text())
    del config["methods"], config["policies"]
    config["cells"] = [["simclr", "sal"]]
    (tmp_path / "cells_only.json").write_text(json.dumps(config))
    assert [c.name for c in cells(GridConfig.load(tmp_path / "cells_only.json"))] == ["simclr__sal"]
    with pytest.raises(ValueError, match="baselines lists random more than once"):
        GridConfig.load(_write(tmp_path, baselines=["random", "random"]))
    with pytest.raises(ValueError, match="method_options names 'byol', which no cell of the grid pretrains"):
        GridConfig.load(_write(tmp_path, method_options={"byol": {"momentum_start": 0.9}}))
    with pytest.raises(ValueError, match="method_options: simclr: unknown hyperparameter.*'tau'"):
        GridConfig.load(_write(tmp_path, method_options={"simclr": {"tau": 0.2}}))
    with pytest.raises(ValueError, match=r"method_options\['simclr'\] must be an object"):
        GridConfig.load(_write(tmp_path, method_options={"simclr": 0.2}))
    with pytest.raises(ValueError, match="labeller must be an object with keys among min_side.*unknown: .'min-side'."):
        GridConfig.load(_write(tmp_path, labeller={"min-side": 32}))
    with pytest.raises(ValueError, match="pretrain.aug_source: unknown target source 'surrogate,cache'"):
        GridConfig.load(_write(tmp_path, pretrain={"aug_source": "surrogate,cache"}))
    with pytest.raises(ValueError, match="pretrain.batch_size 128 is larger than pretrain.limit 100"):
        GridConfig.load(_write(tmp_path, pretrain={"limit": 100}))
    with pytest.raises(ValueError, match="pretrain.limit must be a whole number of images, at least 1"):
        GridConfig.load(_write(tmp_path, pretrain={"limit": 0}))
    # A grid that only evaluates baselines pretrains nothing: no batch to fill.
    assert GridConfig.load(_write(tmp_path, methods=[], policies=[], pretrain={"limit": 100}))
    assert GridConfig.load(_write(tmp_path, evaluation={"cache_dir": str(tmp_path / "features")}))
    with pytest.raises(ValueError, match="needs pretrain.surrogate"):
        GridConfig.load(_write(tmp_path, pretrain={"aug_source": "cache,surrogate"}))
    assert GridConfig.load(_write(tmp_path, pretrain={"aug_source": "cache,surrogate", "surrogate": "s.pt"}))
    with pytest.raises(FileNotFoundError, match="configs/"):
        GridConfig.load(tmp_path / "nope.json")
    assert run_grid_cli.main([str(tmp_path / "nope.json")]) == 2


def test_results_are_named_after_the_evaluation(tmp_path):
    assert GridConfig.load(_write(tmp_path)).results_stem == "grid"
    assert GridConfig.load(_write(tmp_path, evaluation_name="evals_full")).results_stem == "evals_full"
    shared = GridConfig.load(_write(tmp_path, evaluation_name="evals_full", results_name="grid_cutview"))
    assert shared.results_stem == "grid_cutview"
    for bad in ("../elsewhere", "", "a b", 3):
        with pytest.raises(ValueError, match="results_name must be a file-name prefix"):
            GridConfig.load(_write(tmp_path, results_name=bad))


def test_shipped_configs_load():
    for path in (REPO / "configs").glob("*.json"):
        config = GridConfig.load(path)
        assert cells(config), path


@pytest.mark.slow
def test_tiny_grid_runs_collects_and_skips_finished_cells(tmp_path, monkeypatch, capsys):
    path = _write(tmp_path)
    config = GridConfig.load(path)
    rows = run(config, progress=False)
    out = Path(config.out)
    assert {(r["policy"], r["protocol"], r["fraction"]) for r in rows} >= {
        ("default", "linear", "0.5"), ("sal", "knn", "1.0"), ("random init", "linear", "1.0")}
    assert (out / "grid_results.md").read_text().count("| simclr |") == 4
    assert (out / "grid_simclr_linear.png").is_file() and (out / "grid_results.csv").is_file()
    assert (out / "grid_simclr_knn_during_pretraining.png").is_file(), "knn_every: the monitored kNN is plotted"
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
    monkeypatch.setattr("saliencyssl.app.pretrain.Pretrainer.run", lambda self: calls.append(self))
    assert len(run(config, progress=False)) == len(rows)
    assert calls == [], "finished cells are not pretrained again"

    # A finished cell made with other settings than the config now asks for is refused, not reused.
    changed = GridConfig.load(_write(tmp_path, pretrain={**config.pretrain, "epochs": 3}))
    with pytest.raises(StaleCellError, match=r"epochs 1 \(now 3\)"):
        run(changed, progress=False)
    changed = GridConfig.load(_write(tmp_path, evaluation={**config.evaluation, "fractions": "0.25,1.0"}))
    with pytest.raises(StaleCellError, match="fractions"):
        run(changed, progress=False)
    changed = GridConfig.load(_write(tmp_path, evaluation={**config.evaluation, "knn_k": 20}))
    with pytest.raises(StaleCellError, match=r"knn \[200, 0.1\] \(now \[20, 0.1\]\)"):
        run(changed, progress=False)
    changed = GridConfig.load(_write(tmp_path, evaluation={**config.evaluation, "test_limit": 10}))
    with pytest.raises(StaleCellError, match=r"test_limit None \(now 10\)"):
        run(changed, progress=False)
    # Other training images: another backbone.
    import shutil

    shutil.copytree(config.train, tmp_path / "train_copy")
    changed = GridConfig.load(_write(tmp_path, train=str(tmp_path / "train_copy")))
    with pytest.raises(StaleCellError, match=r"data '.*/train' \(now '.*/train_copy'\)"):
        run(changed, progress=False)
    # Targets of another labeller (options or version) make the saliency cell stale, not the default one.
    changed = GridConfig.load(_write(tmp_path, labeller={"min_side": 48}))
    with pytest.raises(StaleCellError, match="simclr__sal holds a pretraining run .*labeller_fingerprint.*another labeller"):
        run(changed, progress=False)
    assert run_grid_cli.main([str(tmp_path / "grid.json"), "--quiet"]) == 2, "one-line error, no traceback"
    assert [cell_state(changed, c) for c in cells(changed)] == [
        "pretrained, evaluated", f"stale: labeller_fingerprint {LabellerConfig().fingerprint()!r} (now "
                                 f"{LabellerConfig(min_side=48).fingerprint()!r})"]
    assert calls == []
    assert json.loads((out / "grid.json").read_text())["evaluation"]["fractions"] == "0.5,1.0", "record kept"

    # Method options: other options make the method's cells stale; a default given explicitly changes nothing.
    optioned = GridConfig.load(_write(tmp_path, method_options={"simclr": {"temperature": 0.2}}))
    assert all(cell_state(optioned, c).startswith("stale: method_options {} (now {'temperature': 0.2})")
               for c in cells(optioned))
    explicit = GridConfig.load(_write(tmp_path, method_options={"simclr": {"temperature": 0.5}}))
    assert [cell_state(explicit, c) for c in cells(explicit)] == ["pretrained, evaluated"] * 2
    # The evaluation was of the backbone file as it was: another backbone.pt (a cell pretrained again
    # outside the grid) makes it stale.
    default_cell, sal_cell = cells(config)
    state = torch.load(default_cell.run_dir / "backbone.pt", weights_only=True)
    state["state_dict"] = {k: v + 1 if v.is_floating_point() else v for k, v in state["state_dict"].items()}
    torch.save(state, default_cell.run_dir / "backbone.pt")
    assert cell_state(config, default_cell).startswith("stale: backbone 'file:")
    assert cell_state(config, sal_cell) == "pretrained, evaluated"
    # An unfinished run started with other settings is stale too (resuming it would be refused).
    mixed = GridConfig.load(_write(tmp_path, methods=["simclr", "byol"],
                                   method_options={"byol": {"momentum_start": 0.9}}))
    byol_sal = next(c for c in cells(mixed) if c.name == "byol__sal")
    other = cell_pretrain_config(mixed, byol_sal)
    other.min_side = 48
    RunDir(byol_sal.run_dir, "pretrain").start(pretrain_settings(other)[0])
    assert cell_state(mixed, byol_sal) == (f"stale: labeller_fingerprint '{LabellerConfig(min_side=48).fingerprint()}'"
                                           f" (now '{LabellerConfig().fingerprint()}')")
    byol_default = next(c for c in cells(mixed) if c.name == "byol__default")
    assert cell_state(mixed, byol_default) == "to do"
    RunDir(byol_default.run_dir, "pretrain").start(pretrain_settings(cell_pretrain_config(mixed, byol_default))[0])
    assert cell_state(mixed, byol_default).startswith("pretraining started")


@pytest.mark.slow
def test_a_grid_with_a_surrogate_behind_the_cache_asks_it_for_the_misses(tmp_path):
    import train_surrogate

    path = _write(tmp_path, methods=[], policies=[], cells=[["simclr", "sal"]], baselines=[])
    config = GridConfig.load(path)
    data = Path(config.train)
    # A cache of a few of the training images and a surrogate trained on it: nothing else is labelled.
    label_cli = __import__("label")
    few = tmp_path / "few"
    few.mkdir()
    for image in sorted(data.rglob("*.png"))[:6]:
        (few / image.name).write_bytes(image.read_bytes())
    assert label_cli.main([str(few), "--cache", str(tmp_path / "few_cache"), "--workers", "0", "--quiet"]) == 0
    assert train_surrogate.main([str(few), "--cache", str(tmp_path / "few_cache"), "--out", str(tmp_path / "sur"),
                                 "--epochs", "1", "--batch-size", "2", "--ngf", "4", "--ndf", "4", "--held-out", "0",
                                 "--quiet"]) == 0
    raw = json.loads(path.read_text())
    raw["pretrain"].update(aug_source="cache,surrogate", surrogate=str(tmp_path / "sur" / "surrogate.pt"))
    raw["cache"] = str(tmp_path / "few_cache")
    path.write_text(json.dumps(raw))
    run(GridConfig.load(path), progress=False)
    history = json.loads((Path(config.out) / "runs" / "simclr__sal" / "history.json").read_text())
    router = history[0]["router"]
    assert 0 < router["cache_hits"] <= 6 and router["cache_hits"] + router["surrogate_images"] == router["images"], \
        "the misses went to the surrogate"
    assert len(TargetCache(tmp_path / "few_cache", LabellerConfig().fingerprint())) == 6, "nothing else labelled"


@pytest.mark.slow
def test_pretraining_seeds_are_separate_runs_combined_into_one_row(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="either pretrain_seeds or pretrain.seed"):
        GridConfig.load(_write(tmp_path, pretrain_seeds=[0, 1]))
    one_seed = {"image_size": 32, "epochs": 1, "batch_size": 8, "device": "cpu"}
    with pytest.raises(ValueError, match="distinct integers"):
        GridConfig.load(_write(tmp_path, pretrain=one_seed, pretrain_seeds=[1, 1]))

    # A finished one-seed grid gains a second pretraining seed without redoing the first.
    first = GridConfig.load(_write(tmp_path, policies=["default"], pretrain=one_seed, pretrain_seeds=[0]))
    run(first, progress=False)
    from saliencyssl.app.pretrain import Pretrainer

    pretrained, real_run = [], Pretrainer.run
    monkeypatch.setattr(Pretrainer, "run", lambda self: (pretrained.append(self.config.seed), real_run(self))[1])
    config = GridConfig.load(_write(tmp_path, policies=["default"], pretrain=one_seed, pretrain_seeds=[0, 1]))
    rows = run(config, progress=False)
    assert pretrained == [1], "only the new seed is pretrained"
    out = Path(config.out)
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["simclr__default", "simclr__default__seed1"]
    assert sorted(p.name for p in (out / "evals").iterdir()) == [
        "random", "random__seed1", "simclr__default", "simclr__default__seed1"]

    import torch

    weights = [torch.load(out / "runs" / name / "backbone.pt", weights_only=True)
               for name in ("simclr__default", "simclr__default__seed1")]
    assert [w["config"]["seed"] for w in weights] == [0, 1]
    assert any(not torch.equal(a, b) for a, b in zip(weights[0]["state_dict"].values(),
                                                       weights[1]["state_dict"].values()))
    random_seeds = [json.loads((out / "evals" / name / "results.json").read_text())["meta"]["backbone"]["config"]
                    ["seed"] for name in ("random", "random__seed1")]
    assert random_seeds == [0, 1], "each seed's random baseline is that run's starting point"

    assert len(rows) == 2 * 2 * 2  # (simclr, random) x protocols x fractions: one row per cell, not per run
    for name, policy in (("simclr__default", "default"), ("random", "random init")):
        runs = [json.loads((out / "evals" / folder / "results.json").read_text())
                for folder in (name, name + "__seed1")]
        for protocol in ("linear", "knn"):
            for fraction in ("0.5", "1.0"):
                row = next(r for r in rows if (r["policy"], r["protocol"], r["fraction"]) == (policy, protocol, fraction))
                a, b = (run[protocol][fraction] for run in runs)
                assert row["pretrain_seeds"] == 2
                assert row["accuracy_mean"] == pytest.approx((a["accuracy_mean"] + b["accuracy_mean"]) / 2)
                assert row["pretrain_std"] == pytest.approx(abs(a["accuracy_mean"] - b["accuracy_mean"]) / 2)
                assert row["accuracy_std"] == pytest.approx(((a["accuracy_std"] ** 2 + b["accuracy_std"] ** 2) / 2) ** 0.5)
    table = (out / "grid_results.md").read_text()
    assert not (out / "grid_simclr_knn_during_pretraining.png").exists(), "no knn_every, nothing monitored"
    assert "Mean over 2 pretraining seeds" in table and table.count("] |") == 2 * 2 * 2  # every value

    # Seeds are checked like every other setting: swapping them would reuse seed 0's runs as seed 1's.
    swapped = GridConfig.load(_write(tmp_path, policies=["default"], pretrain=one_seed, pretrain_seeds=[1, 0]))
    with pytest.raises(StaleCellError, match=r"seed 0 \(now 1\)"):
        run(swapped, progress=False)
    swapped = GridConfig.load(_write(tmp_path, methods=[], policies=[], pretrain=one_seed, pretrain_seeds=[1, 0]))
    with pytest.raises(StaleCellError, match=r"backbone 'random:seed=0:cifar_stem=True' \(now 'random:seed=1") as error:
        run(swapped, progress=False)
    assert "evals/random holds an evaluation" in str(error.value)


def test_policy_gap_compares_with_the_larger_of_label_and_pretraining_spread():
    def row(policy, fraction, mean, std, pretrain_std):
        return {"method": "simclr", "policy": policy, "protocol": "knn", "fraction": fraction, "n_labelled": 10,
                "accuracy_mean": mean, "accuracy_std": std, "pretrain_seeds": 1 if pretrain_std is None else 2,
                "pretrain_std": pretrain_std}

    rows = [row("default", "0.1", 0.30, 0.01, 0.04), row("default", "1.0", 0.40, 0.00, 0.02),
            row("sal", "0.1", 0.25, 0.02, None), row("sal", "1.0", 0.33, 0.03, None)]
    gap = policy_gap(rows, "sal", "default", "knn")
    assert gap["mean_gap"] == pytest.approx(-0.06)
    assert gap["spread"] == 0.04, "the pretraining spread of default at 0.1 is the largest"
    rows[0]["pretrain_std"] = None
    assert policy_gap(rows, "sal", "default", "knn")["spread"] == 0.03


@pytest.mark.slow
def test_only_runs_the_named_cells_and_leaves_baselines_and_table_to_a_plain_run(tmp_path, capsys):
    path = _write(tmp_path)
    out = tmp_path / "grid"
    assert run_grid_cli.main([str(path), "--only", "simclr__nope"]) == 2
    assert "its cells: simclr__default, simclr__sal" in capsys.readouterr().err
    assert not out.exists(), "a bad name is refused before anything is written"

    assert run_grid_cli.main([str(path), "--only", "simclr__sal", "--quiet"]) == 0
    assert sorted(p.name for p in (out / "evals").iterdir()) == ["simclr__sal"]
    assert not (out / "runs" / "simclr__default").exists() and not (out / "grid_results.md").exists()
    capsys.readouterr()
    assert run_grid_cli.main([str(path), "--list"]) == 0
    listing = dict(line.split(maxsplit=1) for line in capsys.readouterr().out.splitlines())
    folders = {name: listing.pop(name) for name in ("out", "train", "test", "cache")}  # printed first
    assert folders["out"] == str(out.resolve())
    assert listing == {"simclr__default": "to do", "simclr__sal": "pretrained, evaluated"}


def test_quickstart_rerun_replaces_its_training_outputs_and_keeps_data_and_cache(tmp_path):
    from saliencyssl.app import quickstart

    for name in (*quickstart.RERUN_FOLDERS, "data", "cache"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "file").write_text("from the previous run")
    quickstart.clear_previous_run(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "data"]
    assert (tmp_path / "cache" / "file").is_file()


@pytest.mark.slow
def test_an_interrupted_cell_resumes_to_the_weights_of_an_uninterrupted_run(tmp_path, monkeypatch):
    from saliencyssl.ssl.backbone import load_backbone
    from saliencyssl.app.pretrain import Pretrainer

    two_epochs = {"image_size": 32, "epochs": 2, "batch_size": 8, "device": "cpu", "seed": 0}
    straight = GridConfig.load(_write(tmp_path / "a", methods=["simclr"], policies=["sal"], baselines=[],
                                      pretrain=two_epochs))
    run(straight, progress=False)

    interrupted = GridConfig.load(_write(tmp_path / "b", methods=["simclr"], policies=["sal"], baselines=[],
                                         pretrain=two_epochs))
    real_log = Pretrainer._log

    def stop_after_the_first_epoch(self, record):
        real_log(self, record)
        if record.epoch == 1:
            self._save_checkpoint(0)
            raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(Pretrainer, "_log", stop_after_the_first_epoch)
        with pytest.raises(KeyboardInterrupt):
            run(interrupted, progress=False)
    [cell] = cells(interrupted)
    assert cell_state(interrupted, cell).startswith("pretraining started")
    started = []
    monkeypatch.setattr(Pretrainer, "_resume", lambda self, real=Pretrainer._resume: (real(self),
                                                                                      started.append(self.start_epoch)))
    run(interrupted, progress=False)
    assert started == [1], "the cell resumed after its first epoch"
    a, _ = load_backbone(cells(straight)[0].run_dir / "backbone.pt")
    b, _ = load_backbone(cell.run_dir / "backbone.pt")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_list_prints_the_resolved_folders_and_flags_missing_data(tmp_path, capsys):
    path = _write(tmp_path)
    raw = json.loads(path.read_text())
    raw["test"] = str(tmp_path / "no_such_folder")
    path.write_text(json.dumps(raw))
    assert run_grid_cli.main([str(path), "--list"]) == 0
    out = capsys.readouterr().out
    assert f"train {(tmp_path / 'data' / 'train').resolve()}\n" in out
    assert f"test  {(tmp_path / 'no_such_folder').resolve()}   MISSING" in out


def test_a_cell_reads_targets_only_where_its_policy_or_method_does(tmp_path):
    path = _write(tmp_path, pretrain={"epochs": 1, "batch_size": 8, "aug_source": "cache"},
                  methods=["simclr", "detcon-simclr"], policies=["default", "salcrop+default"])
    config = GridConfig.load(path)
    sources = {c.name: cell_pretrain_config(config, c).aug_source for c in cells(config)}
    assert sources == {"simclr__default": "none", "simclr__salcrop_plus_default": "cache",
                       "detcon-simclr__default": "cache", "detcon-simclr__salcrop_plus_default": "cache"}


def test_a_config_built_in_code_is_checked_as_a_file_is(tmp_path):
    """GridConfig validates itself: a bad method or epoch count is refused without going through load()."""
    base = dict(name="t", out=str(tmp_path / "out"), train="train", test="test", cache="cache",
                cells=[["simclr", "default"]], pretrain={"epochs": 1, "batch_size": 8, "device": "cpu"})
    assert GridConfig(**base).cells == [["simclr", "default"]]
    with pytest.raises(ValueError, match="unknown method 'bogus'"):
        GridConfig(**{**base, "cells": [["bogus", "default"]]})
    with pytest.raises(ValueError, match="pretrain.epochs is -3"):
        GridConfig(**{**base, "pretrain": {"epochs": -3}})
    with pytest.raises(ValueError, match="^name must be str"):
        GridConfig(**{**base, "name": 3})


def test_collect_only_names_a_damaged_results_file_and_keeps_the_table(tmp_path, capsys):
    """--collect-only over a damaged results.json (not JSON, a missing field, a number given as text): one line
    naming the file, exit 2, and the table already written is kept; a name that is not valid Unicode is refused
    when the config loads (it emptied the table when written)."""
    path = _write(tmp_path, methods=[], policies=[])
    config = GridConfig.load(path)
    table = Path(config.out) / "grid_results.md"
    table.parent.mkdir(parents=True)
    table.write_text("the table of an earlier run\n")
    results = config.random_eval_dir() / "results.json"
    results.parent.mkdir(parents=True)
    assert run_grid_cli.main([str(path), "--collect-only", "--quiet"]) == 0
    assert "no cell is evaluated yet; nothing written" in capsys.readouterr().out
    entry = '{"accuracy_mean": 0.5, "accuracy_std": 0, "n_labelled": 5}'
    for damage in ("[", '{"knn": {"1.0": {}}}', '{"knn": {"1.0": {"accuracy_mean": "x", "accuracy_std": 0, '
                   '"n_labelled": 5}}}', '{"knn": {"nan": ' + entry + '}}', entry.replace("0.5", "1e308").join(
                       ('{"knn": {"1.0": ', "}}"))):
        results.write_text(damage)
        assert run_grid_cli.main([str(path), "--collect-only", "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and str(results) in err and "damaged" in err
        assert table.read_text() == "the table of an earlier run\n"
    results.write_text('{"knn": {"1.0": ' + entry + '}}')  # the baseline whole again
    cell = cells(GridConfig.load(_write(tmp_path, methods=["simclr"], policies=["default"])))[0]
    cell.eval_dir.mkdir(parents=True)
    (cell.eval_dir / "results.json").write_text('{"knn": {"1.0": ' + entry + '}, "meta": {"backbone": {"config": '
                                                '{"method_options": [1]}}}}')
    assert run_grid_cli.main([str(tmp_path / "grid.json"), "--collect-only", "--quiet"]) == 2
    assert "recorded method options [1] are not a map" in capsys.readouterr().err
    with pytest.raises(ValueError, match="name holds text that is not valid Unicode"):
        GridConfig.load(_write(tmp_path, name="n\ud800"))


def test_a_grid_on_cifar_batches_labels_the_spread_images_in_workers_and_leaves_no_png_behind(tmp_path):
    import tempfile

    from test_untrusted import _cifar_folder

    from saliencyssl.app.label import CIFAR_TEMP_PREFIX
    from saliencyssl.datasets import open_image_set

    _cifar_folder(tmp_path / "cifar", n=6)
    config = GridConfig.load(_write(tmp_path, train=str(tmp_path / "cifar")))
    tmp = Path(tempfile.gettempdir())
    before = set(tmp.glob(CIFAR_TEMP_PREFIX + "*"))
    run_grid_cli._label(config, {"limit": 4}, progress=False)
    wanted = open_image_set(tmp_path / "cifar").spread(4).hashes()
    with TargetCache(config.cache, LabellerConfig().fingerprint()) as cache:
        assert len(cache) == 4 and all(h in cache for h in wanted), "the spread images, under the hashes pretraining reads"
    assert set(tmp.glob(CIFAR_TEMP_PREFIX + "*")) == before, "the PNG copies are removed"


def test_an_interrupted_grid_says_what_is_kept_and_exits_as_interrupted(tmp_path, monkeypatch, capsys):
    from saliencyssl.app.label import Terminated

    path = _write(tmp_path)
    for error, code in ((KeyboardInterrupt(), 130), (Terminated(15), 143)):
        def interrupted(*args, error=error, **kwargs):
            raise error

        monkeypatch.setattr(run_grid_cli, "run", interrupted)
        assert run_grid_cli.main([str(path), "--quiet"]) == code
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "kept: rerun the same command" in err
