"""Every script in scripts/, benchmarks/ and experiments/ starts as its docstring says: ``python FOLDER/x.py``.

pytest puts those folders on ``sys.path`` (pyproject.toml), which hides a script that imports a
neighbour folder's module (``bench_common``) without finding it itself. Each script runs here as a
user runs it: a fresh interpreter, another working directory, no ``PYTHONPATH``, asked for ``--help``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: Modules the scripts import, not scripts.
NOT_SCRIPTS = {"bench_common.py"}
SCRIPTS = sorted(p for folder in ("scripts", "benchmarks", "experiments") for p in (REPO / folder).glob("*.py")
                 if p.name not in NOT_SCRIPTS)


def test_every_script_folder_has_scripts():
    names = {p.parent.name for p in SCRIPTS}
    assert names == {"scripts", "benchmarks", "experiments"}


def _name(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


@pytest.fixture(scope="module")
def help_runs(tmp_path_factory):
    """``--help`` of every script, two at a time (each mostly imports torch)."""
    cwd = tmp_path_factory.mktemp("elsewhere")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def run(path: Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(path), "--help"], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=300)

    with ThreadPoolExecutor(2) as pool:
        return {_name(path): done for path, done in zip(SCRIPTS, pool.map(run, SCRIPTS))}


@pytest.mark.slow
@pytest.mark.parametrize("script", [_name(p) for p in SCRIPTS])
def test_script_help_runs_from_anywhere(help_runs, script):
    done = help_runs[script]
    assert done.returncode == 0, f"{script} --help failed:\n{done.stderr[-2000:]}"
    assert "usage:" in done.stdout.lower(), f"{script} --help printed no usage:\n{done.stdout[:500]}"


def test_the_command_lists_every_stage_with_its_summary_without_importing_the_stages(tmp_path):
    """``saliency-ssl --help`` read each stage's SUMMARY by importing the stage, which loaded torch and lightly
    (seconds); it now reads the line from the source, and must show what the module says."""
    import importlib

    from saliencyssl.app.cli import STAGES, usage

    listed = {line.split()[0]: line for line in usage().split("stages:\n")[1].splitlines()}
    assert list(listed) == list(STAGES)
    for name, module in STAGES.items():
        summary = importlib.import_module(module).SUMMARY
        assert summary and listed[name].endswith(f"  {summary}"), name
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = ("import sys, contextlib, io\nfrom saliencyssl.app.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()): main(['--help'])\n"
            "print(sorted(m for m in ('torch', 'lightly', 'numpy', 'cv2') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env,
                         check=True).stdout
    assert out.strip() == "[]"
