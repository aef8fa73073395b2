"""The experiment grid: methods x policies, each pretrained and evaluated at label fractions.

A grid is a JSON file (:class:`GridConfig`); :func:`run_grid` works through its cells:

1. label the pretraining images into the cache (skipping what it holds) when a policy needs
   saliency views;
2. per cell (method, policy) and pretraining seed: pretrain (``RUN/runs/<method>__<policy>/backbone.pt``,
   ``...__seed<S>`` for seeds after the first;
   a finished cell is skipped, an interrupted one resumes from its checkpoint), then evaluate
   (``RUN/evals/<method>__<policy>/results.json``, skipped when present);
3. the baselines (``random``: a randomly initialised ResNet-18, the starting point of a run with the
   same seed) are evaluated the same way, once per pretraining seed;
4. everything is collected into ``RUN/grid_results.csv``, ``RUN/grid_results.md`` and one plot
   per method and protocol with one line per policy (the paper's Fig. 11 style). A cell pretrained
   with several seeds (``pretrain_seeds``) is one row: the mean over its runs, the spread over
   label subsets and the spread over pretraining seeds side by side.

With ``pretrain_seeds: [0, 1, 2]`` the first seed's runs keep the plain folder names above and the
others add ``__seed<S>`` (``runs/simclr__default__seed1``, ``evals/random__seed1``), so seeds can be
added to a finished one-seed grid without pretraining it again.

Paths in the config are relative to the current directory (run from the repository root).
"""

from __future__ import annotations

import csv
import json
import re
import textwrap
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from saliencyssl.augment import parse_policy
from saliencyssl.augment.router import parse_sources
from saliencyssl.saliency.options import LABELLER_OPTIONS
_PRETRAIN_KEYS = {"image_size", "epochs", "batch_size", "limit", "device", "amp", "aug_source", "surrogate", "seed",
                  "lr", "knn_every", "workers"}
_EVAL_KEYS = {"fractions", "protocols", "seeds", "train_limit", "test_limit", "device", "batch_size", "knn_k", "no_cache",
              "cache_dir"}


