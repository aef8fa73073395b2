"""experiments/collect_results.py: the seeds, parity and photo-seed tables, from fabricated outputs.

The grids' run folders are written by hand (one results.json per cell, as ``saliency-ssl evaluate`` writes it),
so the tables' arithmetic is checked against numbers known in advance: means over pretraining seeds, the spread
as the larger of the label-subset and pretraining-seed spreads, and the gaps between rows.
"""

from __future__ import annotations

import json

import pytest
import torch

import collect_results
from saliencyssl.app.grid import GridConfig, cells
from saliencyssl.embedded import write_embedded_dataset

pytestmark = pytest.mark.experiment

FRACTIONS = ("0.1", "1.0")


def _config(path, out, seed, cells_, cache="cache", **pretrain):
    path.write_text(json.dumps({
        "name": "test: seeds", "out": str(out), "train": "train", "test": "test", "cache": str(cache),
        "cells": cells_, "pretrain": {"image_size": 32, "epochs": 1, "batch_size": 8, "device": "cpu",
                                      "aug_source": "cache", **pretrain},
        "pretrain_seeds": [seed], "evaluation": {"fractions": ",".join(FRACTIONS), "protocols": ["linear", "knn"],
                                                 "seeds": 3}, "baselines": []}))
    return str(path)


def _results(config_path, accuracy):
    """Write every cell's results.json: accuracy[(method, protocol, fraction)] = (mean, std over label seeds)."""
    for cell in cells(GridConfig.load(config_path)):
        results = {protocol: {f: {"accuracy_mean": accuracy[(cell.method, protocol, f)][0],
                                  "accuracy_std": accuracy[(cell.method, protocol, f)][1], "n_labelled": 100}
                              for f in FRACTIONS} for protocol in ("linear", "knn")}
        cell.eval_dir.mkdir(parents=True, exist_ok=True)
        (cell.eval_dir / "results.json").write_text(json.dumps(results))


def _accuracy(simclr, detcon):
    return {(m, p, f): value for m, base in (("simclr", simclr), ("detcon-simclr", detcon))
            for p in ("linear", "knn") for f, value in zip(FRACTIONS, base)}


def _cache_arm(grids, name, record_name, detcon, **record):
    """A parity arm of DetCon-S alone whose targets a cache serves, the cache holding only the record an experiment
    script writes beside the targets (``record_name``: merged_regions.json, coarsened_exact.json); ``detcon``: its
    (mean, std) at each fraction, as _accuracy takes them."""
    cache = grids / f"{name}_cache"
    cache.mkdir()
    (cache / record_name).write_text(json.dumps(record))
    config = _config(grids / f"{name}.json", grids / f"g_{name}", 0, [["detcon-simclr", "default"]], cache=cache,
                     aug_source="cache")
    _results(config, _accuracy([(0.0, 0.0), (0.0, 0.0)], detcon))
    return config


def _scored_surrogate(grids, folder, presence, iou, boundary_f, **extra):
    """A surrogate run folder holding only its test report (test.json, as saliency-ssl fidelity writes it: 10,000
    images, the given presence accuracy, mask IoU on present masks and region boundary F, and ``extra`` keys);
    returns its surrogate.pt's path, as a config names it."""
    (grids / folder).mkdir(exist_ok=True)
    (grids / folder / "test.json").write_text(json.dumps(
        {"n": 10000, "presence_accuracy": presence, "mask_iou_present": iou, "boundary_f": boundary_f, **extra}))
    return str(grids / folder / "surrogate.pt")


@pytest.fixture
def grids(tmp_path, monkeypatch):
    both = [["simclr", "default"], ["detcon-simclr", "default"]]
    seed0 = _config(tmp_path / "seed0.json", tmp_path / "g0", 0, both)
    seed1 = _config(tmp_path / "seed1.json", tmp_path / "g1", 1, both)
    parity = _config(tmp_path / "parity.json", tmp_path / "gp", 0, [["detcon-simclr", "default"]],
                     aug_source="surrogate", surrogate=str(tmp_path / "sur" / "surrogate.pt"))
    # simclr: 0.40 and 0.44 at 10% (seed spread 0.02 > label spread 0.01), detcon: 0.50 and 0.50
    _results(seed0, _accuracy([(0.40, 0.01), (0.60, 0.0)], [(0.50, 0.01), (0.70, 0.0)]))
    _results(seed1, _accuracy([(0.44, 0.01), (0.60, 0.0)], [(0.50, 0.03), (0.72, 0.0)]))
    half = _config(tmp_path / "half.json", tmp_path / "gh", 0, [["detcon-simclr", "default"]],
                   aug_source="cache,surrogate", surrogate=str(tmp_path / "sur" / "surrogate.pt"))
    _results(parity, _accuracy([(0.0, 0.0), (0.0, 0.0)], [(0.47, 0.01), (0.71, 0.0)]))
    _results(half, _accuracy([(0.0, 0.0), (0.0, 0.0)], [(0.49, 0.02), (0.73, 0.0)]))
    monkeypatch.setitem(collect_results.PARITY_BUDGETS, "624", {"exact": [seed0, seed1], "surrogate": parity,
                                                                 "half": half, "result": "surrogate_parity.json"})
    return tmp_path


def _rows(path):
    return {row[0]: row[1:] for row in json.loads(path.read_text())["rows"]}


def test_recipe_tables_pool_configs_that_differ_in_their_pretraining_seed(grids):
    byol = _config(grids / "byol.json", grids / "gb", 0, [["byol", "default"], ["detcon-byol", "default"]])
    _results(byol, {(m, p, f): (base + (0.1 if f == "1.0" else 0.0), 0.01) for m, base in
                    (("byol", 0.30), ("detcon-byol", 0.35)) for p in ("linear", "knn") for f in FRACTIONS})
    comp = _config(grids / "comp.json", grids / "gc", 0, [["simclr", "comp0.3+default"]])
    _results(comp, {("simclr", p, f): (0.43, 0.01) for p in ("linear", "knn") for f in FRACTIONS})
    configs = [str(grids / "seed0.json"), str(grids / "seed1.json"), byol, comp]
    collect_results.main(["mask_aware_cifar10", "--config", *configs, "--out", str(grids / "results"),
                          "--machine", "test"])
    rows = _rows(grids / "results" / "mask_aware_cifar10_linear.json")
    assert rows["SimCLR, default (2 seeds)"][0] == pytest.approx([0.42, 0.02])
    # detcon at 10%: label spreads 0.01 and 0.03 pool as their root mean square, above the seeds' spread (0)
    assert rows["DetCon-S, default (2 seeds)"][0] == pytest.approx([0.50, (0.5 * (0.01**2 + 0.03**2)) ** 0.5],
                                                                  abs=1e-4)
    assert rows["DetCon-S, default (2 seeds)"][1] == pytest.approx([0.71, 0.01])
    gaps = _rows(grids / "results" / "mask_aware_cifar10_knn_gap.json")
    # a gap over unequal seed counts names both; DetCon-B's gap is to BYOL default, not to SimCLR's
    assert list(gaps) == ["SimCLR, comp0.3+default (1 seed; SimCLR default 2 seeds)", "DetCon-S, default (2 seeds)",
                          "DetCon-B, default (1 seed), to BYOL default"]
    assert gaps["DetCon-B, default (1 seed), to BYOL default"][1] == pytest.approx([0.05, 0.01])
    assert gaps["DetCon-S, default (2 seeds)"][0] == pytest.approx([0.08, 0.0224], abs=1e-4)
    assert gaps["DetCon-S, default (2 seeds)"][1] == pytest.approx([0.11, 0.01])
    written = json.loads((grids / "results" / "mask_aware_cifar10_linear.json").read_text())
    assert written["command"][:4] == [f"saliency-ssl grid {c}" for c in configs]
    # another stem keeps a second judgement's tables beside the first, and its command says how to remake them
    collect_results.main(["mask_aware_cifar10", "--config", configs[0], "--name", "long", "--out",
                          str(grids / "results"), "--machine", "test"])
    long = json.loads((grids / "results" / "long_knn_gap.json").read_text())
    assert long["command"][-1].endswith(f"--config {configs[0]} --name long")
    assert _rows(grids / "results" / "long_linear.json") == {"SimCLR, default (1 seed)": [[0.40, 0.01], [0.60, 0.0]],
                                                             "DetCon-S, default (1 seed)": [[0.50, 0.01], [0.70, 0.0]]}
    with pytest.raises(SystemExit):
        collect_results.main(["mask_aware_cifar10", "--config", configs[0], "--name", "../x"])


