"""One run folder for every stage that writes one: what made it, and what a new request may do with it.

A stage that writes a run folder (pretraining, the surrogate, an evaluation, a segmentation
evaluation) describes its request as **settings**: a flat JSON object of the values that make
its result what it is (the method, the seed, the data folder resolved, the digest of the
backbone it evaluates, ...). Values a resumed run may change (the device, a time budget, progress
bars) are **free**: recorded, never compared. :class:`RunDir` writes both to ``RUN_DIR/run.json``
when a run starts and adds its outcome when it finishes, and answers every question about an
existing folder from one comparison of the recorded settings with the requested ones
(:func:`compare_settings`):

==============================  =========================================================
folder holds                    request
==============================  =========================================================
nothing (or no run.json)        start a new run (a folder with other files is refused)
a run, settings equal           resume it if asked (``resume=True``), else :class:`RunExistsError`;
                                a finished one is done (:attr:`RunState.finished`)
a run, settings differ          :class:`RunMismatchError` naming each difference; for a
                                grid cell, :attr:`RunState.stale`
==============================  =========================================================

The record is written atomically (a temporary file, then a rename), so a run killed at any
moment leaves the previous record whole.

Example:
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> run = RunDir(folder, "pretrain")
    >>> run.start({"method": "simclr", "seed": 0}).status
    'new'
    >>> run.finish(loss=1.5)
    >>> run.state({"method": "simclr", "seed": 0}).finished
    True
    >>> [str(d) for d in run.state({"method": "simclr", "seed": 1}).differences]
    ['seed 0 (now 1)']
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from saliencyssl.files import read_text_file, replace_file

RUN_RECORD = "run.json"
#: The largest run record read (one is a few KB; its history grows by a line a run).
MAX_RECORD_BYTES = 16 << 20
RECORD_FORMAT = "saliency-ssl-run-1"
_ABSENT = "(not recorded)"


@dataclass(frozen=True)
class Difference:
    """One setting whose recorded value differs from the requested one."""

    key: str
    recorded: Any
    requested: Any

    def __str__(self) -> str:
        return f"{self.key} {self.recorded!r} (now {self.requested!r})"


class RunDirError(ValueError):
    """A run folder a request cannot use; ``path`` names it."""

    def __init__(self, path: Path, message: str):
        self.path = Path(path)
        super().__init__(message)


class RunExistsError(RunDirError):
    """The folder holds a run (or other files) and the request did not ask to resume it."""


class RunMismatchError(RunDirError):
    """The folder's run was made with other settings; ``differences`` lists them."""

    def __init__(self, path: Path, message: str, differences: list[Difference]):
        super().__init__(path, message)
        self.differences = differences


class RunRecordError(RunDirError):
    """``run.json`` cannot be read (damaged, or not a saliency-ssl run record)."""


@dataclass
class RunState:
    """What a folder holds, seen from one request.

    Attributes:
        status: ``"new"`` (no run), ``"started"`` (a run began, no outcome yet) or ``"finished"``.
        differences: recorded settings that differ from the request's (empty when they agree).
        record: the whole record (``{}`` for a new folder).
    """

    status: str
    differences: list[Difference] = field(default_factory=list)
    record: dict = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        """A finished run with the requested settings: nothing to do."""
        return self.status == "finished" and not self.differences

    @property
    def stale(self) -> bool:
        """A run whose settings differ from the request's."""
        return bool(self.differences)


def normalise(settings: dict) -> dict:
    """``settings`` as JSON would bring them back (tuples as lists, paths as strings), so a recorded
    and a requested value compare equal exactly when they are the same setting.

    Raises:
        TypeError: a value JSON cannot hold.
    """
    return json.loads(json.dumps(settings, default=_json_default, sort_keys=True))


def _json_default(value):
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"run settings must be JSON values, got {type(value).__name__}: {value!r}")


def compare_settings(recorded: dict, requested: dict, ignore: Iterable[str] = ()) -> list[Difference]:
    """The settings that differ between a record and a request (a key on one side only differs too).

    Args:
        recorded: the settings of ``run.json``.
        requested: the request's settings (normalised here).
        ignore: keys not compared.
    """
    requested = normalise(requested)
    skip = set(ignore)
    out = []
    for key in sorted((set(recorded) | set(requested)) - skip):
        was, now = recorded.get(key, _ABSENT), requested.get(key, _ABSENT)
        if was != now:
            out.append(Difference(key, was, now))
    return out


def describe(differences: list[Difference]) -> str:
    """``"seed 0 (now 1); epochs 8 (now 10)"``."""
    return "; ".join(str(d) for d in differences)