@dataclass
class GridConfig:
    """One grid (see ``configs/*.json``).

    Attributes:
        name: shown in reports.
        out: the grid's folder.
        train, test: labelled image folders (pretraining uses ``train``'s images without labels).
        cache: the target cache folder.
        methods, policies: the grid's axes: every method with every policy (leave both out with ``cells``).
        pretrain: :class:`~saliencyssl.ssl.pretrain.PretrainConfig` fields shared by every cell;
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

    @classmethod
    def load(cls, path: str | Path) -> "GridConfig":
        """Read and check a grid file; errors name the file and the key."""
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"grid config {path} not found (see configs/ for examples)") from None
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error})") from error
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"{path}: unknown keys {unknown}; known: {sorted(known)}")
        missing = sorted(f.name for f in fields(cls)
                         if f.default is MISSING and f.default_factory is MISSING and f.name not in raw)
        if missing:
            raise ValueError(f"{path}: missing keys {missing}")
        config = cls(**raw)
        for key, allowed, section in (("pretrain", _PRETRAIN_KEYS, config.pretrain),
                                      ("evaluation", _EVAL_KEYS, config.evaluation)):
            bad = sorted(set(section) - allowed)
            if bad:
                raise ValueError(f"{path}: unknown {key} keys {bad}; allowed: {sorted(allowed)}")
        from saliencyssl.saliency import LabellerConfig

        if not isinstance(config.labeller, dict) or set(config.labeller) - set(LABELLER_OPTIONS):
            unknown = sorted(set(config.labeller) - set(LABELLER_OPTIONS)) if isinstance(config.labeller, dict) else []
            raise ValueError(f"{path}: labeller must be an object with keys among {', '.join(LABELLER_OPTIONS)}"
                             + (f"; unknown: {unknown}" if unknown else ""))
        try:
            LabellerConfig(**config.labeller)
        except (TypeError, ValueError, OverflowError) as error:
            raise ValueError(f"{path}: labeller: {error}") from None
        from saliencyssl.ssl.pretrain import PretrainConfig

        batch = config.pretrain.get("batch_size", PretrainConfig.__dataclass_fields__["batch_size"].default)
        limit = config.pretrain.get("limit")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ValueError(f"{path}: pretrain.limit must be a whole number of images, at least 1 (or left out "
                             f"for all of them), got {limit!r}")
        if limit is not None and batch > limit and (config.cells or config.methods):
            raise ValueError(f"{path}: pretrain.batch_size {batch} is larger than pretrain.limit {limit}: not one "
                             f"full batch per epoch; lower the batch size")
        if "aug_source" in config.pretrain:
            try:
                sources = parse_sources(config.pretrain["aug_source"])
            except ValueError as error:
                raise ValueError(f"{path}: pretrain.aug_source: {error}") from None
            if "surrogate" in sources and not config.pretrain.get("surrogate"):
                raise ValueError(f"{path}: pretrain.aug_source {config.pretrain['aug_source']!r} needs "
                                 f"pretrain.surrogate (a RUN_DIR/surrogate.pt of scripts/train_surrogate.py)")
        if config.pretrain_seeds is not None:
            seeds = config.pretrain_seeds
            if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds) \
                    or len(set(seeds)) != len(seeds):
                raise ValueError(f"{path}: pretrain_seeds must be a non-empty list of distinct integers, got {seeds!r}")
            if "seed" in config.pretrain:
                raise ValueError(f"{path}: give either pretrain_seeds or pretrain.seed, not both")
        if config.results_name is not None and (
                not isinstance(config.results_name, str)
                or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", config.results_name)):
            raise ValueError(f"{path}: results_name must be a file-name prefix (letters, digits, _ . -), "
                             f"got {config.results_name!r}")
        for policy in config.policies:
            try:
                parse_policy(policy)
            except ValueError as error:
                raise ValueError(f"{path}: policy {policy!r}: {error}") from error
        from saliencyssl.ssl.registry import METHODS

        if config.cells is not None and (config.methods or config.policies):
            raise ValueError(f"{path}: give either cells or methods and policies, not both")
        if bool(config.methods) != bool(config.policies):
            raise ValueError(f"{path}: give both methods and policies (every method with every policy), or cells")
        if not (config.cells or config.methods) and not config.baselines:
            raise ValueError(f"{path}: nothing to run: give methods and policies (every method with every "
                             f"policy), or cells ([method, policy] pairs)")
        pairs = [tuple(c) for c in config.cells] if config.cells is not None else []
        if any(len(p) != 2 for p in pairs):
            raise ValueError(f"{path}: cells must be [method, policy] pairs")
        for name, values in (("cells", pairs), ("methods", config.methods), ("policies", config.policies),
                             ("baselines", config.baselines)):
            repeated = sorted({str(v) for v in values if values.count(v) > 1})
            if repeated:
                raise ValueError(f"{path}: {name} lists {', '.join(repeated)} more than once")
        for method in set(config.methods) | {m for m, _ in pairs}:
            if method not in METHODS:
                raise ValueError(f"{path}: unknown method {method!r}; choose from {sorted(METHODS)}")
        for _, policy in pairs:
            try:
                parse_policy(policy)
            except ValueError as error:
                raise ValueError(f"{path}: policy {policy!r}: {error}") from error
        _check_method_options(path, config, set(config.methods) | {m for m, _ in pairs})
        return config


def _check_method_options(path: Path, config: GridConfig, methods: set[str]) -> None:
    from saliencyssl.ssl.registry import check_method_options

    if not isinstance(config.method_options, dict):
        raise ValueError(f"{path}: method_options must map a method to its options, e.g. "
                         f'{{"byol": {{"momentum_start": 0.9}}}}')
    for method, options in config.method_options.items():
        if method not in methods:
            raise ValueError(f"{path}: method_options names {method!r}, which no cell of the grid pretrains "
                             f"(its methods: {', '.join(sorted(methods)) or 'none'})")
        if not isinstance(options, dict):
            raise ValueError(f"{path}: method_options[{method!r}] must be an object of hyperparameters, "
                             f"got {options!r}")
        try:
            check_method_options(method, options)
        except ValueError as error:
            raise ValueError(f"{path}: method_options: {error}") from error


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
    from saliencyssl.cache import TargetCache
    from saliencyssl.cache.executors import default_workers, make_executor
    from saliencyssl.cache.labelling import label_folder
    from saliencyssl.datasets import open_image_set
    from saliencyssl.saliency import LabellerConfig

    labeller = LabellerConfig(**config.labeller)
    image_set = open_image_set(config.train, keep_decoded=False)
    if pretrain.get("limit"):
        image_set = image_set.spread(int(pretrain["limit"]))
    paths = image_set.paths
    cache = TargetCache(config.cache, labeller.fingerprint(), params=labeller.params())
    if paths is None:  # CIFAR batches: label in this process
        for i, h in enumerate(image_set.hashes()):
            if h not in cache:
                from saliencyssl.saliency import Labeller

                cache.put(h, Labeller(labeller)(image_set.image(i)))
        return
    executor = make_executor(default_workers())
    try:
        summary = label_folder(config.train, cache, labeller, executor=executor, paths=paths, progress=progress)
    finally:
        executor.close()
    print(f"labelling: {summary.labelled} labelled now, {summary.cached} already cached, {summary.duplicates} "
          f"duplicates, {len(summary.failed)} failed; no object in {summary.no_object_share:.1%}", flush=True)


def _evaluation_settings(config: GridConfig, backbone: str, out: Path, backbone_seed: int = 0):
    from saliencyssl.eval.classification import ClassificationSettings

    e = dict(config.evaluation)
    protocols = e.pop("protocols", ["linear", "knn"])
    return ClassificationSettings(backbone=backbone, test=config.test, train=config.train, out=out,
                                  protocols=list(protocols), image_size=config.image_size, tsne_points=0,
                                  backbone_seed=backbone_seed, **e)


class StaleCellError(ValueError):
    """A finished cell was made with other settings than the grid config now asks for.

    ``differences`` lists them (``"epochs 1 (config: 3)"``); empty when the record could not be read.
    """

    def __init__(self, message: str, differences: list[str] | None = None):
        super().__init__(message)
        self.differences = list(differences or [])


#: Pretraining settings a finished cell's ``backbone.pt`` records and the grid compares (the
#: labeller fingerprint only for saliency policies: the others never asked for a target).
_RECORDED_PRETRAIN_KEYS = ("method", "policy", "data", "aug_source", "epochs", "batch_size", "seed", "image_size",
                           "lr", "limit", "method_options", "labeller_fingerprint")


def check_finished_pretraining(cell: Cell, expected: dict) -> None:
    """Raise :class:`StaleCellError` when ``cell``'s backbone was pretrained with other settings.

    ``expected`` holds the settings the config asks for (keys of :data:`_RECORDED_PRETRAIN_KEYS`);
    a setting the checkpoint does not record (older runs) is not compared.
    """
    path, recorded = _recorded_config(cell, "backbone.pt")
    recorded.setdefault("method_options", {})  # backbones written before the option had the defaults
    folders = f"{cell.run_dir} and {cell.eval_dir}" if cell.eval_dir.exists() else cell.run_dir
    _compare(path, folders, _comparable(cell, recorded, expected), expected)


def check_started_pretraining(cell: Cell, expected: dict) -> None:
    """Raise :class:`StaleCellError` when ``cell``'s unfinished run (``checkpoint.pt``, no backbone yet)
    was started with other settings, which resuming it would refuse."""
    path, recorded = _recorded_config(cell, "checkpoint.pt")
    # The run's PretrainConfig; its method and policy are spelled as typed (the backbone records them
    # normalised), and the cell's folder name already stands for them.
    recorded = {k: v for k, v in recorded.items() if k not in ("method", "policy")}
    labeller_options = {k: recorded[k] for k in LABELLER_OPTIONS if k in recorded}
    if labeller_options:  # the checkpoint records the options; the backbone their fingerprint
        from saliencyssl.saliency import LabellerConfig

        recorded["labeller_fingerprint"] = LabellerConfig(**labeller_options).fingerprint()
    _compare(path, cell.run_dir, _comparable(cell, recorded, expected), expected)


def _recorded_config(cell: Cell, name: str) -> tuple[Path, dict]:
    import torch

    path = cell.run_dir / name
    try:
        return path, dict(torch.load(path, map_location="cpu", weights_only=True).get("config", {}))
    except Exception as error:  # unpickling errors have no common base class
        raise StaleCellError(f"{path} cannot be read ({type(error).__name__}); delete {cell.run_dir} to pretrain "
                             f"the cell again") from error


def _comparable(cell: Cell, recorded: dict, expected: dict) -> dict:
    """The recorded settings the config also sets; method options as their changes from the defaults."""
    from saliencyssl.ssl.registry import changed_method_options

    recorded = {k: recorded[k] for k in _RECORDED_PRETRAIN_KEYS if k in recorded and k in expected}
    if "method_options" in recorded:
        recorded["method_options"] = changed_method_options(cell.method, recorded["method_options"])
    if "data" in recorded:
        recorded["data"] = str(Path(recorded["data"]).resolve())
    if "aug_source" in recorded:
        recorded["aug_source"] = ",".join(parse_sources(recorded["aug_source"]))
    return recorded


def check_finished_evaluation(cell_dir: Path, settings) -> None:
    """Raise :class:`StaleCellError` when ``cell_dir/results.json`` was made with other protocols,
    fractions, seeds, kNN ``k`` / temperature, image limits, image size or data, or of another backbone
    than ``settings`` (a :class:`~saliencyssl.eval.classification.ClassificationSettings`) asks for."""
    from saliencyssl.eval.fractions import parse_fractions

    path = cell_dir / "results.json"
    try:
        meta = json.loads(path.read_text()).get("meta", {})
    except (OSError, ValueError) as error:
        raise StaleCellError(f"{path} cannot be read ({error}); delete it to evaluate the cell again") from error
    expected = {"protocols": sorted(settings.protocols), "seeds": list(range(settings.seeds)),
                "fractions": [text for text, _ in parse_fractions(settings.fractions)]}
    recorded = {"protocols": sorted(meta.get("protocols", [])), "seeds": meta.get("seeds"),
                "fractions": meta.get("fractions")}
    if "knn" in settings.protocols and "knn" in meta:
        expected["kNN k, temperature"] = [settings.knn_k, settings.knn_temperature]
        recorded["kNN k, temperature"] = [meta["knn"].get("k"), meta["knn"].get("temperature")]
    if "limits" in meta:  # results written before the limits were recorded cannot be told apart
        expected["train_limit, test_limit"] = [settings.train_limit, settings.test_limit]
        recorded["train_limit, test_limit"] = [meta["limits"].get("train"), meta["limits"].get("test")]
    backbone = meta.get("backbone", {})
    if settings.backbone == "random" and "seed" in backbone.get("config", {}):
        expected["random backbone seed"] = settings.backbone_seed
        recorded["random backbone seed"] = backbone["config"]["seed"]
    elif settings.backbone != "random" and "identity" in backbone:
        # A cell pretrained again (its run folder deleted as a stale cell's message says) has another backbone.
        from saliencyssl.eval.features import file_digest

        weights = Path(settings.backbone)
        expected["backbone"] = f"file:{file_digest(weights)}" if weights.is_file() else f"{weights} (not there)"
        recorded["backbone"] = backbone["identity"]
    if "image_size" in backbone:
        expected["image size"], recorded["image size"] = settings.image_size, backbone["image_size"]
    for name, folder in (("train", settings.train), ("test", settings.test)):
        if folder is not None and "path" in meta.get("datasets", {}).get(name, {}):
            expected[f"{name} images"] = str(Path(folder).resolve())
            recorded[f"{name} images"] = str(Path(meta["datasets"][name]["path"]).resolve())
    _compare(path, cell_dir, recorded, expected)


def _compare(path: Path, folder: Path | str, recorded: dict, expected: dict) -> None:
    keys = [key for key in recorded if recorded[key] != expected[key]]
    differ = [f"{key} {recorded[key]!r} (config: {expected[key]!r})" for key in keys]
    if differ:
        why = (" (its targets came from another labeller version or other labeller options; `run_grid.py "
               "--collect-only` still tabulates the finished runs as they are)"
               if "labeller_fingerprint" in keys else "")
        raise StaleCellError(f"{path} was made with other settings than the grid config asks for: "
                             f"{'; '.join(differ)}{why}. Delete {folder} to redo this cell with the new settings, "
                             f"or give the grid another \"out\" folder to keep both", differ)


def _pretrain_settings(config: GridConfig, cell: Cell) -> dict:
    from saliencyssl.ssl.registry import changed_method_options

    settings = dict(config.pretrain, image_size=config.image_size)
    settings = {**settings, "method": cell.method, "policy": cell.policy, "seed": cell.seed,
                "data": str(Path(config.train).resolve()),
                "lr": settings.get("lr"), "limit": settings.get("limit"),
                "method_options": changed_method_options(cell.method, config.method_options.get(cell.method))}
    settings["aug_source"] = "none"
    if _reads_targets(cell):
        from saliencyssl.saliency import LabellerConfig

        settings["aug_source"] = ",".join(parse_sources(config.pretrain.get("aug_source", "cache")))
        settings["labeller_fingerprint"] = LabellerConfig(**config.labeller).fingerprint()
    return settings


def _reads_targets(cell: Cell) -> bool:
    """The cell's policy draws views from targets, or its method pools its loss over them (DetCon)."""
    from saliencyssl.ssl.registry import method_class

    return parse_policy(cell.policy).uses_targets or method_class(cell.method).needs_targets