def test_parity_table_compares_each_arm_with_the_exact_targets_over_their_seeds(grids, monkeypatch):
    _scored_surrogate(grids, "sur", 0.7, 0.35, 0.6, surrogate=str(grids / "sur" / "surrogate.pt"))
    collect_results.main(["parity", "--out", str(grids / "results"), "--machine", "test"])
    written = json.loads((grids / "results" / "surrogate_parity.json").read_text())
    rows = _rows(grids / "results" / "surrogate_parity.json")
    exact_spread = (0.5 * (0.01**2 + 0.03**2)) ** 0.5  # DetCon-S at 10%, pooled over seeds 0 and 1
    assert rows["exact targets (2 seeds), linear"][0] == pytest.approx([0.50, exact_spread], abs=1e-4)
    assert rows["surrogate targets (1 seed), linear"][0] == pytest.approx([0.47, 0.01])
    assert rows["half exact, half surrogate (1 seed), kNN"][1] == pytest.approx([0.73, 0.0])
    assert rows["surrogate targets minus exact, linear"][0] == pytest.approx([-0.03, exact_spread], abs=1e-4)
    assert rows["surrogate targets minus exact, kNN"][1] == pytest.approx([0.0, 0.01])
    assert rows["half exact, half surrogate minus exact, linear"][0] == pytest.approx([-0.01, exact_spread], abs=1e-4)
    assert rows["half exact, half surrogate minus exact, linear"][1] == pytest.approx([0.02, 0.01])
    assert rows["surrogate targets minus SimCLR default (no targets), linear"][0] == pytest.approx([0.05, 0.02])
    assert any("10,000 test images: presence accuracy 0.700" in note for note in written["notes"])
    assert written["command"] == ["bash experiments/surrogate_parity.sh", "python experiments/collect_results.py parity"]
    # another budget reads its own configs, writes its own file and names the budget in its commands and title
    monkeypatch.setitem(collect_results.PARITY_BUDGETS, "1248", {**collect_results.PARITY_BUDGETS["624"], "exact": [
        str(grids / "seed1.json")], "result": "surrogate_parity_1248.json"})
    collect_results.main(["parity", "--steps", "1248", "--out", str(grids / "results"), "--machine", "test"])
    long = json.loads((grids / "results" / "surrogate_parity_1248.json").read_text())
    assert long["command"] == ["STEPS=1248 bash experiments/surrogate_parity.sh",
                               "python experiments/collect_results.py parity --steps 1248"]
    assert long["title"].startswith("CIFAR-10, 1,248 steps") and "1,248 steps of 64" in long["notes"][0]
    assert _rows(grids / "results" / "surrogate_parity_1248.json")["exact targets (1 seed), kNN"][1] == \
        pytest.approx([0.72, 0.0])
    assert not any(note.startswith("Not measured") for note in long["notes"])
    # an arm not run at a budget is left out of the table and named in the notes
    unrun = _config(grids / "unrun.json", grids / "gu", 0, [["detcon-simclr", "default"]],
                    aug_source="cache,surrogate", surrogate=str(grids / "sur" / "surrogate.pt"))  # no results
    missing = {**collect_results.PARITY_BUDGETS["624"], "half": unrun, "result": "surrogate_parity_none.json"}
    monkeypatch.setitem(collect_results.PARITY_BUDGETS, "1248", missing)
    collect_results.main(["parity", "--steps", "1248", "--out", str(grids / "results"), "--machine", "test"])
    none = json.loads((grids / "results" / "surrogate_parity_none.json").read_text())
    assert not any(row[0].startswith("half exact") for row in none["rows"])
    assert "Not measured at this budget: half exact, half surrogate." in none["notes"]


def test_parity_carry_keeps_the_arms_not_collected_again_and_recomputes_gaps_to_the_new_one(grids):
    import shutil

    _scored_surrogate(grids, "sur", 0.7, 0.35, 0.6)
    out = ["--out", str(grids / "results"), "--machine", "test"]
    collect_results.main(["parity", "--date", "2026-01-01", *out])
    first = _rows(grids / "results" / "surrogate_parity.json")
    # later only the half arm is run again (new numbers, a surrogate trained again); the other runs are gone
    for folder in ("g0", "g1", "gp"):
        shutil.rmtree(grids / folder)
    _results(str(grids / "half.json"), _accuracy([(0.0, 0.0), (0.0, 0.0)], [(0.45, 0.04), (0.69, 0.0)]))
    _scored_surrogate(grids, "sur", 0.71, 0.36, 0.61)
    collect_results.main(["parity", "--carry", "--date", "2026-02-02", *out])
    written = json.loads((grids / "results" / "surrogate_parity.json").read_text())
    rows = _rows(grids / "results" / "surrogate_parity.json")
    assert list(rows) == list(first)  # the same rows in the same order
    for kept in ("exact targets (2 seeds), linear", "surrogate targets (1 seed), kNN",
                 "surrogate targets minus exact, linear", "surrogate targets minus SimCLR default (no targets), kNN"):
        assert rows[kept] == first[kept]
    assert rows["half exact, half surrogate (1 seed), linear"][0] == pytest.approx([0.45, 0.04])
    # the new arm's gap to the kept exact row: from the kept (rounded) mean and spread
    assert rows["half exact, half surrogate minus exact, linear"][0] == pytest.approx([-0.05, 0.04], abs=1e-4)
    assert rows["half exact, half surrogate minus exact, kNN"][1] == pytest.approx([-0.02, 0.01], abs=1e-4)
    assert written["command"][-1] == "python experiments/collect_results.py parity --carry"
    notes = " ".join(written["notes"])
    assert "Kept from the collection of 2026-01-01" in notes and "exact targets, surrogate targets." in notes
    # each surrogate-fed arm names its own surrogate: the kept arm's as recorded, the new arm's as measured now
    assert "The surrogate of the surrogate targets rows: agreement with the exact targets of the 10,000 test " \
           "images: presence accuracy 0.700" in notes
    assert "The surrogate of the half exact, half surrogate rows: agreement with the exact targets of the 10,000 " \
           "test images: presence accuracy 0.710" in notes
    # collecting again keeps what the kept rows were: their date and their surrogate's agreement
    collect_results.main(["parity", "--carry", "--date", "2026-03-03", *out])
    again = json.loads((grids / "results" / "surrogate_parity.json").read_text())
    assert again["rows"] == written["rows"] and again["notes"] == written["notes"]
    # the half arm's runs go too: kept from the last collection that read them (03-03), however often collected
    shutil.copytree(grids / "gh", grids / "gh_kept")
    shutil.rmtree(grids / "gh")
    for date in ("2026-04-04", "2026-05-05"):
        collect_results.main(["parity", "--carry", "--date", date, *out])
        kept = json.loads((grids / "results" / "surrogate_parity.json").read_text())
        assert kept["rows"] == written["rows"]
        assert "Kept from the collection of 2026-01-01, whose run folders were not collected again: exact targets, " \
               "surrogate targets. Kept from the collection of 2026-03-03, whose run folders were not collected " \
               "again: half exact, half surrogate." in kept["notes"]
        assert [n for n in kept["notes"] if n.startswith("The surrogate of the ")] == \
            [n for n in written["notes"] if n.startswith("The surrogate of the ")]
    shutil.copytree(grids / "gh_kept", grids / "gh")
    # without --carry the arms whose runs are gone are not measured, and nothing is kept
    collect_results.main(["parity", *out])
    plain = json.loads((grids / "results" / "surrogate_parity.json").read_text())
    assert [row[0] for row in plain["rows"]] == ["half exact, half surrogate (1 seed), linear",
                                                 "half exact, half surrogate (1 seed), kNN"]
    assert "Not measured at this budget: exact targets, surrogate targets." in plain["notes"]


