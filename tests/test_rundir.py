"""RunDir: one record per run folder decides new, resume, refuse and stale for every stage."""

from __future__ import annotations

import json

import pytest

from saliencyssl.app.rundir import RunDir, RunExistsError, RunMismatchError, RunRecordError


def test_a_run_starts_resumes_and_finishes(tmp_path):
    run = RunDir(tmp_path / "r", "pretrain")
    assert run.state({"seed": 0}).status == "new"
    assert run.start({"seed": 0, "data": tmp_path}, free={"device": "cpu"}).status == "new"
    record = json.loads((tmp_path / "r" / "run.json").read_text())
    assert record["settings"] == {"seed": 0, "data": str(tmp_path)} and record["free"] == {"device": "cpu"}
    with pytest.raises(RunExistsError, match="already holds a pretrain run"):
        run.start({"seed": 0, "data": tmp_path})
    assert run.start({"seed": 0, "data": tmp_path}, free={"device": "cuda"}, resume=True).status == "started"
    assert len(json.loads(run.record_path.read_text())["history"]) == 2
    run.finish(loss=1.25)
    state = run.state({"seed": 0, "data": str(tmp_path)})
    assert state.finished and not state.stale and state.record["outcome"] == {"loss": 1.25}


def test_other_settings_are_named_and_refused(tmp_path):
    run = RunDir(tmp_path, "evaluate")
    run.start({"fractions": ["0.1", "1.0"], "seeds": 3, "k": (200, 0.1)})
    run.finish()
    state = run.state({"fractions": ["0.1", "1.0"], "seeds": 2, "k": [200, 0.1], "new": True})
    assert state.stale and not state.finished
    assert [str(d) for d in state.differences] == ["new '(not recorded)' (now True)", "seeds 3 (now 2)"]
    with pytest.raises(RunMismatchError, match=r"seeds 3 \(now 2\)") as error:
        run.start({"fractions": ["0.1", "1.0"], "seeds": 2, "k": [200, 0.1]}, resume=True)
    assert [d.key for d in error.value.differences] == ["seeds"]


def test_foreign_folders_and_records_are_refused(tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(RunRecordError, match="holds files but no run.json"):  # --force or --resume cannot help
        RunDir(tmp_path / "busy", "pretrain").start({"seed": 0})
    other = RunDir(tmp_path / "seg", "segment")
    other.start({"seed": 0})
    with pytest.raises(RunRecordError, match="holds a segment run, not a pretrain run"):
        RunDir(tmp_path / "seg", "pretrain").state({"seed": 0})
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "run.json").write_text("{not json")
    with pytest.raises(RunRecordError, match="damaged"):
        RunDir(tmp_path / "bad", "pretrain").state({})
    with pytest.raises(TypeError, match="JSON values"):
        RunDir(tmp_path / "x", "pretrain").start({"weird": object()})