def check_finished_cell(config: GridConfig, cell: Cell) -> list[str]:
    """The steps ``cell`` has finished (``pretrained``, ``evaluated``), each checked against the
    config's settings (:class:`StaleCellError` when one differs, or when an unfinished run was
    started with other settings)."""
    done = []
    if (cell.run_dir / "backbone.pt").is_file():
        check_finished_pretraining(cell, _pretrain_settings(config, cell))
        done.append("pretrained")
    elif (cell.run_dir / "checkpoint.pt").is_file():
        check_started_pretraining(cell, _pretrain_settings(config, cell))
    if (cell.eval_dir / "results.json").is_file():
        settings = _evaluation_settings(config, str(cell.run_dir / "backbone.pt"), cell.eval_dir)
        check_finished_evaluation(cell.eval_dir, settings)
        done.append("evaluated")
    return done


def check_finished_cells(config: GridConfig) -> None:
    """Check every finished cell and baseline of ``config`` against its settings, before anything is written
    (:class:`StaleCellError` on the first that differs)."""
    for cell in cells(config):
        check_finished_cell(config, cell)
    for seed in config.seeds if "random" in config.baselines else []:
        target = config.random_eval_dir(seed)
        if (target / "results.json").is_file():
            check_finished_evaluation(target, _evaluation_settings(config, "random", target, seed))