def test_parity_all_arm_is_compared_with_the_exact_targets_and_names_its_surrogate(grids, monkeypatch):
    for folder, iou in (("sur", 0.39), ("sur_all", 0.41)):
        _scored_surrogate(grids, folder, 0.73, iou, 0.66)
    every = _config(grids / "all.json", grids / "ga", 0, [["detcon-simclr", "default"]],
                    aug_source="surrogate", surrogate=str(grids / "sur_all" / "surrogate.pt"))
    _results(every, _accuracy([(0.0, 0.0), (0.0, 0.0)], [(0.48, 0.01), (0.70, 0.0)]))
    monkeypatch.setitem(collect_results.PARITY_BUDGETS, "1248", {**collect_results.PARITY_BUDGETS["624"],
                                                                  "all": every, "result": "p.json"})
    out = ["--steps", "1248", "--out", str(grids / "results"), "--machine", "test"]
    collect_results.main(["parity", "--date", "2026-01-01", *out])
    written = json.loads((grids / "results" / "p.json").read_text())
    rows = _rows(grids / "results" / "p.json")
    assert rows["targets of the 40,000-image surrogate (1 seed), linear"][0] == pytest.approx([0.48, 0.01])
    exact_spread = (0.5 * (0.01**2 + 0.03**2)) ** 0.5
    assert rows["targets of the 40,000-image surrogate minus exact, kNN"][0] == \
        pytest.approx([-0.02, exact_spread], abs=1e-4)
    assert rows["targets of the 40,000-image surrogate minus exact, kNN"][1] == pytest.approx([-0.01, 0.01])
    note = next(n for n in written["notes"] if n.startswith("The surrogate of the targets of the 40,000-image "
                                                             "surrogate rows: "))
    assert "mask IoU on present masks 0.410" in note and "all 40,000" in written["notes"][0]
    # the other two arms share the 10,000-image surrogate, and one note
    assert "The surrogate of the surrogate targets and half exact, half surrogate rows: agreement with the exact " \
        "targets of the 10,000 test images: presence accuracy 0.730, mask IoU on present masks 0.390" in \
        " ".join(written["notes"])
    # its runs gone, --carry keeps its rows and its surrogate's note, however often it collects
    import shutil

    shutil.rmtree(grids / "ga")
    shutil.rmtree(grids / "sur_all")
    (grids / "sur" / "test.json").unlink(missing_ok=True)
    for _ in range(2):
        collect_results.main(["parity", "--carry", "--date", "2026-02-02", *out])
        again = json.loads((grids / "results" / "p.json").read_text())
        assert again["rows"] == written["rows"] and again["notes"].count(note) == 1
        # the arms measured now: their surrogate's scores are gone, and so is its note
        assert not any("mask IoU on present masks 0.390" in n for n in again["notes"])
        assert "Kept from the collection of 2026-01-01, whose run folders were not collected again: targets of " \
               "the 40,000-image surrogate." in again["notes"]


def test_parity_carry_reads_the_surrogate_notes_of_earlier_result_files():
    """Earlier files gave one agreement for every surrogate-fed arm, or one for the kept arms and one for the arms
    measured beside them; each arm gets its own surrogate's agreement from them."""
    rows = [["exact targets (2 seeds), linear", [0.5, 0.01]], ["surrogate targets (2 seeds), linear", [0.4, 0.01]],
            ["half exact, half surrogate (2 seeds), kNN", [0.4, 0.01]], ["surrogate targets minus exact, kNN", [0, 0]]]
    oldest = {"rows": rows, "notes": ["DetCon-S ...", "Its agreement with the exact targets of the 10,000 test "
                                                      "images: presence accuracy 0.700."]}
    assert collect_results._recorded_agreements(oldest) == {
        label: "agreement with the exact targets of the 10,000 test images: presence accuracy 0.700."
        for label in ("surrogate targets", "half exact, half surrogate")}
    later = {"rows": rows, "notes": [
        "DetCon-S ...", "Kept from the collection of 2026-01-01, whose run folders were not collected again: exact "
        "targets, surrogate targets.", "The surrogate of the kept surrogate targets rows: agreement with the exact "
        "targets of the 10,000 test images: presence accuracy 0.700.", "The surrogate of the rows measured now "
        "(trained by the same command): its agreement with the exact targets of the 10,000 test images: presence "
        "accuracy 0.710."]}
    found = collect_results._recorded_agreements(later)
    assert found["surrogate targets"].endswith("0.700.") and found["half exact, half surrogate"].endswith("0.710.")
    # an arm whose name holds ", " is found in the list of kept arms: the half arm kept, the other measured
    half_kept = {"rows": rows, "notes": [
        "Kept from the collection of 2026-01-01, whose run folders were not collected again: exact targets, half "
        "exact, half surrogate.", "The surrogate of the kept half exact, half surrogate rows: agreement 0.700.",
        "The surrogate of the rows measured now (trained by the same command): its agreement 0.710."]}
    assert collect_results._recorded_agreements(half_kept) == {"half exact, half surrogate": "agreement 0.700.",
                                                               "surrogate targets": "agreement 0.710."}
    assert collect_results._recorded_agreements(None) == {}


def test_parity_kept_arms_are_read_back_with_full_stops_and_names_that_begin_others():
    """The notes that list kept arms are read back whole when a name holds a full stop ("cut at 0.3") or begins
    another name (the cut arm and the recut arm, "exact targets" and its third seed): each arm gets the date of
    the collection its rows were kept from, and an arm only named inside a longer one's name is not kept."""
    cut, recut = collect_results._CUT_ARM, collect_results._RECUT_ARM
    seed2, coarse = collect_results._THIRD_SEED_ARM, collect_results._COARSENED_ARM
    arms = ["exact targets", "half exact, half surrogate", cut, recut, coarse, seed2]
    note = (f"Kept from the collection of 2026-01-01, whose run folders were not collected again: {recut}, {seed2}. "
            f"Kept from the collection of 2026-02-02, whose run folders were not collected again: half exact, half "
            f"surrogate, {coarse}.")
    assert collect_results._kept_dates({"notes": ["DetCon-S ...", note]}, arms) == {
        recut: "2026-01-01", seed2: "2026-01-01", "half exact, half surrogate": "2026-02-02", coarse: "2026-02-02"}
    assert collect_results._arms_in(f"{cut}, exact targets", arms) == ["exact targets", cut]
    assert collect_results._arms_in(f"{recut}, {cut}", arms) == [cut, recut]


def _photo_results(folder, iou):
    """One segmenter's results.json: iou[fraction] = (mean, std over fine-tuning seeds); F is IoU + 0.1."""
    folder.mkdir(parents=True)
    folder.joinpath("results.json").write_text(json.dumps(
        {**{f: {"iou_mean": m, "iou_std": s, "f_mean": m + 0.1, "f_std": s, "n_labelled": 10}
            for f, (m, s) in iou.items()}, "meta": {}}))


def test_photo_seeds_pool_pretraining_seeds_and_leave_one_seed_recipes_out(tmp_path):
    runs = tmp_path / "photos"
    # seed 0 in horses/, seed 1 in horses_s1/; detcon has seed 0 only and gets no pooled row
    _photo_results(runs / "horses" / "default", {"0.1": (0.60, 0.01), "1.0": (0.70, 0.0)})
    _photo_results(runs / "horses_s1" / "default", {"0.1": (0.64, 0.01), "1.0": (0.70, 0.0)})
    _photo_results(runs / "horses" / "sal", {"0.1": (0.65, 0.03), "1.0": (0.72, 0.0)})
    _photo_results(runs / "horses_s1" / "sal", {"0.1": (0.65, 0.01), "1.0": (0.74, 0.0)})
    _photo_results(runs / "horses" / "detcon", {"0.1": (0.50, 0.0), "1.0": (0.50, 0.0)})
    for seed in ("", "_s1"):
        _photo_results(runs / f"horses{seed}" / "comp", {"0.1": (0.61, 0.01), "1.0": (0.70, 0.0)})
    # folders photo_judgement.sh never writes are not seeds: _s01 would shadow _s1, _s1x is not a number
    for odd in ("horses_s01", "horses_s1x", "horses_s0"):
        _photo_results(runs / odd / "default", {"0.1": (0.0, 0.0), "1.0": (0.0, 0.0)})
    collect_results.main(["photos", "--runs", str(runs), "--out", str(tmp_path / "results"), "--machine", "test"])
    assert not (tmp_path / "results" / "mask_aware_photos_clothing_seeds.json").exists()
    written = json.loads((tmp_path / "results" / "mask_aware_photos_horses_seeds.json").read_text())
    recipes = "default=simclr:default comp=simclr:comp0.3+default sal=simclr:sal+default"
    assert written["command"][:2] == [f"bash experiments/photo_judgement.sh {recipes}",
                                      f"SEED=1 bash experiments/photo_judgement.sh {recipes}"]
    labels = [row[0] for row in written["rows"]]
    assert labels.count("SimCLR, default, IoU (pretraining seeds 0/1)") == 1
    rows = {row[0]: row[1:] for row in written["rows"]}
    assert rows["SimCLR, comp0.3+default minus default, IoU (seeds 0/1)"][1] == pytest.approx([0.0, 0.0])
    assert not any("DetCon" in label for label in rows)
    # default at 10%: mean 0.62, seed std 0.02 > fine-tuning 0.01; sal: fine-tuning RMS sqrt((0.03² + 0.01²) / 2)
    sal_spread = (0.5 * (0.03**2 + 0.01**2)) ** 0.5
    assert rows["SimCLR, default, IoU (pretraining seeds 0/1)"][0] == pytest.approx([0.62, 0.02])
    assert rows["SimCLR, sal+default, IoU (pretraining seeds 0/1)"][0] == pytest.approx([0.65, sal_spread], abs=1e-4)
    assert rows["SimCLR, sal+default minus default, IoU (seeds 0/1)"][0] == pytest.approx([0.03, sal_spread],
                                                                                          abs=1e-4)
    assert rows["SimCLR, sal+default minus default, IoU (seeds 0/1)"][1] == pytest.approx([0.03, 0.01])
    assert rows["SimCLR, sal+default minus default, IoU (seed 0 alone)"][0] == pytest.approx([0.05, 0.03])
    assert rows["SimCLR, sal+default minus default, F (seed 1 alone)"][1] == pytest.approx([0.04, 0.0])


