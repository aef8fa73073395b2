"""Tables and plots of a grid's results: rows from finished evaluations, gaps between policies.

A grid (:mod:`saliencyssl.app.grid`) pretrains cells and evaluates each one with the linear probe
and kNN at label fractions; this module turns their ``results.json`` files into rows (one per
method, policy, protocol and fraction, pretraining seeds of a cell combined), a CSV, markdown
tables and plots, and compares policies (:func:`policy_gap`).
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np

from saliencyssl.files import save_figure


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
    save_figure(fig, path, dpi=120)
    plt.close(fig)
    return Path(path)


def plot_monitored_knn(runs: list[tuple[str, Path]], path: Path, title: str,
                       random_knn: float | None = None) -> Path | None:
    """kNN accuracy monitored during pretraining (``knn_every``) against optimiser steps, from
    ``(policy, run_dir)`` pairs: one line per policy (the mean over its pretraining seeds; each seed
    faint when there are several), and a random backbone's kNN at 100% of the labels dashed when
    given. ``None`` when no run monitored kNN."""
    curves: dict[str, list[list[tuple[int, float]]]] = {}
    for policy, run_dir in runs:
        history_path = Path(run_dir) / "history.json"
        if not history_path.is_file():
            continue
        steps, points = 0, []
        for epoch in json.loads(history_path.read_text()):
            steps += epoch.get("steps", 0)
            if epoch.get("knn_accuracy") is not None:
                points.append((steps, epoch["knn_accuracy"]))
        if points:
            curves.setdefault(policy, []).append(points)
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


def pool_runs(means: list[float], stds: list[float]) -> tuple[float, float, float | None]:
    """Several runs of one cell (pretraining seeds), each a mean and a standard deviation over its own
    seeds (label subsets, fine-tuning seeds): the mean of the means, the root mean square of the
    standard deviations and the population standard deviation of the means (``None`` for one run)."""
    means_ = np.asarray(means, dtype=float)
    within = float(np.sqrt(np.mean(np.square(np.asarray(stds, dtype=float)))))
    return float(means_.mean()), within, float(means_.std()) if len(means_) > 1 else None


def _read_json(path: Path, what: str):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ValueError(f"{path}: not {what} ({type(error).__name__}: {str(error)[:120]}); it is damaged: delete "
                         f"its folder to evaluate the cell again") from None


def read_results(path: Path) -> dict:
    """An evaluation's ``results.json``: ``{protocol: {fraction: {"accuracy_mean", "accuracy_std",
    "n_labelled", ...}}}`` with fractions in (0, 1] and accuracies from 0 to 1; a damaged one raises
    ``ValueError`` naming the file."""

    def fraction(key) -> bool:
        try:
            return 0 < float(key) <= 1
        except (TypeError, ValueError):
            return False

    def share(value) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1

    results = _read_json(path, "an evaluation's results")
    ok = isinstance(results, dict)
    for protocol in ("linear", "knn"):
        table = results.get(protocol, {}) if ok else None
        ok = ok and isinstance(table, dict) and all(
            fraction(key) and isinstance(entry, dict) and share(entry.get("accuracy_mean"))
            and share(entry.get("accuracy_std")) and isinstance(entry.get("n_labelled"), int)
            and not isinstance(entry.get("n_labelled"), bool) for key, entry in table.items())
    if not ok:
        raise ValueError(f"{path}: not an evaluation's results (each protocol maps label fractions in (0, 1] to an "
                         f"accuracy_mean and accuracy_std from 0 to 1 and a whole n_labelled); it is damaged: delete "
                         f"its folder to evaluate the cell again")
    return results


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
        results = read_results(path)
        knn_final = None
        if run_dir is not None and (Path(run_dir) / "history.json").is_file():
            history = _read_json(Path(run_dir) / "history.json", "a pretraining history")
            last = history[-1] if isinstance(history, list) and history else {}
            knn_final = last.get("knn_accuracy") if isinstance(last, dict) else None
            if not (knn_final is None or isinstance(knn_final, (int, float)) and not isinstance(knn_final, bool)):
                knn_final = None
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
        mean, within, between = pool_runs([e["accuracy_mean"] for e in entries], [e["accuracy_std"] for e in entries])
        finals = [e["knn_final"] for e in entries]
        rows.append({"method": method, "policy": policy, "protocol": protocol, "fraction": fraction,
                     "n_labelled": entries[0]["n_labelled"], "accuracy_mean": mean, "accuracy_std": within,
                     "pretrain_seeds": len(entries), "pretrain_std": between,
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