def cell_state(config: GridConfig, cell: Cell) -> str:
    """How far ``cell`` got, for ``run_grid.py --list``: ``to do``, ``pretraining started ...``,
    ``pretrained``, ``pretrained, evaluated``, or ``stale: ...`` with the settings that differ."""
    try:
        done = check_finished_cell(config, cell)
    except StaleCellError as error:
        return "stale: " + ("; ".join(error.differences) or str(error))
    if not done and (cell.run_dir / "checkpoint.pt").is_file():
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


def run_grid(config: GridConfig, progress: bool = True, only: list[str] | None = None) -> list[dict]:
    """Run every unfinished cell and the baselines, then collect the results (see the module docstring).

    ``only``: run just these cells (:func:`select_cells`), without the baselines and without writing
    the table, so that several processes can share a grid's cells (one ``only`` list each); a run
    without ``only`` afterwards finds them finished, evaluates the baselines and writes the table.
    Returns the collected rows, or ``[]`` with ``only``.
    """
    from saliencyssl.eval.classification import evaluate_classification
    from saliencyssl.ssl.pretrain import PretrainConfig, Pretrainer

    todo = cells(config) if only is None else select_cells(config, only)
    check_finished_cells(config)  # before the config record is replaced
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{config.results_stem}.json").write_text(json.dumps(asdict(config), indent=2))
    pretrain = dict(config.pretrain)
    # Only a cache-only grid is labelled first: with a surrogate or the exact labeller behind the
    # cache, the images the cache misses are what those sources are for.
    if pretrain.get("aug_source", "cache") == "cache" and any(_reads_targets(c) for c in todo):
        _label(config, pretrain, progress)
    for i, cell in enumerate(todo, 1):
        seed_note = f", pretraining seed {cell.seed}" if len(config.seeds) > 1 else ""
        print(f"\n[{i}/{len(todo)}] {cell.method} with policy {cell.policy}{seed_note}", flush=True)
        if (cell.run_dir / "backbone.pt").is_file():
            print(f"  pretraining done earlier: {cell.run_dir / 'backbone.pt'}")
        else:
            uses = _reads_targets(cell)
            settings = dict(pretrain, image_size=config.image_size, seed=cell.seed)
            aug_source = settings.pop("aug_source", "cache") if uses else "none"
            settings.pop("aug_source", None)
            if settings.get("knn_every"):  # monitor kNN during pretraining on the grid's own train/test sets
                settings.update(knn_train=config.train, knn_test=config.test)
            run = PretrainConfig(data=config.train, out=str(cell.run_dir), method=cell.method, policy=cell.policy,
                                 aug_source=aug_source, cache=config.cache, progress=progress,
                                 method_options=dict(config.method_options.get(cell.method, {})),
                                 resume=(cell.run_dir / "checkpoint.pt").is_file(), **config.labeller, **settings)
            Pretrainer(run).run()
        evaluation = _evaluation_settings(config, str(cell.run_dir / "backbone.pt"), cell.eval_dir)
        if (cell.eval_dir / "results.json").is_file():
            print(f"  evaluation done earlier: {cell.eval_dir / 'results.json'}")
        else:
            evaluate_classification(evaluation, progress=progress)
    if only is not None:
        return []
    for baseline in config.baselines:
        if baseline != "random":
            raise ValueError(f"unknown baseline {baseline!r}; only 'random' is supported")
        for seed in config.seeds:
            target = config.random_eval_dir(seed)
            if not (target / "results.json").is_file():
                print(f"\n[baseline] random ResNet-18 of seed {seed}", flush=True)
                evaluate_classification(_evaluation_settings(config, "random", target, seed), progress=progress)
    return collect(config)