def test_parity_budgets_name_real_configs_of_their_step_count_and_the_script_runs_real_cells(monkeypatch):
    """PARITY_BUDGETS and experiments/surrogate_parity.sh against the committed configs: each budget's configs exist
    and pretrain for that many steps on the 10,000 images, and every cell the script's --only lists is in its grid."""
    import re

    from saliencyssl.app.grid import select_cells

    from _paths import REPO

    monkeypatch.chdir(REPO)
    for steps, budget in collect_results.PARITY_BUDGETS.items():
        arms = [budget[key] for key in collect_results._SURROGATE_ARMS.values() if key in budget]
        for path in [*budget["exact"], *arms]:
            pretrain = GridConfig.load(path).pretrain
            assert pretrain["epochs"] * (10000 // pretrain["batch_size"]) == int(steps), path
    script = (REPO / "experiments" / "surrogate_parity.sh").read_text()
    for key in ("all", "half_all", "merged", "coarsened", "exact_seed2"):  # the arms of the 40,000-image surrogate are run by the script
        assert collect_results.PARITY_BUDGETS["1248"][key] in script
    found = re.findall(r"(\d+)\) EXACT=\(([^)]*)\)\s+ONLY=\(([^)]*)\)", script)
    assert {steps for steps, *_ in found} == set(collect_results.PARITY_BUDGETS)
    for steps, exact, only in found:
        assert exact.split() == collect_results.PARITY_BUDGETS[steps]["exact"]
        for path, names in zip(exact.split(), only.split()):
            if names != "all":
                assert len(select_cells(GridConfig.load(path), names.split(","))) == len(names.split(","))


def test_recipe_tables_need_their_configs(capsys):
    with pytest.raises(SystemExit):
        collect_results.main(["mask_aware_cifar10"])
    assert "needs --config" in capsys.readouterr().err


def test_gpu_surrogate_table_has_a_row_per_scored_run_and_names_the_card(tmp_path):
    """experiments/gpu_surrogate_all.sh run's OUT: run folders with NAME_test.json beside them and device.txt."""
    out = tmp_path / "gpu"
    for name, batch, step, iou in (("steps6000", 64, 6000, 0.41), ("minutes5", 256, 9000, 0.43), ("unscored", 64, 1, 0)):
        (out / name).mkdir(parents=True)
        (out / name / "run.json").write_text(json.dumps({"settings": {"batch_size": batch}}))
        (out / name / "history.json").write_text(json.dumps([{"step": step, "minutes": 1.234}]))
        if name != "unscored":
            (out / f"{name}_test.json").write_text(json.dumps(
                {"n": 10000, "presence_accuracy": 0.73, "mask_iou_present": iou, "mask_f": 0.5, "saliency_mae": 0.08,
                 "boundary_f": 0.66}))
    (out / "device.txt").write_text("NVIDIA H100 80GB HBM3\n")
    collect_results.main(["surrogate_gpu", "--runs", str(out), "--out", str(tmp_path / "results")])
    written = json.loads((tmp_path / "results" / "surrogate_cifar10_gpu.json").read_text())
    assert written["machine"] == "NVIDIA H100 80GB HBM3"
    assert written["rows"] == [["minutes5, batch 256", 9000, 1.23, 0.73, 0.43, 0.5, 0.08, 0.66],
                               ["steps6000, batch 64", 6000, 1.23, 0.73, 0.41, 0.5, 0.08, 0.66]]
    with pytest.raises(SystemExit, match="no run folder"):
        collect_results.main(["surrogate_gpu", "--runs", str(tmp_path / "results"), "--out", str(tmp_path / "r2")])


def _photo_run(run, f, settings=None, sets=("weizmann_horses",), n=328, exact=None, box_f=0.59, outcome=1500,
               command=()):
    """A photo surrogate's run folder as train-surrogate and fidelity --masks leave it: run.json (settings, command,
    the steps of its outcome unless None) and SET.json with the vs_masks summary for each of ``sets``."""
    settings = {"data": "runs/data/photos_unlabelled", **(settings or {})}
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps(
        {"settings": settings,
         "history": [{"command": ["saliency-ssl", "train-surrogate", settings["data"], *command]}],
         **({"outcome": {"steps": outcome}} if outcome else {})}))
    for set_name in sets:
        (run / f"{set_name}.json").write_text(json.dumps({"vs_masks": {
            "n": n, "surrogate": {"f": f, "iou": 0.6, "mae": 0.2},
            "exact": exact or {"f": 0.87, "iou": 0.75, "mae": 0.15},
            "centre_box": {"f": box_f, "iou": 0.4, "mae": 0.25}}}))


def test_photo_surrogate_table_names_each_run_by_its_steps_variants_and_training_data(tmp_path):
    """One row per (set, run), the exact labeller and the centred box once per set; a run trained on another folder
    than the photos without masks, or at another width, says so, and --name writes another file whose command
    names it."""
    runs = tmp_path / "runs"
    # the steps a run took are its outcome's (1,500), not its last epoch end's (1,410); a run without an
    # outcome (stopped early) falls back to that last epoch's step
    for name, data, f, outcome, ngf in (("a", "runs/data/photos_unlabelled", 0.80, 1500, 16),
                                        ("b", "runs/data/photos_cifar5k", 0.85, None, 16),
                                        ("c", "runs/data/photos_unlabelled", 0.82, 1500, 32)):
        _photo_run(runs / name, f, {"data": data, "ngf": ngf}, sets=("clothing_parsing", "weizmann_horses", "salbench"),
                   n=10, exact={"f": 0.86, "iou": 0.75, "mae": 0.15}, box_f=0.6, outcome=outcome)
        (runs / name / "history.json").write_text(json.dumps([{"step": 470}, {"step": 1410}]))
    collect_results.main(["photo_surrogate", "--runs", str(runs), "--name", "photo_data", "--out",
                          str(tmp_path / "results"), "--machine", "test"])
    written = json.loads((tmp_path / "results" / "photo_data.json").read_text())
    horses = [row[1:4] for row in written["rows"] if row[0].startswith("Weizmann")]
    assert horses == [["exact SaliencyCut", 10, 0.86], ["centred box (image-blind)", 10, 0.6],
                      ["surrogate, 0 variants a photo, 1500 steps", 10, 0.8],
                      ["surrogate, 0 variants a photo, 1410 steps, trained on photos_cifar5k", 10, 0.85],
                      ["surrogate, 0 variants a photo, 1500 steps, ngf 32", 10, 0.82]]
    assert written["command"][0] == "bash experiments/photo_surrogate_data.sh"
    assert written["command"][-1].endswith(f"--runs {runs} --name photo_data")
    assert any(note.startswith("photos_cifar5k:") for note in written["notes"])
    assert any(note.startswith("ngf 32: the U-Net at 2 times the default width") for note in written["notes"])
    assert not (tmp_path / "results" / "photo_surrogate.json").exists()


