"""The experiment grid: methods x policies, each pretrained and evaluated at label fractions.

A grid is a JSON file (:class:`GridConfig`); :func:`run` works through its cells:

1. label the pretraining images into the cache (skipping what it holds) when a cell reads
   targets (its policy draws views from them, or its method pools its loss over them);
2. per cell (method, policy) and pretraining seed: pretrain (``RUN/runs/<method>__<policy>/backbone.pt``,
   ``...__seed<S>`` for seeds after the first), then evaluate
   (``RUN/evals/<method>__<policy>/results.json``). Both folders are run folders
   (:class:`~saliencyssl.app.rundir.RunDir`): a finished one made with the settings the config asks
   for is skipped, an interrupted run resumes from its checkpoint, and one made with other
   settings stops the grid (:class:`StaleCellError`, naming each difference) before anything is
   written;
3. the baselines (``random``: a randomly initialised ResNet-18, the starting point of a run with the
   same seed) are evaluated the same way, once per pretraining seed;
4. everything is collected into ``RUN/grid_results.csv``, ``RUN/grid_results.md`` and one plot
   per method and protocol with one line per policy (the paper's Fig. 11 style;
   :mod:`saliencyssl.eval.gridtable`). A cell pretrained
   with several seeds (``pretrain_seeds``) is one row: the mean over its runs, the spread over
   label subsets and the spread over pretraining seeds side by side.

With ``pretrain_seeds: [0, 1, 2]`` the first seed's runs keep the plain folder names above and the
others add ``__seed<S>`` (``runs/simclr__default__seed1``, ``evals/random__seed1``), so seeds can be
added to a finished one-seed grid without pretraining it again.

Paths in the config are relative to the current directory (run from the repository root).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import stat
import sys
from collections import Counter
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from saliencyssl.app.options import fail, missing_piece_advice, one_line_errors
from saliencyssl.app.rundir import RunDir, RunDirError, describe
from saliencyssl.augment import MissingPieceError, parse_policy
from saliencyssl.augment.router import parse_sources
from saliencyssl.eval.gridtable import plot_monitored_knn, plot_rows, result_rows, rows_markdown
from saliencyssl.eval.results import write_csv
from saliencyssl.files import replace_file
from saliencyssl.saliency.params import LABELLER_OPTIONS
from saliencyssl.text import short_repr

SUMMARY = "methods x policies, each pretrained and evaluated at label fractions (resumable)"
_PRETRAIN_KEYS = {"image_size", "epochs", "batch_size", "limit", "device", "amp", "aug_source", "surrogate", "seed",
                  "lr", "knn_every", "workers"}
_EVAL_KEYS = {"fractions", "protocols", "seeds", "train_limit", "test_limit", "device", "batch_size", "knn_k", "no_cache",
              "cache_dir"}
#: What each ``pretrain`` / ``evaluation`` value must be, in words and as a check: JSON gives any type anywhere,
#: and a wrong one must be named with its key, not surface as a TypeError deep in a stage.
_WHOLE = ("a whole number", lambda v: isinstance(v, int) and not isinstance(v, bool))
_NUMBER = ("a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool))
_TEXT = ("text", lambda v: isinstance(v, str))
_FLAG = ("true or false", lambda v: isinstance(v, bool))
_TEXTS = ("a list of names", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v))


def _or_null(kind):
    return (f"{kind[0]} or null", lambda v: v is None or kind[1](v))


_PRETRAIN_KINDS = {"image_size": _WHOLE, "epochs": _WHOLE, "batch_size": _WHOLE, "limit": _or_null(_WHOLE),
                   "device": _TEXT, "amp": _FLAG, "aug_source": _TEXT, "surrogate": _or_null(_TEXT), "seed": _WHOLE,
                   "lr": _or_null(_NUMBER), "knn_every": _WHOLE, "workers": _WHOLE}
_EVAL_KINDS = {"fractions": ("text such as \"0.1,0.5,1.0\"", lambda v: isinstance(v, str) or _NUMBER[1](v)),
               "protocols": ("a list of protocol names, or text such as \"linear,knn\"",
                             lambda v: isinstance(v, str) or _TEXTS[1](v)),
               "seeds": _WHOLE, "train_limit": _or_null(_WHOLE), "test_limit": _or_null(_WHOLE), "device": _TEXT,
               "batch_size": _WHOLE, "knn_k": _WHOLE, "no_cache": _FLAG, "cache_dir": _or_null(_TEXT)}
#: The most pretraining seeds a grid runs each cell with (every seed is a full pretraining run per cell).
MAX_PRETRAIN_SEEDS = 100
#: The most entries each of ``methods``, ``policies``, ``cells`` and ``baselines`` may list (every
#: cell is a full pretraining run; a thousand is far beyond any grid one could run).
MAX_GRID_ENTRIES = 1_000
#: The largest grid config file read, in bytes (the configs/ examples are about 1 KB).
MAX_CONFIG_BYTES = 1_000_000
#: The baselines a grid can evaluate.
BASELINES = ("random",)


@dataclass
class GridConfig:
    """One grid (see ``configs/*.json``).

    Attributes:
        name: shown in reports.
        out: the grid's folder.
        train, test: labelled image folders (pretraining uses ``train``'s images without labels).
        cache: the target cache folder.
        methods, policies: the grid's axes: every method with every policy (leave both out with ``cells``).
        pretrain: :class:`~saliencyssl.app.pretrain.PretrainConfig` fields shared by every cell;
            ``knn_every: N`` monitors kNN accuracy every N epochs on ``train`` / ``test``.
        evaluation: :class:`~saliencyssl.eval.classification.ClassificationSettings` fields.
        labeller: labeller options (``min_side``, ``scale``, ``max_side``, ``cut_engine``).
        baselines: ``["random"]`` or ``[]``.
        cells: explicit ``[method, policy]`` pairs to run instead of every method with every policy.
        pretrain_seeds: pretrain every cell once per seed (instead of ``pretrain.seed``, which
            must then be left out); the results report the spread over these runs.
        evaluation_name: the folder of the evaluations under ``out`` (default ``evals``); a second
            config with the same ``out`` and ``pretrain`` but another ``evaluation_name`` evaluates
            the same backbones another way without pretraining them again; its table and plots
            are named after it (:attr:`results_stem`).
        results_name: the prefix of the table and plot files instead (:attr:`results_stem`), for a
            config that shares ``out`` and ``evaluation_name`` with another (it reuses their runs
            and evaluations) and must not overwrite the other's table.
        method_options: per method, hyperparameters replacing its defaults (``pretrain.py
            --method-option``), e.g. ``{"byol": {"momentum_start": 0.9}}``; recorded in each backbone,
            so a cell pretrained with other options is stale.
    """

    name: str
    out: str
    train: str
    test: str
    cache: str
    methods: list[str] = field(default_factory=list)
    policies: list[str] = field(default_factory=list)
    pretrain: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] = field(default_factory=dict)
    labeller: dict[str, Any] = field(default_factory=dict)
    baselines: list[str] = field(default_factory=lambda: ["random"])
    description: str = ""
    cells: list[list[str]] | None = None
    evaluation_name: str = "evals"
    pretrain_seeds: list[int] | None = None
    results_name: str | None = None
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def seeds(self) -> list[int]:
        """The pretraining seeds: ``pretrain_seeds``, else ``[pretrain.seed]`` (default 0)."""
        return list(self.pretrain_seeds) if self.pretrain_seeds is not None else [int(self.pretrain.get("seed", 0))]

    @property
    def image_size(self) -> int:
        """The side length every cell is pretrained and evaluated at (``pretrain.image_size``, default 32)."""
        return int(self.pretrain.get("image_size", 32))

    def random_eval_dir(self, seed: int | None = None) -> Path:
        """Where the random-init baseline of pretraining seed ``seed`` (default: the first) is evaluated."""
        return Path(self.out) / self.evaluation_name / ("random" + _seed_suffix(self, seed))

    @property
    def results_stem(self) -> str:
        """Prefix of the table and plot files in ``out``: ``results_name``, else ``grid``, or
        ``evaluation_name`` when that is set."""
        if self.results_name is not None:
            return self.results_name
        return "grid" if self.evaluation_name == "evals" else self.evaluation_name

    def __post_init__(self) -> None:
        """Check every value: types, ranges and names, and the settings each cell's stages will take. A
        config built in code is held to what :meth:`load` asks of a file.

        Raises:
            ValueError: one line naming the key, e.g. ``pretrain.batch_size is 0; give ...``.
        """
        kinds = {"name": str, "out": str, "train": str, "test": str, "cache": str, "description": str,
                 "evaluation_name": str, "methods": list, "policies": list, "pretrain": dict, "evaluation": dict,
                 "labeller": dict, "baselines": list, "cells": (list, type(None)), "pretrain_seeds": (list, type(None)),
                 "method_options": dict}
        wrong = [f"{k} must be {' or '.join(t.__name__ for t in (v if isinstance(v, tuple) else (v,)))}"
                 for k, v in kinds.items() if not isinstance(getattr(self, k), v)]
        if wrong:
            raise ValueError("; ".join(wrong))
        for key in ("name", "description", "out", "train", "test", "cache", "evaluation_name"):
            try:
                getattr(self, key).encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(f"{key} holds text that is not valid Unicode ({getattr(self, key)!r:.60})") from None
        _check_value_types({f.name: getattr(self, f.name) for f in fields(self)})
        for key, allowed, section in (("pretrain", _PRETRAIN_KEYS, self.pretrain),
                                      ("evaluation", _EVAL_KEYS, self.evaluation)):
            bad = sorted(set(section) - allowed)
            if bad:
                raise ValueError(f"unknown {key} keys {bad}; allowed: {sorted(allowed)}")
        from saliencyssl.saliency import LabellerConfig

        if not isinstance(self.labeller, dict) or set(self.labeller) - set(LABELLER_OPTIONS):
            unknown = sorted(set(self.labeller) - set(LABELLER_OPTIONS)) if isinstance(self.labeller, dict) else []
            raise ValueError(f"labeller must be an object with keys among {', '.join(LABELLER_OPTIONS)}"
                             + (f"; unknown: {unknown}" if unknown else ""))
        try:
            LabellerConfig(**self.labeller)
        except (TypeError, ValueError, OverflowError) as error:
            raise ValueError(f"labeller: {error}") from None
        from saliencyssl.app.pretrain import PretrainConfig

        batch = self.pretrain.get("batch_size", PretrainConfig.__dataclass_fields__["batch_size"].default)
        limit = self.pretrain.get("limit")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ValueError("pretrain.limit must be a whole number of images, at least 1 (or left out "
                             f"for all of them), got {limit!r}")
        if limit is not None and batch > limit and (self.cells or self.methods):
            raise ValueError(f"pretrain.batch_size {batch} is larger than pretrain.limit {limit}: not one "
                             "full batch per epoch; lower the batch size")
        if "aug_source" in self.pretrain:
            try:
                sources = parse_sources(self.pretrain["aug_source"])
            except ValueError as error:
                raise ValueError(f"pretrain.aug_source: {error}") from None
            if "surrogate" in sources and not self.pretrain.get("surrogate"):
                raise ValueError(f"pretrain.aug_source {self.pretrain['aug_source']!r} needs "
                                 "pretrain.surrogate (a RUN_DIR/surrogate.pt of saliency-ssl train-surrogate)")
        if self.pretrain_seeds is not None:
            from saliencyssl.app.pretrain import MAX_SEED

            seeds = self.pretrain_seeds
            if len(seeds) > MAX_PRETRAIN_SEEDS:
                raise ValueError(f"pretrain_seeds lists {len(seeds)} seeds; give at most {MAX_PRETRAIN_SEEDS} "
                                 "(each is a full pretraining run of every cell)")
            if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= MAX_SEED
                                    for s in seeds) or len(set(seeds)) != len(seeds):
                raise ValueError("pretrain_seeds must be a non-empty list of distinct integers from 0 "
                                 f"to {MAX_SEED}, got {short_repr(seeds)}")
            if "seed" in self.pretrain:
                raise ValueError("give either pretrain_seeds or pretrain.seed, not both")
        if self.results_name is not None and (
                not isinstance(self.results_name, str)
                or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.results_name)):
            raise ValueError("results_name must be a file-name prefix (letters, digits, _ . -), "
                             f"got {self.results_name!r}")
        for policy in self.policies:
            try:
                parse_policy(policy)
            except ValueError as error:
                raise ValueError(f"policy {policy!r}: {error}") from error
        from saliencyssl.ssl.registry import METHODS

        if self.cells is not None and (self.methods or self.policies):
            raise ValueError("give either cells or methods and policies, not both")
        if bool(self.methods) != bool(self.policies):
            raise ValueError("give both methods and policies (every method with every policy), or cells")
        if not (self.cells or self.methods) and not self.baselines:
            raise ValueError("nothing to run: give methods and policies (every method with every "
                             "policy), or cells ([method, policy] pairs)")
        pairs = [tuple(c) for c in self.cells] if self.cells is not None else []
        if any(len(p) != 2 for p in pairs):
            raise ValueError("cells must be [method, policy] pairs")
        for name, values in (("cells", pairs), ("methods", self.methods), ("policies", self.policies),
                             ("baselines", self.baselines)):
            repeated = sorted(str(v) for v, n in Counter(values).items() if n > 1)
            if repeated:
                raise ValueError(f"{name} lists {', '.join(repeated)} more than once")
        for method in set(self.methods) | {m for m, _ in pairs}:
            if method not in METHODS:
                raise ValueError(f"unknown method {method!r}; choose from {sorted(METHODS)}")
        for _, policy in pairs:
            try:
                parse_policy(policy)
            except ValueError as error:
                raise ValueError(f"policy {policy!r}: {error}") from error
        _check_method_options(self, set(self.methods) | {m for m, _ in pairs})
        # Every value a cell's pretraining and evaluation will take, checked now rather than after hours of
        # pretraining: the stages' own configs validate them.
        try:
            for cell in cells(self)[:1]:
                cell_pretrain_config(self, cell, progress=False)
            # a GPU grid's config is checked on any machine: its evaluation is built for the CPU here
            cell_evaluate_config(self, "random", Path(self.out) / self.evaluation_name / "random", device="cpu")
        except TypeError as error:
            raise ValueError(str(error)) from None

    @classmethod
    def load(cls, path: str | Path) -> "GridConfig":
        """Read and check a grid file; errors name the file and the key."""
        path = Path(path)
        try:
            raw = json.loads(_read_config(path).decode("utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"grid config {path} not found (see configs/ for examples)") from None
        except UnicodeDecodeError as error:
            byte = error.object[error.start:error.start + 1]
            raise ValueError(f"{path}: not UTF-8 text (byte {byte!r} at offset {error.start}); a grid config is a "
                             f"JSON file, see configs/ for examples") from None
        except IsADirectoryError:
            raise ValueError(f"{path} is a folder; give the grid's JSON file (see configs/ for examples)") from None
        except OSError as error:
            raise ValueError(f"{path}: cannot read it ({error.strerror or error}); a grid config is a JSON file, see "
                             f"configs/ for examples") from None
        except (json.JSONDecodeError, RecursionError) as error:
            raise ValueError(f"{path}: not valid JSON ({type(error).__name__}: {str(error)[:200]})") from None
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: a grid config is a JSON object of keys (see configs/ for examples)")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"{path}: unknown keys {unknown}; known: {sorted(known)}")
        missing = sorted(f.name for f in fields(cls)
                         if f.default is MISSING and f.default_factory is MISSING and f.name not in raw)
        if missing:
            raise ValueError(f"{path}: missing keys {missing}")
        try:
            return cls(**raw)
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from None


def _read_config(path: Path) -> bytes:
    """The bytes of a grid config: a regular file of at most :data:`MAX_CONFIG_BYTES`.

    The file is opened without blocking (a pipe named ``config.json`` would otherwise wait for a
    writer forever), checked to be a regular file on the open descriptor (``/dev/zero`` would be read
    until memory runs out), and at most one byte over the limit is read (a file that grows is caught).

    Raises:
        FileNotFoundError / IsADirectoryError / OSError: as ``open`` raises them.
        ValueError: not a regular file, or larger than the limit; naming ``path``.
    """
    if path.is_dir():
        raise IsADirectoryError(str(path))
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise ValueError(f"{path}: not a regular file (a pipe or a device); a grid config is a JSON file, see "
                             f"configs/ for examples")
        data = fh.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise ValueError(f"{path}: larger than the {MAX_CONFIG_BYTES:,} bytes a grid config may have; it is not one "
                         f"(see configs/ for examples)")
    return data


def _check_value_types(raw: dict) -> None:
    """Refuse a value of the wrong type or out of range inside the config's lists and sections, naming
    the key (the top-level keys' own types are checked before).

    Raises:
        ValueError: one line, e.g. ``pretrain.batch_size must be a whole number, got 'x'``.
    """
    from saliencyssl.app.pretrain import MAX_BATCH_SIZE
    from saliencyssl.eval.classification import MAX_SEEDS
    from saliencyssl.ssl.method import MAX_EPOCHS

    for key in ("methods", "policies", "cells", "baselines"):
        values = raw.get(key) or []
        if len(values) > MAX_GRID_ENTRIES:
            raise ValueError(f"{key} lists {len(values):,} entries; give at most {MAX_GRID_ENTRIES:,} (each "
                             f"cell is a full pretraining run)")
    for key in ("methods", "policies", "baselines"):
        values = raw.get(key, [])
        wrong = [v for v in values if not isinstance(v, str)]
        if wrong:
            raise ValueError(f"{key} must be a list of names (text), got {short_repr(wrong[0])} in it")
    unknown = [b for b in raw.get("baselines", []) if b not in BASELINES]
    if unknown:
        raise ValueError(f"baselines {unknown[0]!r} is not one this grid knows; give "
                         f"{' or '.join(repr(b) for b in BASELINES)}, or [] for none")
    for cell in raw.get("cells") or []:
        if not (isinstance(cell, list) and len(cell) == 2 and all(isinstance(v, str) for v in cell)):
            raise ValueError(f"cells must be [method, policy] pairs of names, got {short_repr(cell)}")
    for section, kinds in (("pretrain", _PRETRAIN_KINDS), ("evaluation", _EVAL_KINDS)):
        for key, value in raw.get(section, {}).items():
            if key in kinds and not kinds[key][1](value):
                raise ValueError(f"{section}.{key} must be {kinds[key][0]}, got {short_repr(value)}")
    for section, key, low, high in (("pretrain", "epochs", 1, MAX_EPOCHS),
                                    ("pretrain", "batch_size", 2, MAX_BATCH_SIZE),
                                    ("evaluation", "seeds", 1, MAX_SEEDS)):
        value = raw.get(section, {}).get(key)
        if value is not None and not low <= value <= high:
            raise ValueError(f"{section}.{key} is {value}; give a whole number from {low} to {high:,}")
    name = raw.get("evaluation_name", "evals")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ValueError(f"evaluation_name must be a folder name inside out (letters, digits, _ . -), got "
                         f"{short_repr(name)}")


def _check_method_options(config: GridConfig, methods: set[str]) -> None:
    from saliencyssl.ssl.registry import check_method_options

    if not isinstance(config.method_options, dict):
        raise ValueError(f"method_options must map a method to its options, e.g. "
                         f'{{"byol": {{"momentum_start": 0.9}}}}')
    for method, options in config.method_options.items():
        if method not in methods:
            raise ValueError(f"method_options names {method!r}, which no cell of the grid pretrains "
                             f"(its methods: {', '.join(sorted(methods)) or 'none'})")
        if not isinstance(options, dict):
            raise ValueError(f"method_options[{method!r}] must be an object of hyperparameters, "
                             f"got {options!r}")
        try:
            check_method_options(method, options)
        except ValueError as error:
            raise ValueError(f"method_options: {error}") from error


@dataclass
class Cell:
    """One pretraining run of the grid: a method with a policy and a seed, and where it lives."""

    method: str
    policy: str
    run_dir: Path
    eval_dir: Path
    seed: int = 0

    @property
    def name(self) -> str:
        """The cell's folder name under ``runs/`` and the evaluation folder, e.g. ``simclr__default__seed1``."""
        return self.run_dir.name


def _slug(policy: str) -> str:
    return policy.replace("+", "_plus_").replace(",", "__").replace("=", "-")


def _seed_suffix(config: GridConfig, seed: int | None) -> str:
    """``""`` for the first pretraining seed (the plain folder names), ``"__seed<S>"`` for the others."""
    return "" if seed is None or seed == config.seeds[0] else f"__seed{seed}"


def cells(config: GridConfig) -> list[Cell]:
    """Every run of the grid: each (method, policy) pair once per pretraining seed, seeds innermost."""
    out = Path(config.out)
    pairs = [tuple(c) for c in config.cells] if config.cells is not None else \
        [(m, p) for m in config.methods for p in config.policies]
    runs = []
    for m, p in pairs:
        for seed in config.seeds:
            name = f"{m}__{_slug(p)}{_seed_suffix(config, seed)}"
            runs.append(Cell(m, p, out / "runs" / name, out / config.evaluation_name / name, seed))
    return runs


def _label(config: GridConfig, pretrain: dict, progress: bool = True) -> None:
    from saliencyssl.app.label import label_images
    from saliencyssl.datasets import open_image_set
    from saliencyssl.saliency import LabellerConfig

    image_set = open_image_set(config.train, keep_decoded=False)
    if pretrain.get("limit"):
        image_set = image_set.spread(int(pretrain["limit"]))
    summary = label_images(Path(config.train), config.cache, LabellerConfig(**config.labeller), image_set=image_set,
                           progress=progress)
    print(f"labelling: {summary.labelled} labelled now, {summary.cached} already cached, {summary.duplicates} "
          f"duplicates, {len(summary.failed)} failed; no object in {summary.no_object_share:.1%}", flush=True)


def cell_pretrain_config(config: GridConfig, cell: Cell, progress: bool = True):
    """The :class:`~saliencyssl.app.pretrain.PretrainConfig` of a cell: the grid's shared ``pretrain``
    settings, the cell's method, policy and seed, and targets from the cache when it reads any."""
    from saliencyssl.app.pretrain import PretrainConfig

    settings = dict(config.pretrain, image_size=config.image_size, seed=cell.seed)
    aug_source = settings.pop("aug_source", "cache")
    if not _reads_targets(cell):
        aug_source = "none"
    if settings.get("knn_every"):  # monitor kNN during pretraining on the grid's own train/test sets
        settings.update(knn_train=config.train, knn_test=config.test)
    return PretrainConfig(data=config.train, out=str(cell.run_dir), method=cell.method, policy=cell.policy,
                          aug_source=aug_source, cache=config.cache, progress=progress,
                          method_options=dict(config.method_options.get(cell.method, {})),
                          resume=True, **config.labeller, **settings)


def cell_evaluate_config(config: GridConfig, backbone: str, out: Path, backbone_seed: int = 0, progress: bool = True,
                         device: str | None = None):
    """The :class:`~saliencyssl.app.evaluate.EvaluateConfig` of a cell's (or a baseline's) evaluation, on
    ``device`` instead of the config's when given."""
    from saliencyssl.app.evaluate import EvaluateConfig

    e = dict(config.evaluation, **({"device": device} if device else {}))
    protocols = e.pop("protocols", ["linear", "knn"])
    return EvaluateConfig(backbone=backbone, test=config.test, train=config.train, out=out, protocols=list(protocols),
                          image_size=config.image_size, tsne_points=0, backbone_seed=backbone_seed,
                          progress=progress, **e)


def _reads_targets(cell: Cell) -> bool:
    """The cell's policy draws views from targets, or its method pools its loss over them (DetCon)."""
    from saliencyssl.ssl.registry import method_class

    return parse_policy(cell.policy).uses_targets or method_class(cell.method).needs_targets


class StaleCellError(ValueError):
    """A cell's run or evaluation was made with other settings than the grid config now asks for.

    ``differences`` lists them (``"epochs 1 (now 3)"``).
    """

    def __init__(self, message: str, differences: list[str] | None = None):
        super().__init__(message)
        self.differences = list(differences or [])


def _stale(folder: Path, state, what: str) -> StaleCellError:
    why = (" (its targets came from another labeller version or other labeller options; `saliency-ssl grid "
           "--collect-only` still tabulates the finished runs as they are)"
           if any(d.key == "labeller_fingerprint" for d in state.differences) else "")
    return StaleCellError(f"{folder} holds {what} made with other settings than the grid config asks for: "
                          f"{describe(state.differences)}{why}. Delete {folder} to redo it with the new settings, or "
                          f"give the grid another \"out\" folder to keep both", [str(d) for d in state.differences])


def _pretraining_state(config: GridConfig, cell: Cell):
    from saliencyssl.app.pretrain import pretrain_settings

    return RunDir(cell.run_dir, "pretrain").state(pretrain_settings(cell_pretrain_config(config, cell))[0])


def _evaluation_state(config: GridConfig, backbone: str, folder: Path, seed: int = 0):
    from saliencyssl.app.evaluate import evaluation_settings

    return RunDir(folder, "evaluate").state(evaluation_settings(cell_evaluate_config(config, backbone, folder, seed)))


def check_finished_cell(config: GridConfig, cell: Cell) -> list[str]:
    """The steps ``cell`` has finished (``pretrained``, ``evaluated``), each checked against the
    config's settings through its run record (:class:`StaleCellError` when one differs)."""
    done = []
    state = _pretraining_state(config, cell)
    if state.stale:
        raise _stale(cell.run_dir, state, "a pretraining run")
    if state.finished:
        done.append("pretrained")
        evaluation = _evaluation_state(config, str(cell.run_dir / "backbone.pt"), cell.eval_dir)
        if evaluation.stale and evaluation.status == "finished":
            raise _stale(cell.eval_dir, evaluation, "an evaluation")
        if evaluation.finished:
            done.append("evaluated")
    return done


def check_finished_cells(config: GridConfig) -> None:
    """Check every finished cell and baseline of ``config`` against its settings, before anything is written
    (:class:`StaleCellError` on the first that differs)."""
    for cell in cells(config):
        check_finished_cell(config, cell)
    for seed in config.seeds if "random" in config.baselines else []:
        folder = config.random_eval_dir(seed)
        state = _evaluation_state(config, "random", folder, seed)
        if state.stale and state.status == "finished":
            raise _stale(folder, state, "an evaluation")


def cell_state(config: GridConfig, cell: Cell) -> str:
    """How far ``cell`` got, for ``--list``: ``to do``, ``pretraining started ...``, ``pretrained``,
    ``pretrained, evaluated``, or ``stale: ...`` with the settings that differ."""
    try:
        done = check_finished_cell(config, cell)
    except StaleCellError as error:
        return "stale: " + ("; ".join(error.differences) or str(error))
    except RunDirError as error:
        return f"unreadable: {error}"
    if not done and RunDir(cell.run_dir, "pretrain").read() is not None:
        return "pretraining started (running, or interrupted: it resumes from checkpoint.pt)"
    return ", ".join(done) or "to do"


def select_cells(config: GridConfig, names: list[str]) -> list[Cell]:
    """The cells of ``config`` with these folder names (:attr:`Cell.name`), in the config's order;
    a name the grid does not have raises ``ValueError`` listing the names it has."""
    every = cells(config)
    unknown = [n for n in names if n not in {c.name for c in every}]
    if unknown:
        raise ValueError(f"no cell named {', '.join(unknown)} in this grid; its cells: "
                         f"{', '.join(c.name for c in every)}")
    return [c for c in every if c.name in names]


def run(config: GridConfig, progress: bool = True, only: list[str] | None = None) -> list[dict]:
    """Run every unfinished cell and the baselines, then collect the results (see the module docstring).

    ``only``: run just these cells (:func:`select_cells`), without the baselines and without writing
    the table, so that several processes can share a grid's cells (one ``only`` list each); a run
    without ``only`` afterwards finds them finished, evaluates the baselines and writes the table.
    Returns the collected rows, or ``[]`` with ``only``.
    """
    from saliencyssl.app import evaluate
    from saliencyssl.app import pretrain as pretrain_stage

    todo = cells(config) if only is None else select_cells(config, only)
    check_finished_cells(config)  # before the config record is replaced
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    replace_file(out / f"{config.results_stem}.json", json.dumps(asdict(config), indent=2))
    pretrain = dict(config.pretrain)
    # Only a cache-only grid is labelled first: with a surrogate or the exact labeller behind the
    # cache, the images the cache misses are what those sources are for.
    if pretrain.get("aug_source", "cache") == "cache" and any(_reads_targets(c) for c in todo):
        _label(config, pretrain, progress)
    for i, cell in enumerate(todo, 1):
        seed_note = f", pretraining seed {cell.seed}" if len(config.seeds) > 1 else ""
        print(f"\n[{i}/{len(todo)}] {cell.method} with policy {cell.policy}{seed_note}", flush=True)
        if _pretraining_state(config, cell).finished:
            print(f"  pretraining done earlier: {cell.run_dir / 'backbone.pt'}")
        else:
            pretrain_stage.run(cell_pretrain_config(config, cell, progress))
        evaluate.run(cell_evaluate_config(config, str(cell.run_dir / "backbone.pt"), cell.eval_dir,
                                          progress=progress))
    if only is not None:
        return []
    for baseline in config.baselines:
        if baseline != "random":
            raise ValueError(f"unknown baseline {baseline!r}; only 'random' is supported")
        for seed in config.seeds:
            target = config.random_eval_dir(seed)
            if not _evaluation_state(config, "random", target, seed).finished:
                print(f"\n[baseline] random ResNet-18 of seed {seed}", flush=True)
            evaluate.run(cell_evaluate_config(config, "random", target, seed, progress))
    return collect(config)


def recorded_method_options(config: GridConfig) -> dict[str, str]:
    """Per evaluated cell pretrained with other than its method's defaults, those options (as
    ``--method-option`` takes them), read from the backbone config its evaluation recorded: what the
    runs used, which ``--collect-only`` may tabulate even where the config now asks for other options."""
    from saliencyssl.app.pretrain import format_method_options

    found = {}
    for cell in cells(config):
        path = cell.eval_dir / "results.json"
        if not path.is_file():
            continue
        try:
            recorded = json.loads(path.read_text())["meta"]["backbone"]["config"].get("method_options")
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
        if not isinstance(recorded, dict) or not all(isinstance(k, str) and isinstance(v, (int, float, str, bool))
                                                      for k, v in recorded.items()):
            if recorded:
                raise ValueError(f"{path}: its recorded method options {str(recorded)[:60]} are not a map of names "
                                 f"to values; it is damaged: delete its folder to evaluate the cell again")
            continue
        found[cell.name] = format_method_options(recorded)
    return found


def collect(config: GridConfig) -> list[dict]:
    """Gather every finished evaluation into rows; write the CSV, markdown table and plots."""
    out = Path(config.out)
    sources = [(c.method, c.policy, c.eval_dir, c.run_dir) for c in cells(config)]
    sources += [("random", "random init", config.random_eval_dir(seed), None)
                for _ in config.baselines for seed in config.seeds]
    rows = result_rows(sources)
    if not rows:
        return rows
    stem = config.results_stem
    write_csv(out / f"{stem}_results.csv", rows)
    description = config.description
    options = recorded_method_options(config)
    if options:
        description += "\n\nMethod options (instead of the defaults), as the evaluated backbones record them: " + \
            "; ".join(f"{cell} {text}" for cell, text in options.items())
    # written beside it, then moved over it: a failed write keeps the old one
    replace_file(out / f"{stem}_results.md", rows_markdown(config.name, description, rows))
    random_knn = [r["accuracy_mean"] for r in rows
                  if r["method"] == "random" and r["protocol"] == "knn" and float(r["fraction"]) == 1.0]
    for method in dict.fromkeys(c.method for c in cells(config)):
        for protocol in ("linear", "knn"):
            plot_rows([r for r in rows if r["method"] in (method, "random")], protocol,
                      out / f"{stem}_{method}_{protocol}.png", f"{config.name}: {method}, {protocol}")
        plot_monitored_knn([(c.policy, c.run_dir) for c in cells(config) if c.method == method],
                           out / f"{stem}_{method}_knn_during_pretraining.png",
                           f"{config.name}: {method}", random_knn[0] if random_knn else None)
    return rows


# -- the command line -------------------------------------------------------------------------
CLI_DOC = """Run an experiment grid (methods x policies x label fractions) from one JSON config, resumably.

Every cell is pretrained with the pretrain stage's loop and evaluated with the evaluate stage's
protocols; finished cells are skipped, so an interrupted grid continues where it stopped. The
results table (grid_results.csv / .md) and the paper-style plots (one line per policy, accuracy
against label fraction; grid_<method>_<protocol>.png) are written to the config's "out" folder;
a config with an "evaluation_name" names them after it instead of "grid", one with a "results_name"
after that. Config keys: docs/evaluate.md.

Configs shipped in configs/ (docs/evaluate.md describes each):
  mask_aware_cifar10_cpu.json      default, salcrop+default, comp0.3+default and DetCon-S at 1,248 steps,
                                   pretraining seeds 0 and 1
  grid_cifar10_cpu.json            the paper's CIFAR-10 comparison, SimCLR x 4 policies, 114 steps
  grid_cifar10_cpu_long.json       the same plus BYOL with default, at 312 steps on all 10,000 train images
  grid_cifar10_cpu_8ep.json        default, sal+default and sal0.5+default at 1,248 steps, seeds 0 and 1
  grid_cifar10_cpu_cutview.json    the cut view against the painted segments at 312 steps
  grid_cifar10_cpu_8ep_cutview.json  default, sal+default and the cut view at 1,248 steps, seeds 0 and 1
  grid_cifar10_gpu.json            grid_cifar10_cpu.json's four policies at the paper's budget (100 epochs)
  learning_cifar10_cpu.json        each of the six methods, 114 steps, kNN and linear probe
  learning_cifar10_cpu_long.json   each of the six methods, 312 steps
  learning_cifar10_gpu.json        each of the six methods, 100 epochs, for a GPU

Examples:
  saliency-ssl grid configs/grid_cifar10_cpu.json
  saliency-ssl grid configs/grid_cifar10_cpu.json --collect-only     (table and plots from finished cells)
  saliency-ssl grid configs/grid_cifar10_cpu.json --list             (the cells and how far each got)

Cells in parallel (two processes of one thread each on a 2-core machine, then one plain run for the
baselines and the table):
  OMP_NUM_THREADS=1 saliency-ssl grid CONFIG --only simclr__default &
  OMP_NUM_THREADS=1 saliency-ssl grid CONFIG --only simclr__sal_plus_default &
  wait; saliency-ssl grid CONFIG
"""


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="saliency-ssl grid", description=CLI_DOC,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="grid JSON file")
    parser.add_argument("--collect-only", action="store_true", help="only gather finished cells into the table and plots")
    parser.add_argument("--only", metavar="CELL[,CELL...]",
                        help="run only these cells (names as --list shows them, e.g. simclr__default__seed1), "
                             "without the baselines and the table: for running a grid's cells in parallel")
    parser.add_argument("--list", action="store_true", help="list the cells' names and whether each is done")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    try:
        config = GridConfig.load(args.config)
    except (FileNotFoundError, ValueError) as error:
        return fail(error)
    if args.list:
        from pathlib import Path

        for name, folder in (("out", config.out), ("train", config.train), ("test", config.test),
                             ("cache", config.cache)):  # relative paths are read from this working folder
            where = Path(folder).resolve()
            missing = name in ("train", "test") and not where.exists()
            print(f"{name:<6}{where}" + ("   MISSING (the config's paths are relative to the working folder)"
                                         if missing else ""))
        width = max((len(cell.name) for cell in cells(config)), default=0) + 2
        for cell in cells(config):
            print(f"{cell.name:<{width}}{cell_state(config, cell)}")
        return 0
    if args.collect_only:
        try:
            rows = collect(config)
        except (OSError, ValueError) as error:  # a damaged results.json, a table that cannot be written
            return fail(error)
    else:
        only = [name.strip() for name in args.only.split(",") if name.strip()] if args.only else None
        try:
            select_cells(config, only or [])
        except ValueError as error:
            return fail(error)
        try:
            rows = run(config, progress=not args.quiet, only=only)
        except MissingPieceError as error:
            from saliencyssl.saliency import LabellerConfig

            return fail(f"{error}; " + missing_piece_advice(error, config.train, config.cache,
                                                            LabellerConfig(**config.labeller), config.image_size))
        except (OSError, ValueError) as error:  # StaleCellError and RunDirError too: they name the fix
            return fail(error)
        except KeyboardInterrupt as error:  # Ctrl-C, or SIGTERM while labelling
            signum = getattr(error, "signum", None)
            return fail(f"{'terminated' if signum else 'interrupted'}; finished cells, their checkpoints and the "
                        f"targets stored so far are kept: rerun the same command to go on",
                        128 + signum if signum else 130)
        if only is not None:
            print(f"\nran {', '.join(only)}; run saliency-ssl grid {args.config} without --only for the baselines and the table")
            return 0
    if not rows:
        print(f"\nno cell is evaluated yet; nothing written (saliency-ssl grid {args.config} runs them)")
        return 0
    print(f"\n{len(rows)} result rows; table: {config.out}/{config.results_stem}_results.md")
    return 0



if __name__ == "__main__":
    sys.exit(main())