def recorded_method_options(config: GridConfig) -> dict[str, str]:
    """Per evaluated cell pretrained with other than its method's defaults, those options (as
    ``--method-option`` takes them), read from the backbone config its evaluation recorded: what the
    runs used, which ``--collect-only`` may tabulate even where the config now asks for other options."""
    from saliencyssl.ssl.pretrain import format_method_options

    found = {}
    for cell in cells(config):
        path = cell.eval_dir / "results.json"
        if not path.is_file():
            continue
        try:
            recorded = json.loads(path.read_text())["meta"]["backbone"]["config"].get("method_options")
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
        if recorded:
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
    write_rows_csv(out / f"{stem}_results.csv", rows)
    description = config.description
    options = recorded_method_options(config)
    if options:
        description += "\n\nMethod options (instead of the defaults), as the evaluated backbones record them: " + \
            "; ".join(f"{cell} {text}" for cell, text in options.items())
    (out / f"{stem}_results.md").write_text(rows_markdown(config.name, description, rows))
    random_knn = [r["accuracy_mean"] for r in rows
                  if r["method"] == "random" and r["protocol"] == "knn" and float(r["fraction"]) == 1.0]
    for method in dict.fromkeys(c.method for c in cells(config)):
        for protocol in ("linear", "knn"):
            plot_rows([r for r in rows if r["method"] in (method, "random")], protocol,
                      out / f"{stem}_{method}_{protocol}.png", f"{config.name}: {method}, {protocol}")
        plot_monitored_knn([c for c in cells(config) if c.method == method],
                           out / f"{stem}_{method}_knn_during_pretraining.png",
                           f"{config.name}: {method}", random_knn[0] if random_knn else None)
    return rows