def test_photo_surrogate_size_table_orders_rows_by_side_with_the_labeller_on_the_input(tmp_path):
    """experiments/photo_surrogate_size.sh's OUT: runs at 96 and 128 px and labeller_at_input.py's folders. Each side
    has its own labeller and box rows (scored at that side), then its surrogate, then the labeller on the input."""
    runs = tmp_path / "runs"
    for size, f in ((96, 0.74), (128, 0.77)):
        exact = {"f": 0.86 + size / 10000, "iou": 0.75, "mae": 0.15}
        _photo_run(runs / f"s{size}", f, {"image_size": size}, exact=exact, command=("--size", str(size)))
        (runs / f"at_input_{size}").mkdir()
        (runs / f"at_input_{size}" / "weizmann_horses.json").write_text(json.dumps(
            {"n": 328, "image_size": size, "exact": exact, "at_input": {"f": 0.5 + size / 1000, "iou": 0.4, "mae": 0.2},
             "centre_box": {"f": 0.59, "iou": 0.4, "mae": 0.25}}))
    collect_results.main(["photo_surrogate", "--runs", str(runs), "--name", "size", "--out",
                          str(tmp_path / "results"), "--machine", "test"])
    written = json.loads((tmp_path / "results" / "size.json").read_text())
    assert [row[1:4] for row in written["rows"]] == [
        ["exact SaliencyCut, scored at 96 px", 328, 0.8696], ["centred box (image-blind), scored at 96 px", 328, 0.59],
        ["surrogate, 0 variants a photo, 1500 steps", 328, 0.74], ["exact SaliencyCut on the 96 px input", 328, 0.596],
        ["exact SaliencyCut, scored at 128 px", 328, 0.8728],
        ["centred box (image-blind), scored at 128 px", 328, 0.59],
        ["surrogate, 0 variants a photo, 1500 steps, 128 px", 328, 0.77],
        ["exact SaliencyCut on the 128 px input", 328, 0.628]]
    assert written["command"][0] == "bash experiments/photo_surrogate_size.sh"
    assert any(c.startswith("python experiments/labeller_at_input.py") and "--size 128" in c
               for c in written["command"])
    assert any(note.startswith("Exact SaliencyCut on the S px input") for note in written["notes"])


def test_photo_surrogate_options_table_names_each_option_away_from_the_defaults(tmp_path):
    """experiments/photo_surrogate_options.sh's runs: a run is named by each training option it set away from
    train-surrogate's defaults (a switch by its flag, a value with it), and a note says what each one is."""
    runs = tmp_path / "runs"
    for name, settings, f in (("plain", {}, 0.75), ("norotate", {"rotate": False}, 0.76),
                              ("mask40", {"lambda_mask": 40.0, "rotate": True}, 0.77)):
        _photo_run(runs / name, f, settings)
    collect_results.main(["photo_surrogate", "--runs", str(runs), "--name", "options", "--out",
                          str(tmp_path / "results"), "--machine", "test"])
    written = json.loads((tmp_path / "results" / "options.json").read_text())
    assert [row[1] for row in written["rows"][2:]] == ["surrogate, 0 variants a photo, 1500 steps, --lambda-mask 40",
                                                       "surrogate, 0 variants a photo, 1500 steps, --no-rotate",
                                                       "surrogate, 0 variants a photo, 1500 steps"]
    assert written["command"][0] == "bash experiments/photo_surrogate_options.sh"
    assert any(note.startswith("Options away from train-surrogate's defaults: --no-rotate, mirrors only")
               and "--lambda-mask, the mask term's weight (default 20)" in note for note in written["notes"])


def test_labeller_at_input_scores_the_labeller_on_the_surrogates_own_pixels(tmp_path):
    """Generated shapes, their true masks as the human masks: the labeller finds the shapes on the whole 64 px image
    and on the 32 px input alike, far above the centred box; the JSON holds the three rows and the image count."""
    import labeller_at_input

    from saliencyssl.app.label import label_images
    from saliencyssl.saliency import LabellerConfig

    paths = write_embedded_dataset(tmp_path / "data", per_class_train=2, per_class_test=0, size=64, photos=False)
    label_images(paths["train"], tmp_path / "cache", LabellerConfig(), workers=0, progress=False)
    out = tmp_path / "at_input_32" / "shapes.json"
    assert labeller_at_input.main([str(paths["train"]), str(paths["masks_train"]), "--cache", str(tmp_path / "cache"),
                                   "--size", "32", "--json", str(out), "--quiet"]) == 0
    written = json.loads(out.read_text())
    assert written["n"] == 8 and written["image_size"] == 32
    assert written["exact"]["iou"] > 0.8 and written["at_input"]["iou"] > 0.8
    assert written["centre_box"]["iou"] < written["at_input"]["iou"] - 0.2
    from PIL import Image

    first = sorted((paths["train"] / "ellipse").glob("*.png"))[0]  # an image the cache lacks: named, with the fix
    Image.open(first).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(paths["train"] / "ellipse" / "mirrored.png")
    with pytest.raises(SystemExit, match="1 images of .* have no target in .*saliency-ssl label"):
        labeller_at_input.main([str(paths["train"]), str(paths["masks_train"]), "--cache", str(tmp_path / "cache"),
                                "--size", "32", "--json", str(out), "--quiet"])


def test_photo_surrogate_domain_table_scores_every_run_on_the_held_out_horses(tmp_path):
    """experiments/photo_surrogate_domain.sh's runs: each scored on the even-numbered horses, the labeller's row
    once; the runs trained with the odd-numbered horses are named by their folder, with a note on what it holds,
    and the first note says which horses scored them."""
    runs = tmp_path / "runs"
    for name, f in (("photos_unlabelled", 0.74), ("photos_horses_a", 0.80), ("horses_a", 0.78)):
        _photo_run(runs / name, f, {"data": f"runs/data/{name}"}, sets=("weizmann_horses_b",), n=164, box_f=0.6)
    collect_results.main(["photo_surrogate", "--runs", str(runs), "--name", "domain", "--out",
                          str(tmp_path / "results"), "--machine", "test"])
    written = json.loads((tmp_path / "results" / "domain.json").read_text())
    assert [row[0] for row in written["rows"]] == ["Weizmann horses, the 164 even-numbered photos"] * 5
    assert [row[1:4] for row in written["rows"]] == [
        ["exact SaliencyCut", 164, 0.87], ["centred box (image-blind)", 164, 0.6],
        ["surrogate, 0 variants a photo, 1500 steps, trained on horses_a", 164, 0.78],
        ["surrogate, 0 variants a photo, 1500 steps, trained on photos_horses_a", 164, 0.8],
        ["surrogate, 0 variants a photo, 1500 steps", 164, 0.74]]
    assert written["command"][0] == "bash experiments/photo_surrogate_domain.sh"
    assert written["command"][-2].startswith("saliency-ssl fidelity runs/data/horses_b ")
    assert "164 even-numbered Weizmann horses" in written["notes"][0]
    assert [note.split(":")[0] for note in written["notes"][1:]] == ["photos_horses_a", "horses_a"]


def test_link_folders_parts_are_disjoint_halves_in_file_order(tmp_path, capsys):
    """--part 0/2 and 1/2 link alternate images of each source in sorted order; together they are the folder."""
    import link_folders

    source = tmp_path / "horses"
    source.mkdir()
    for i in range(1, 6):
        (source / f"horse{i:03d}.jpg").write_bytes(b"jpeg")
    assert link_folders.main([str(tmp_path / "a"), str(source), "--part", "0/2"]) == 0
    assert link_folders.main([str(tmp_path / "b"), str(source), "--part", "1/2"]) == 0
    a = sorted(p.name for p in (tmp_path / "a" / "horses").iterdir())
    b = sorted(p.name for p in (tmp_path / "b" / "horses").iterdir())
    assert a == ["horse001.jpg", "horse003.jpg", "horse005.jpg"] and b == ["horse002.jpg", "horse004.jpg"]
    assert (tmp_path / "a" / "horses" / "horse003.jpg").resolve() == (source / "horse003.jpg").resolve()
    for bad in ("2/2", "half"):
        with pytest.raises(SystemExit) as exit_:
            link_folders.main([str(tmp_path / "c"), str(source), "--part", bad])
        assert exit_.value.code == 2 and "invalid parse_part value" not in (err := capsys.readouterr().err)
        assert f"argument --part: {bad!r}" in err
    assert not (tmp_path / "c").exists()