class RunDir:
    """A stage's run folder (see the module docstring).

    Args:
        path: the folder.
        stage: the stage's name (``pretrain``, ``train-surrogate``, ``evaluate``, ...); a folder
            made by another stage is refused.
    """

    def __init__(self, path: str | Path, stage: str):
        self.path = Path(path)
        self.stage = stage

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r}, stage={self.stage!r})"

    def __truediv__(self, name: str) -> Path:
        """The path of an artefact of the run: ``run / "backbone.pt"``."""
        return self.path / name

    @property
    def record_path(self) -> Path:
        return self.path / RUN_RECORD

    def read(self) -> dict | None:
        """The record, or ``None`` when the folder holds none.

        Raises:
            RunRecordError: ``run.json`` is damaged, not a run record, or another stage's.
        """
        try:  # a regular file of bounded size: a link to /dev/zero or a pipe named run.json is refused unread
            text = read_text_file(self.record_path, MAX_RECORD_BYTES, "run record")
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:
            raise RunRecordError(self.path, f"{self.record_path} cannot be read ({error}); delete {self.path} to run "
                                            f"again, or choose another folder") from None
        try:
            record = json.loads(text)
        except (ValueError, RecursionError) as error:
            raise RunRecordError(self.path, f"{self.record_path} is damaged ({error}); delete {self.path} to run "
                                            f"again, or choose another folder") from error
        if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT \
                or not isinstance(record.get("settings"), dict) or not isinstance(record.get("history", []), list):
            raise RunRecordError(self.path, f"{self.record_path} is not a saliency-ssl run record; choose another "
                                            f"folder")
        if record.get("stage") != self.stage:
            raise RunRecordError(self.path, f"{self.path} holds a {record.get('stage')} run, not a {self.stage} run; "
                                            f"choose another folder")
        return record

    def state(self, settings: dict) -> RunState:
        """What the folder holds for a request with ``settings`` (see :class:`RunState`)."""
        record = self.read()
        if record is None:
            return RunState("new")
        status = "finished" if record.get("finished") else "started"
        return RunState(status, compare_settings(record["settings"], settings), record)

    def check(self, settings: dict, resume: bool = False, restart_unfinished: bool = False) -> RunState:
        """What :meth:`start` would do with this request, without writing anything.

        Args:
            settings: the values that make the run's result (compared on resume).
            resume: go on with a started (or finished) run whose settings agree.
            restart_unfinished: a started run that never finished is replaced, whatever its
                settings (for stages whose unfinished runs hold nothing worth keeping, such as an
                evaluation that failed half way); it is then reported as ``new``.

        Returns:
            The folder's state (``new``, ``started`` or ``finished``).

        Raises:
            RunExistsError: the folder holds a run and ``resume`` is false, or holds other files
                but no run record.
            RunMismatchError: ``resume`` and the recorded settings differ.
            RunRecordError: an unreadable record.
        """
        state = self.state(settings)
        if restart_unfinished and state.status == "started":
            return RunState("new")
        if state.status == "new":
            if self.path.is_dir() and any(self.path.iterdir()):
                raise RunRecordError(self.path, f"{self.path} holds files but no {RUN_RECORD}: it is not a run folder "
                                                f"of this version; choose another folder (or delete it)")
        elif not resume:
            raise RunExistsError(self.path, f"{self.path} already holds a {self.stage} run "
                                            f"({'finished' if state.status == 'finished' else 'started'})")
        elif state.differences:
            raise RunMismatchError(self.path, f"{self.path} holds a {self.stage} run made with other settings: "
                                              f"{describe(state.differences)}; resume with the same settings, or "
                                              f"choose another folder", state.differences)
        return state

    def start(self, settings: dict, free: dict | None = None, resume: bool = False,
              restart_unfinished: bool = False) -> RunState:
        """Begin (or resume) a run with ``settings``: :meth:`check`, then write the record.

        Args:
            settings, resume, restart_unfinished: as for :meth:`check`.
            free: values recorded for reference that a resumed run may change.

        Returns:
            The folder's state before this call (``new``, ``started`` or ``finished``).
        """
        settings = normalise(settings)
        state = self.check(settings, resume, restart_unfinished)
        record = state.record or {"format": RECORD_FORMAT, "stage": self.stage, "settings": settings,
                                  "created": _now(), "version": _version()}
        record["free"] = normalise(free or {})
        record.setdefault("history", []).append({"started": _now(), "command": _command()})
        record.pop("finished", None)
        record.pop("outcome", None)
        self._write(record)
        return state

    def finish(self, **outcome: Any) -> None:
        """Mark the run finished, with a JSON-able outcome (final scores, artefact names)."""
        record = self.read()
        if record is None:
            raise RunRecordError(self.path, f"{self.path} has no run record to finish; start the run first")
        record["finished"] = _now()
        record["outcome"] = normalise(outcome)
        self._write(record)

    def _write(self, record: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        replace_file(self.record_path, json.dumps(record, indent=2, sort_keys=True))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _command() -> list[str]:
    return [Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv and sys.argv[0] else []


def _version() -> str:
    from saliencyssl import __version__

    return __version__


__all__ = ["RunDir", "RunState", "Difference", "RunDirError", "RunExistsError", "RunMismatchError",
           "RunRecordError", "compare_settings", "normalise", "describe", "RUN_RECORD"]