def _new_plot():
    """A figure and axes of the grid's plots' size, drawn off-screen."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(6, 4))


def _save_plot(fig, ax, title: str, path: Path) -> Path:
    """Title (wrapped), grid and legend on ``ax``; write ``fig`` to ``path`` and close it."""
    import matplotlib.pyplot as plt

    ax.set_title(textwrap.fill(title, 70), fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def plot_monitored_knn(runs: list[Cell], path: Path, title: str, random_knn: float | None = None) -> Path | None:
    """kNN accuracy monitored during pretraining (``knn_every``) against optimiser steps: one line per
    policy (the mean over its pretraining seeds; each seed faint when there are several), and a
    random backbone's kNN at 100% of the labels dashed when given. ``None`` when no run monitored kNN."""
    curves: dict[str, list[list[tuple[int, float]]]] = {}
    for cell in runs:
        history_path = cell.run_dir / "history.json"
        if not history_path.is_file():
            continue
        steps, points = 0, []
        for epoch in json.loads(history_path.read_text()):
            steps += epoch.get("steps", 0)
            if epoch.get("knn_accuracy") is not None:
                points.append((steps, epoch["knn_accuracy"]))
        if points:
            curves.setdefault(cell.policy, []).append(points)
    if not curves:
        return None
    fig, ax = _new_plot()
    for policy, seeds in curves.items():
        colour = ax.plot([], [])[0].get_color()
        for points in seeds if len(seeds) > 1 else []:
            ax.plot(*zip(*points), color=colour, alpha=0.3, linewidth=1)
        shared = sorted(set.intersection(*(set(dict(p)) for p in seeds)))
        mean = [float(np.mean([dict(p)[step] for p in seeds])) for step in shared]
        label = policy + (f" (mean of {len(seeds)} seeds)" if len(seeds) > 1 else "")
        ax.plot(shared, mean, "o-", color=colour, markersize=4, label=label)
    if random_knn is not None:
        ax.axhline(random_knn, color="grey", linestyle="--", label="random init")
    ax.set_xlabel("optimiser steps")
    ax.set_ylabel("kNN test accuracy (100% labels)")
    return _save_plot(fig, ax, title, path)