def test_photo_speed_table_from_the_bench_files_alone_leaves_the_masks_table_alone(tmp_path):
    """A folder of only bench_surrogate.json and bench_labeller.json (the speed table's command) writes the speed
    table, with the network's rate, and does not replace the human-mask table with an empty one; a folder with
    neither is an error."""
    measure, results = tmp_path / "measure", tmp_path / "results"
    measure.mkdir()
    (measure / "bench_surrogate.json").write_text(json.dumps({
        "image_size": 96, "batch_size": 128, "num_images": 512, "labeller_images": 16, "labeller_ms_per_image": 20.0,
        "autocast": "bfloat16", "surrogate_ms_per_image": 2.0, "surrogate_network_ms_per_image": 1.5,
        "surrogate_regions_ms_per_image": 0.3, "network_mflop_per_image": 135.4, "network_gflop_per_second": 90.3,
        "load_average_before_after": [0.62, 1.08]}))
    (measure / "bench_labeller.json").write_text(json.dumps({"images": 32, "seconds": {
        "hc": {"median": 0.01}, "rc": {"median": 0.1}, "cut_faithful": {"median": 0.29}}}))
    results.mkdir()
    (results / "photo_surrogate.json").write_text("kept")
    (results / "photo_surrogate_speed.json").write_text(json.dumps({  # another day's measurement, as committed
        "date": "2026-12-06",
        "rows": [["exact labeller, original photo", 32, 422.9, 248.4], ["at 96 px", 16, 21.63, 12.7],
                 ["surrogate", 512, 1.703, 1.0]],
        "notes": ["... Medians; measured while other jobs shared the machine."]}))
    collect_results.main(["photo_surrogate", "--runs", str(measure), "--out", str(results), "--machine", "test",
                          "--date", "2026-12-07"])
    assert (results / "photo_surrogate.json").read_text() == "kept"
    speed = json.loads((results / "photo_surrogate_speed.json").read_text())
    assert speed["rows"][0][2:] == [400.0, 200.0] and speed["rows"][1][2:] == [20.0, 10.0]
    assert speed["notes"][0].endswith("one-minute load average 0.62 before the surrogate's timing and 1.08 after it "
                                      "(the benchmark's own thread counts 1).")
    assert speed["notes"][1:] == [
        "The network does 135 MFLOP per image (torch's FLOP counter, in float32), at 90 GFLOP/s here.",
        "The same commands on 2026-12-06 (other jobs sharing the machine): the labeller 422.9 ms on the original "
        "photo, the surrogate 1.703 ms, 248.4 times."]
    # collected again the same day, or from the same bench files a day later: the earlier day's note stays, once
    for date in ("2026-12-07", "2026-12-08"):
        collect_results.main(["photo_surrogate", "--runs", str(measure), "--out", str(results), "--machine", "test",
                              "--date", date])
        assert json.loads((results / "photo_surrogate_speed.json").read_text())["notes"] == speed["notes"]
    # a new measurement on a later day keeps this one's figures and load; the file takes the bench's own date
    bench = json.loads((measure / "bench_surrogate.json").read_text())
    (measure / "bench_surrogate.json").write_text(json.dumps({**bench, "surrogate_ms_per_image": 4.0,
                                                              "date": "2026-12-09"}))
    collect_results.main(["photo_surrogate", "--runs", str(measure), "--out", str(results), "--machine", "test",
                          "--date", "2026-12-10"])
    latest = json.loads((results / "photo_surrogate_speed.json").read_text())
    assert latest["date"] == "2026-12-09" and latest["notes"][-1] == (
        "The same commands on 2026-12-08 (load average 0.62 to 1.08): the labeller 400 ms on the original photo, the "
        "surrogate 2 ms, 200 times.")
    with pytest.raises(SystemExit, match="no scored surrogate run"):
        collect_results.main(["photo_surrogate", "--runs", str(tmp_path / "results"), "--out", str(tmp_path / "r2")])


def test_surrogate_regions_counts_what_detcon_pools_over(tmp_path):
    """Two halves and a 2x2-pixel fragment: three regions, two of 16 px or more owning the 8x8 grid's cells (the
    fragment owns none of its 4x4-pixel cells), the larger owning the cells of its half; labels need not be
    consecutive. The collected table has a row per source."""
    import surrogate_regions

    from saliencyssl.target import TargetBatch

    regions = torch.full((2, 1, 32, 32), 7, dtype=torch.int64)
    regions[0, 0, :, 16:] = 900
    regions[0, 0, 1:3, 1:3] = 3
    mask = torch.zeros(2, 1, 32, 32, dtype=torch.bool)
    mask[1, 0, :8, :] = True
    stats = surrogate_regions.region_stats(TargetBatch(mask.float(), mask, regions), grid=8, chunk=1)
    assert stats["regions"] == 2.0  # (3 + 1) / 2
    assert stats["regions_16px"] == stats["regions_64px"] == stats["regions_owning_a_cell"] == 1.5
    assert stats["small_regions_owning_a_cell"] == 0.0
    regions[1, 0, 4:8, 4:12] = 5  # 32 pixels: two whole cells, a small region owning them
    assert surrogate_regions.region_stats(TargetBatch(mask.float(), mask, regions), 8)["small_regions_owning_a_cell"] \
        == 0.5
    assert stats["largest_region_cells"] == 0.75  # (32 / 64 + 64 / 64) / 2
    assert stats["mask_area"] == 0.125 and stats["no_mask"] == 0.5
    # boundary recall and precision against the exact targets: itself 1 and 1; one region where the exact target
    # has a boundary draws none of it (recall 0 on that image); a boundary beside the exact one within a pixel counts
    halves = torch.zeros(1, 1, 32, 32, dtype=torch.int64)
    halves[..., 16:] = 1
    exact = TargetBatch(mask[:1].float(), mask[:1], halves)
    assert surrogate_regions.boundary_agreement(exact, exact) == {"boundary_recall": 1.0, "boundary_precision": 1.0}
    none = TargetBatch(mask[:1].float(), mask[:1], torch.zeros_like(halves))
    assert surrogate_regions.boundary_agreement(none, exact) == {"boundary_recall": 0.0, "boundary_precision": 0.0}
    shifted = torch.zeros_like(halves)
    shifted[..., 17:] = 1
    assert surrogate_regions.boundary_agreement(TargetBatch(mask[:1].float(), mask[:1], shifted), exact) == {
        "boundary_recall": 1.0, "boundary_precision": 1.0}
    report = tmp_path / "regions.json"
    report.write_text(json.dumps({"date": "2026-12-07", "size": 32, "grid": 8, "command": "python x.py",
                                  "surrogates": {"a": str(tmp_path / "a" / "surrogate.pt")},
                                  "caches": {"a, merged": str(tmp_path / "merged"), "b": str(tmp_path / "b")},
                                  "made_by": {"a, merged": "python experiments/merged_regions_cache.py --surrogate "
                                                           f"{tmp_path / 'a' / 'surrogate.pt'}"},
                                  "rows": {"exact labeller": stats, "surrogate, a": stats, "a, merged": stats,
                                           "b": stats}}))
    collect_results.main(["surrogate_regions", "--runs", str(report), "--out", str(tmp_path / "results"),
                          "--machine", "test"])
    written = json.loads((tmp_path / "results" / "surrogate_regions_cifar10.json").read_text())
    assert [row[:3] for row in written["rows"]] == [["exact labeller", 2.0, 1.5], ["surrogate, a", 2.0, 1.5],
                                                    ["a, merged", 2.0, 1.5], ["b", 2.0, 1.5]]
    assert written["columns"][-2:] == ["boundary recall", "boundary precision"]
    assert [row[-2:] for row in written["rows"]] == [[None, None]] * 4  # a report without them: empty cells
    assert written["notes"][0].startswith("The 2 pretraining images at 32 px")
    assert written["notes"][1] == ("Surrogate, a (SURROGATE_1 in the commands): the surrogate.pt of a run folder "
                                   "named a.")
    assert written["notes"][2].startswith("A, merged: the targets of the cache merged, read as they are "
                                          "(experiments/merged_regions_cache.py writes a surrogate's targets")
    assert written["notes"][3] == "B: the targets of the cache b, read as they are."  # made by no known script
    # the uncommitted checkpoint is named by its placeholder in every command
    assert written["command"][:2] == ["python experiments/merged_regions_cache.py --surrogate SURROGATE_1",
                                      "python x.py"]


def test_parity_merged_arm_is_named_by_the_surrogate_of_the_all_arm(grids, monkeypatch):
    """The merged arm's config serves targets from a cache (no surrogate of its own): its note is that of the
    surrogate the cache records, the 40,000-image one, shared with the all arm; an arm not run is named as not
    measured. The recut arm's cache was written by the same script from the same surrogate: it shares that note, and
    has its gap row against the all arm. The b30 arm's cache was written from another surrogate (the all arm's
    recipe with the boundary term x3): its note is its own, and it has its gap row against the all arm, whose name
    begins its own; so has the seed1 arm's (a second training of that recipe). The coarsened arm pretrains on the
    labeller's targets (its cache's record is of its own kind): it has its gap rows (against exact targets and
    against the all arm, as the merged arm has) and its note, and no surrogate's agreement."""
    sur_all = _scored_surrogate(grids, "sur_all", 0.74, 0.43, 0.67)
    every = _config(grids / "all.json", grids / "ga", 0, [["detcon-simclr", "default"]],
                    aug_source="surrogate", surrogate=sur_all)
    # its cache records the surrogate that made it, as experiments/merged_regions_cache.py writes it
    merged = _cache_arm(grids, "merged", "merged_regions.json", [(0.49, 0.01), (0.72, 0.0)],
                        command="python m.py", min_pixels=50, surrogate=sur_all)
    half_all = _config(grids / "half_all.json", grids / "gha", 0, [["detcon-simclr", "default"]],
                       aug_source="cache,surrogate", surrogate=sur_all)
    _results(every, _accuracy([(0.0, 0.0), (0.0, 0.0)], [(0.48, 0.01), (0.70, 0.0)]))
    recut = _cache_arm(grids, "recut", "merged_regions.json", [(0.50, 0.01), (0.69, 0.0)],  # a lower boundary cut
                       command="python m.py --boundary-threshold 0.3", boundary_threshold=0.3, min_pixels=50,
                       surrogate=sur_all)
    sur_b30 = _scored_surrogate(grids, "sur_b30", 0.73, 0.42, 0.70)  # another surrogate, with its training record
    (grids / "sur_b30" / "run.json").write_text(json.dumps({"outcome": {"steps": 21846, "minutes": 15.2}}))
    b30 = _cache_arm(grids, "b30", "merged_regions.json", [(0.49, 0.01), (0.73, 0.0)],
                     command="python m.py --min-pixels 0", boundary_threshold=0.5, min_pixels=0,
                     surrogate=sur_b30)
    sur_seed1 = _scored_surrogate(grids, "sur_seed1", 0.75, 0.41, 0.68)  # a second training of the all arm's recipe
    seed1 = _cache_arm(grids, "retrained", "merged_regions.json", [(0.47, 0.01), (0.71, 0.0)],
                       command="python m.py --min-pixels 0", boundary_threshold=0.5, min_pixels=0, surrogate=sur_seed1)
    coarsened = _cache_arm(grids, "coarsened", "coarsened_exact.json", [(0.47, 0.01), (0.70, 0.0)],
                           command="python c.py", surrogate=sur_all)
    seed2 = _config(grids / "seed2.json", grids / "gs2", 2, [["detcon-simclr", "default"]])
    _results(seed2, _accuracy([(0.0, 0.0), (0.0, 0.0)], [(0.46, 0.01), (0.70, 0.0)]))
    monkeypatch.setitem(collect_results.PARITY_BUDGETS, "1248", {
        **collect_results.PARITY_BUDGETS["624"], "all": every, "half_all": half_all, "merged": merged,
        "recut": recut, "b30": b30, "seed1": seed1, "coarsened": coarsened, "exact_seed2": seed2, "result": "p.json"})
    collect_results.main(["parity", "--steps", "1248", "--out", str(grids / "results"), "--machine", "test"])
    written = json.loads((grids / "results" / "p.json").read_text())
    rows = _rows(grids / "results" / "p.json")
    assert rows["merged regions of the 40,000-image surrogate minus exact, kNN"][1] == pytest.approx([0.01, 0.01])
    assert ("The surrogate of the targets of the 40,000-image surrogate and merged regions of the 40,000-image "
            "surrogate and regions of the 40,000-image surrogate cut at 0.3, under 50 px merged rows: agreement with the exact targets of the 10,000 test images: presence accuracy 0.740, "
            "mask IoU on present masks 0.430") in " ".join(written["notes"])
    assert "Not measured at this budget: half exact, half from the 40,000-image surrogate." in written["notes"]
    assert "Merged regions of the 40,000-image surrogate: every target from that surrogate" in written["notes"][0]
    coarse = "exact targets coarsened to the 40,000-image surrogate's regions"
    assert rows[f"{coarse} minus exact, kNN"][1] == pytest.approx([-0.01, 0.01])
    assert f"{coarse[0].upper()}{coarse[1:]}: the labeller's targets" in written["notes"][0]
    assert not any(coarse in note for note in written["notes"][1:])
    # the two arms that alter the all arm's targets are compared with it too
    all_arm = "targets of the 40,000-image surrogate"
    assert rows[f"{coarse} minus {all_arm}, kNN"][:2] == [pytest.approx([-0.01, 0.01]), [0.0, 0.0]]
    assert rows[f"merged regions of the 40,000-image surrogate minus {all_arm}, linear"][0] == pytest.approx(
        [0.01, 0.01])
    assert not any(name.startswith(f"{all_arm} minus {all_arm}") for name in rows)
    recut_arm = "regions of the 40,000-image surrogate cut at 0.3, under 50 px merged"
    assert rows[f"{recut_arm} minus {all_arm}, kNN"][:2] == [pytest.approx([0.02, 0.01]), pytest.approx([-0.01, 0.0])]
    assert f"{recut_arm[0].upper()}{recut_arm[1:]}: the same, with its regions under 50 pixels then merged" \
        in written["notes"][0]
    b30_arm = "targets of the 40,000-image surrogate, boundary term x3"
    assert rows[f"{b30_arm} minus {all_arm}, kNN"][:2] == [pytest.approx([0.01, 0.01]), pytest.approx([0.03, 0.0])]
    assert rows[f"{b30_arm} minus exact, kNN"][1] == pytest.approx([0.02, 0.01])
    assert (f"The surrogate of the {b30_arm} rows: agreement with the exact targets of the 10,000 test images "
            "(trained 21,846 steps of 64 in 15 minutes): presence accuracy 0.730, mask IoU on present masks 0.420, "
            "region boundary F 0.700.") in written["notes"]
    assert f"{b30_arm[0].upper()}{b30_arm[1:]}: every target, at the usual cut" in written["notes"][0]
    # a second training of the all arm's recipe: its gap row against the all arm, its own surrogate's note
    seed1_arm = "targets of the 40,000-image surrogate, training seed 1"
    assert rows[f"{seed1_arm} minus {all_arm}, kNN"][:2] == [pytest.approx([-0.01, 0.01]), pytest.approx([0.01, 0.0])]
    assert not any(name.startswith(f"{seed1_arm} minus {b30_arm}") for name in rows)
    assert (f"The surrogate of the {seed1_arm} rows: agreement with the exact targets of the 10,000 test images: "
            "presence accuracy 0.750, mask IoU on present masks 0.410, region boundary F 0.680.") in written["notes"]
    assert f"{seed1_arm[0].upper()}{seed1_arm[1:]}: every target, at the usual cut, from a second training" \
        in written["notes"][0]
    # a third seed of the exact targets, kept apart from the two every arm is compared with, and compared with them
    assert rows["exact targets, a third pretraining seed (1 seed), kNN"][0] == [0.46, 0.01]
    assert rows["exact targets (2 seeds), kNN"][0] == [0.5, 0.0224]  # RMS of the seeds' label spreads 0.01, 0.03
    assert rows["exact targets, a third pretraining seed minus exact, kNN"][0] == pytest.approx([-0.04, 0.0224])


def test_merge_small_regions_joins_each_fragment_to_its_longest_border_neighbour():
    """A 2x2 fragment inside the left half joins the left half (all its border); a lone corner pixel between the
    two halves joins the one it shares more border with; nothing is left under the floor, labels run 0..R-1 in
    raster order; with a floor above every region all merge into one; a map already above the floor is kept."""
    import numpy as np

    from merged_regions_cache import merge_small_regions

    labels = np.zeros((8, 8), np.int64)
    labels[:, 4:] = 5
    labels[1:3, 1:3] = 9
    labels[7, 4] = 3  # borders: left half 1 pixel, right half 2 pixels
    out = merge_small_regions(labels, 5)
    expected = (np.arange(8)[None, :] >= 4).repeat(8, 0).astype(np.int64)
    assert np.array_equal(out, expected)
    assert np.array_equal(merge_small_regions(labels, 100), np.zeros((8, 8), np.int64))
    assert np.array_equal(merge_small_regions(labels * 0 + 7, 100), np.zeros((8, 8), np.int64))
    halves = np.where(expected == 1, 40, 2)
    assert np.array_equal(merge_small_regions(halves, 32), expected)
    # nothing under the floor: the input's own order (0, 3, 5, 9 -> 0..3), not raster order, so DetCon-S's
    # ties between regions fall as on the unmerged map
    assert np.array_equal(merge_small_regions(labels, 1), np.searchsorted([0, 3, 5, 9], labels))