def result_rows(sources: list[tuple[str, str, Path, Path | None]]) -> list[dict]:
    """One row per (method, policy, protocol, fraction) from ``(method, policy, eval_dir, run_dir)``
    entries whose ``eval_dir/results.json`` exists; ``run_dir/history.json`` adds the final kNN.

    Entries that share method and policy are pretraining seeds of one cell and make one row:
    ``accuracy_mean`` is the mean over the runs, ``accuracy_std`` the spread over label subsets
    (the root mean square of each run's standard deviation over its seeds), ``pretrain_std`` the
    population standard deviation of the runs' means (``None`` for one run) and ``pretrain_seeds``
    how many runs were found. With every run scored on the same label seeds, the standard
    deviation over all (run, label seed) pairs is ``sqrt(accuracy_std**2 + pretrain_std**2)``.
    """
    runs: dict[tuple, list[dict]] = {}
    seen = set()
    for method, policy, eval_dir, run_dir in sources:
        path = Path(eval_dir) / "results.json"
        if not path.is_file() or path.resolve() in seen:
            continue
        seen.add(path.resolve())
        results = json.loads(path.read_text())
        knn_final = None
        if run_dir is not None and (Path(run_dir) / "history.json").is_file():
            history = json.loads((Path(run_dir) / "history.json").read_text())
            knn_final = history[-1].get("knn_accuracy") if history else None
        for protocol in ("linear", "knn"):
            for fraction, entry in results.get(protocol, {}).items():
                runs.setdefault((method, policy, protocol, fraction), []).append(
                    {**entry, "knn_final": knn_final, "path": path})
    rows = []
    for (method, policy, protocol, fraction), entries in runs.items():
        if len({e["n_labelled"] for e in entries}) > 1:
            counts = ", ".join(f"{e['n_labelled']} in {e['path']}" for e in entries)
            raise ValueError(f"{method} with {policy}: its runs labelled different numbers of images at fraction "
                             f"{fraction} ({counts}); evaluate them on the same training set")
        means = np.array([e["accuracy_mean"] for e in entries])
        finals = [e["knn_final"] for e in entries]
        rows.append({"method": method, "policy": policy, "protocol": protocol, "fraction": fraction,
                     "n_labelled": entries[0]["n_labelled"], "accuracy_mean": float(means.mean()),
                     "accuracy_std": float(np.sqrt(np.mean([e["accuracy_std"] ** 2 for e in entries]))),
                     "pretrain_seeds": len(entries),
                     "pretrain_std": float(means.std()) if len(entries) > 1 else None,
                     "pretrain_final_knn": None if None in finals else float(np.mean(finals))})
    return rows


def spread(row: dict) -> float:
    """The larger of a row's two spreads: over label subsets and over pretraining seeds."""
    return max(row["accuracy_std"], row.get("pretrain_std") or 0.0)