def test_predict_targets_cuts_the_boundary_where_asked():
    """At 0.5 the experiments' cache scripts predict the router's targets (predict_all) region for region, batch
    by batch; a lower boundary cut draws more boundaries (more regions) and leaves the mask as it is."""
    from merged_regions_cache import predict_targets

    from saliencyssl.surrogate.evaluation import predict_all
    from saliencyssl.surrogate.model import Surrogate
    from saliencyssl.target import TargetBatch

    surrogate = Surrogate.fresh(32)
    channels = torch.rand(70, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    surrogate.predict_channels = lambda images: channels[images[:, 0, 0, 0].long()]  # image i -> channels[i]
    images = torch.zeros(70, 3, 32, 32, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.arange(70, dtype=torch.uint8)
    router = predict_all(surrogate, images, batch_size=64)
    same = predict_targets(surrogate, images, 0.5)
    assert torch.equal(same.regions, router.regions) and torch.equal(same.mask, router.mask)
    assert torch.equal(router.regions, TargetBatch.from_channels(channels).regions)
    lower = predict_targets(surrogate, images, 0.3)
    assert torch.equal(lower.mask, router.mask)
    assert torch.equal(lower.regions, TargetBatch.from_channels(channels, boundary_threshold=0.3).regions)
    assert sum(len(torch.unique(r)) for r in lower.regions) > sum(len(torch.unique(r)) for r in router.regions)


def test_coarsen_keeps_only_the_exact_boundaries_the_guide_also_draws():
    """Exact regions merge when they touch and overlap the same guide region most (not: where their first pixel
    lies, nor wherever the guide leaves part of their border uncut); regions owned by one guide region but not
    touching stay apart; a merged region takes its lowest label; an even overlap goes to the lower guide label; a
    guide as fine as the exact map (itself, or one splitting every region) leaves the exact labels bit for bit."""
    import numpy as np

    from coarsened_exact_cache import coarsen

    exact = np.repeat(np.array([[9, 9, 3, 3, 5, 5, 0, 0]]), 4, axis=0)
    assert np.array_equal(coarsen(exact, exact), exact)
    finer = exact * 10 + (np.arange(4)[:, None] >= 2)  # every region split in two
    assert np.array_equal(coarsen(exact, finer), exact)
    assert np.array_equal(coarsen(exact, np.zeros_like(exact)), np.zeros_like(exact))
    # the guide joins the first two strips (the second mostly: 5 of its 8 pixels, though its first pixel is in
    # guide region 2 and the guide cuts one pixel of their shared border) and the last two
    guide = np.repeat(np.array([[1, 1, 1, 2, 4, 4, 4, 4]]), 4, axis=0)
    guide[0, 2], guide[0, 3], guide[1, 3] = 2, 1, 1
    joined = np.repeat(np.array([[3, 3, 3, 3, 0, 0, 0, 0]]), 4, axis=0)
    assert np.array_equal(coarsen(exact, guide), joined)
    # strip 3 lies half in guide region 1, half in 4: it goes with the lower, 1, and so with strip 9
    assert np.array_equal(coarsen(exact, np.repeat(np.array([[1, 1, 1, 4, 4, 4, 4, 4]]), 4, axis=0)), joined)
    assert np.array_equal(coarsen(exact, np.repeat(np.array([[4, 4, 4, 1, 1, 1, 1, 1]]), 4, axis=0)),
                          np.repeat(np.array([[9, 9, 0, 0, 0, 0, 0, 0]]), 4, axis=0))
    # strips 9 and 5 both lie in guide region 7 but do not touch: the strip between them keeps them apart
    apart = np.repeat(np.array([[7, 7, 8, 8, 7, 7, 6, 6]]), 4, axis=0)
    assert np.array_equal(coarsen(exact, apart), exact)


def test_labeller_table_comes_from_the_committed_benchmark_output(tmp_path, capsys):
    """The committed salbench benchmark output makes the committed table; one measured without --gt is refused."""
    from _paths import REPO

    raw = REPO / "results" / "raw" / "labeller"
    collect_results.main(["labeller", "--runs", str(raw), "--out", str(tmp_path)])
    made = json.loads((tmp_path / "labeller_cpp.json").read_text())
    committed = json.loads((REPO / "results" / "labeller_cpp.json").read_text())
    assert made["rows"] == committed["rows"] and made["notes"] == committed["notes"]
    rows = {row[0]: row for row in made["rows"]}
    assert rows["RC map"][1] == "identical" and rows["SaliencyCut mask"][4] == rows["SaliencyCut mask"][5]
    partial = json.loads((raw / "bench_labeller.json").read_text())
    del partial["accuracy_vs_gt"]
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / "bench_labeller.json").write_text(json.dumps(partial))
    with pytest.raises(SystemExit, match="without --reference or --gt"):
        collect_results.main(["labeller", "--runs", str(tmp_path / "partial"), "--out", str(tmp_path)])


def test_surrogate_width_table_comes_from_the_committed_benchmark_outputs(tmp_path):
    """The committed width benchmarks make the committed table, narrowest first, each against the same labeller."""
    from _paths import REPO

    raw = REPO / "results" / "raw" / "surrogate_width"
    collect_results.main(["surrogate_width", "--runs", str(raw), "--out", str(tmp_path)])
    made = json.loads((tmp_path / "surrogate_width.json").read_text())
    committed = json.loads((REPO / "results" / "surrogate_width.json").read_text())
    assert made["rows"] == committed["rows"] and made["notes"] == committed["notes"]
    assert [row[0] for row in made["rows"]] == ["ngf 4", "ngf 8", "ngf 16 (the default)"]
    labeller_ms = {round(row[3] * row[4]) for row in made["rows"]}  # network ms x ratio: the one labeller time
    assert max(labeller_ms) - min(labeller_ms) <= 1
    with pytest.raises(SystemExit, match="needs bench_surrogate_ngf"):
        collect_results.main(["surrogate_width", "--runs", str(tmp_path), "--out", str(tmp_path)])


def test_cpu_speed_tables_come_from_the_committed_benchmark_outputs(tmp_path):
    """The committed CPU benchmarks make the four committed tables; a folder without them is refused by name."""
    from _paths import REPO

    raw = REPO / "results" / "raw" / "cpu_speed"
    collect_results.main(["cpu_speed", "--runs", str(raw), "--out", str(tmp_path)])
    for name in ("scale_cpu", "pack_cpu", "router_cpu", "epoch_cpu"):
        made = json.loads((tmp_path / f"{name}.json").read_text())
        committed = json.loads((REPO / "results" / f"{name}.json").read_text())
        assert made["rows"] == committed["rows"] and made["notes"] == committed["notes"], name
        assert made["date"] == committed["date"] == "2026-12-07"
    router = {row[0]: row for row in json.loads((tmp_path / "router_cpu.json").read_text())["rows"]}
    assert router["none"][2] == router["none"][4] == 1.0 and router["exact"][1] > router["cache"][1]
    with pytest.raises(SystemExit, match="no .*bench_scale.json; run the experiment that writes it first"):
        collect_results.main(["cpu_speed", "--runs", str(tmp_path), "--out", str(tmp_path)])


def test_gpu_speed_table_says_which_aims_are_met(tmp_path):
    """experiments/gpu_speed.sh run's OUT folder (the fields its benchmarks write) becomes the aims table."""
    rounds = [{"none": {"epoch": 10.0}, "cache": {"epoch": 10.2}, "surrogate": {"epoch": 12.0}}]
    (tmp_path / "epoch_sal.json").write_text(json.dumps({
        "policy": "sal+default", "ratio_to_none": {"none": 1.0, "cache": 1.02, "surrogate": 1.2}, "num_images": 5000,
        "image_size": 32, "batch_size": 256, "amp": True, "rounds": rounds, "epochs": 2, "surrogate": "sur32.pt"}))
    (tmp_path / "epoch_detcon.json").write_text(json.dumps({"rounds": [{"cache": {"epoch": 8.0},
                                                                         "surrogate": {"epoch": 8.8}}]}))
    for size, regions in ((32, 0.001), (96, 0.004)):
        (tmp_path / f"speed{size}.json").write_text(json.dumps({
            "surrogate_regions_ms_per_image": regions, "surrogate_network_ms_per_image": 0.002,
            "surrogate_ms_per_image": 0.003 + regions, "batch_size": 512, "device_name": "NVIDIA H100 80GB HBM3",
            "device": "cuda", "torch": "2.11.0", "date": "2026-12-08", "cpu": "AMD EPYC"}))
    (tmp_path / "labeller.json").write_text(json.dumps({"seconds": {k: {"median": 0.1} for k in
                                                                    ("hc", "rc", "cut_faithful")}}))
    collect_results.main(["gpu_speed", "--runs", str(tmp_path), "--out", str(tmp_path)])
    made = json.loads((tmp_path / "speed_gpu.json").read_text())
    assert made["title"] == "The speed aims on NVIDIA H100 80GB HBM3" and made["date"] == "2026-12-08"
    assert [row[1] for row in made["rows"]] == [1.02, 1.2, 1.1, 0.5, 2.0, 42857.1]  # 300 ms / 0.007 ms
    assert [row[3] for row in made["rows"]] == ["yes", "no", "", "yes", "no", "yes"]