def policy_gap(rows: list[dict], policy: str, reference: str, protocol: str) -> dict | None:
    """How far ``policy`` is from ``reference`` under ``protocol``, over the label fractions both have.

    Returns:
        ``{"mean_gap", "spread", "fractions"}``: the mean over fractions of (policy's mean accuracy
        - reference's), the largest standard deviation of either at those fractions (over label
        subsets or, for cells with several pretraining seeds, over those seeds; see :func:`spread`),
        and the fractions compared; ``None`` when they share no fraction.
    """
    mine = {r["fraction"]: r for r in rows if r["policy"] == policy and r["protocol"] == protocol}
    theirs = {r["fraction"]: r for r in rows if r["policy"] == reference and r["protocol"] == protocol}
    shared = [f for f in mine if f in theirs]
    if not shared:
        return None
    gaps = [mine[f]["accuracy_mean"] - theirs[f]["accuracy_mean"] for f in shared]
    largest = max(max(spread(mine[f]), spread(theirs[f])) for f in shared)
    return {"mean_gap": sum(gaps) / len(gaps), "spread": largest, "fractions": shared}


def write_rows_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _cell_text(row: dict) -> str:
    text = f"{row['accuracy_mean']:.3f} ± {row['accuracy_std']:.3f}"
    return text + (f" [{row['pretrain_std']:.3f}]" if row.get("pretrain_std") is not None else "")


def rows_markdown(title: str, description: str, rows: list[dict]) -> str:
    """Markdown tables (one per protocol): accuracy mean ± std by label fraction, one line per cell;
    cells with several pretraining seeds add that spread in brackets."""
    fractions = list(dict.fromkeys(r["fraction"] for r in rows))
    lines = [f"# {title}", "", description, ""] if title else []
    several = sorted({r["pretrain_seeds"] for r in rows if r.get("pretrain_seeds", 1) > 1})
    if several:
        lines += [f"Mean over {' or '.join(map(str, several))} pretraining seeds (and the label-subset seeds); "
                  "± std over label subsets, [std over pretraining seeds].", ""]
    for protocol in ("linear", "knn"):
        sub = [r for r in rows if r["protocol"] == protocol]
        if not sub:
            continue
        lines += [f"## {protocol} accuracy (mean ± std over seeds) by label fraction", "",
                  "| method | policy | " + " | ".join(fractions) + " |",
                  "| --- | --- | " + " | ".join("---" for _ in fractions) + " |"]
        for key in dict.fromkeys((r["method"], r["policy"]) for r in sub):
            by_fraction = {r["fraction"]: r for r in sub if (r["method"], r["policy"]) == key}
            values = [_cell_text(by_fraction[f]) if f in by_fraction else "" for f in fractions]
            lines.append(f"| {key[0]} | {key[1]} | " + " | ".join(values) + " |")
        lines.append("")
    return "\n".join(lines)


def _total_std(row: dict) -> float:
    """Standard deviation over every (pretraining seed, label seed) evaluation of a row."""
    return float(np.hypot(row["accuracy_std"], row.get("pretrain_std") or 0.0))


def plot_rows(rows: list[dict], protocol: str, path: Path, title: str) -> Path | None:
    """Accuracy against label fraction, one line per (method, policy), error bars the standard deviation
    over all its evaluations (label seeds and pretraining seeds); random baselines dashed."""
    sub = [r for r in rows if r["protocol"] == protocol]
    if not sub:
        return None
    fig, ax = _new_plot()
    for key in dict.fromkeys((r["method"], r["policy"]) for r in sub):
        series = [r for r in sub if (r["method"], r["policy"]) == key]
        style = "--" if key[0] == "random" else "-"
        ax.errorbar([float(r["fraction"]) for r in series], [r["accuracy_mean"] for r in series],
                    yerr=[_total_std(r) for r in series], fmt=style + "o", capsize=3, markersize=4,
                    label=key[1] if key[0] in ("random",) else f"{key[0]} {key[1]}")
    ax.set_xscale("log")
    ax.set_xlabel("label fraction of the training set")
    ax.set_ylabel(f"{protocol} test accuracy")
    return _save_plot(fig, ax, title, path)
