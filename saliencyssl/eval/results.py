"""Writing evaluation results: ``results.json``, ``results.csv``, ``results.md`` and PNG plots.

The JSON holds the numbers a program reads back; the CSV one row per (protocol, fraction) with
the per-seed values spelt out; the markdown a table for a lab notebook or a pull request. Plots
use matplotlib's object API (no pyplot state, no display needed).

Classification results (the evaluate stage)::

    {"linear": {"0.1": {"accuracy_mean": .., "accuracy_std": .., "n_labelled": ..}, ...},
     "knn":    {...same...},
     "kmeans": {"nmi": .., "ari": ..},
     "meta":   {...}}

Segmentation results (the segment stage)::

    {"0.1": {"iou_mean": .., "iou_std": .., "f_mean": .., "f_std": .., "n_labelled": ..}, ..., "meta": {...}}

    (with ``--model maskrcnn`` also ``mask_ap``, ``mask_ap50``, ``mask_ap75`` and ``box_ap``, each ``_mean`` / ``_std``)

Fraction keys are the fractions' text exactly as given on the command line.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from saliencyssl.eval.fractions import FractionScore
from saliencyssl.files import replace_file, save_figure, temporary_beside

#: Line labels of the classification protocols in tables and plots.
PROTOCOL_TITLES = {"linear": "linear probe", "knn": "kNN", "kmeans": "k-means"}


def protocol_title(name: str, knn: Mapping[str, Any] | None = None) -> str:
    """How tables and plots name a protocol; kNN with its ``k`` and temperature when ``knn``
    (``results.json``'s ``meta["knn"]``) gives them."""
    title = PROTOCOL_TITLES.get(name, name)
    if name == "knn" and knn and knn.get("k") is not None:
        title += f" (k={knn['k']}, T={knn.get('temperature', 0.1):g})"
    return title
#: Column titles of the segmentation metrics, in table order.
SEGMENTATION_TITLES = {"iou": "IoU", "f": "F-measure", "mask_ap": "mask AP", "mask_ap50": "mask AP50",
                       "mask_ap75": "mask AP75", "box_ap": "box AP"}


def classification_results(scores: Mapping[str, Sequence[FractionScore]], kmeans: Mapping[str, float | None] | None,
                           meta: Mapping[str, Any]) -> dict[str, Any]:
    """The ``results.json`` object of the evaluate stage.

    Args:
        scores: protocol name (``linear``, ``knn``) -> its fraction scores (metric ``accuracy``).
        kmeans: ``{"nmi": .., "ari": ..}`` (values ``None`` without labels), or ``None`` when not run.
        meta: anything JSON-serialisable describing the run.
    """
    results: dict[str, Any] = {}
    for protocol, entries in scores.items():
        results[protocol] = {e.fraction: {"accuracy_mean": e.mean("accuracy"), "accuracy_std": e.std("accuracy"),
                                          "n_labelled": e.n_labelled} for e in entries}
    if kmeans is not None:
        results["kmeans"] = {"nmi": kmeans.get("nmi"), "ari": kmeans.get("ari")}
    results["meta"] = dict(meta)
    return results


def classification_rows(scores: Mapping[str, Sequence[FractionScore]],
                        kmeans: Mapping[str, float | None] | None) -> list[dict[str, Any]]:
    """CSV / markdown rows: one per (protocol, fraction), then one ``kmeans`` row."""
    rows: list[dict[str, Any]] = []
    for protocol, entries in scores.items():
        for e in entries:
            rows.append({"protocol": protocol, "fraction": e.fraction, "n_labelled": e.n_labelled,
                         "accuracy_mean": e.mean("accuracy"), "accuracy_std": e.std("accuracy"),
                         "accuracy_per_seed": ";".join(f"{v:.6f}" for v in e.values("accuracy")),
                         "seeds": ";".join(str(s) for s in sorted(e.per_seed))})
    if kmeans is not None:
        rows.append({"protocol": "kmeans", "nmi": kmeans.get("nmi"), "ari": kmeans.get("ari"),
                     "n_clusters": kmeans.get("n_clusters")})
    return rows


def _segmentation_metrics(scores: Sequence[FractionScore]) -> list[str]:
    """The metrics the scores hold, in :data:`SEGMENTATION_TITLES` order (``iou``, ``f``, then AP)."""
    present = {m for e in scores for seed in e.per_seed.values() for m in seed}
    return [m for m in SEGMENTATION_TITLES if m in present]


def segmentation_results(scores: Sequence[FractionScore], meta: Mapping[str, Any]) -> dict[str, Any]:
    """The ``results.json`` object of the segment stage (metrics ``iou`` and ``f``, and with
    Mask R-CNN ``mask_ap``, ``mask_ap50``, ``mask_ap75``, ``box_ap``)."""
    metrics = _segmentation_metrics(scores)
    results: dict[str, Any] = {}
    for e in scores:
        entry: dict[str, Any] = {}
        for m in metrics:
            entry[f"{m}_mean"], entry[f"{m}_std"] = e.mean(m), e.std(m)
        results[e.fraction] = {**entry, "n_labelled": e.n_labelled}
    results["meta"] = dict(meta)
    return results


def segmentation_rows(scores: Sequence[FractionScore]) -> list[dict[str, Any]]:
    """CSV / markdown rows of a segmentation run: one per fraction."""
    metrics = _segmentation_metrics(scores)
    rows = []
    for e in scores:
        row: dict[str, Any] = {"fraction": e.fraction, "n_labelled": e.n_labelled}
        for m in metrics:
            row[f"{m}_mean"], row[f"{m}_std"] = e.mean(m), e.std(m)
        for m in metrics:
            row[f"{m}_per_seed"] = ";".join(f"{v:.6f}" for v in e.values(m))
        rows.append({**row, "seeds": ";".join(str(s) for s in sorted(e.per_seed))})
    return rows


def write_json(path: str | Path, obj: Any) -> Path:
    """Pretty JSON (NaN written as ``null``), written atomically (temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return replace_file(path, json.dumps(_finite(obj), indent=2) + "\n")


def write_csv(path: str | Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Rows to CSV; the header is the union of keys in first-seen order, missing cells empty."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    with temporary_beside(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return path


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """A GitHub markdown table.

    Args:
        rows: dictionaries; a missing key gives an empty cell.
        columns: ``(header, key)`` pairs; a key ``"a±b"`` writes ``row[a] ± row[b]``.
    """
    lines = ["| " + " | ".join(h for h, _ in columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        cells = []
        for _, key in columns:
            if "±" in key:
                a, b = key.split("±")
                cells.append(f"{_fmt(row.get(a))} ± {_fmt(row.get(b))}" if row.get(a) is not None else "")
            else:
                cells.append(_fmt(row.get(key)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def classification_markdown(results: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> str:
    """``results.md`` of the evaluate stage."""
    meta = results.get("meta", {})
    parts = ["# Downstream evaluation", "", *_meta_lines(meta), ""]
    fraction_rows = [r for r in rows if r.get("protocol") in ("linear", "knn")]
    if fraction_rows:
        parts += ["## Accuracy against label fraction (mean ± std over seeds)", "",
                  markdown_table([{**r, "protocol": protocol_title(r["protocol"], meta.get("knn")),
                                   "accuracy_per_seed": _per_seed(r.get("accuracy_per_seed"))} for r in fraction_rows],
                                 [("protocol", "protocol"), ("label fraction", "fraction"), ("labelled images", "n_labelled"),
                                  ("top-1 accuracy", "accuracy_mean±accuracy_std"), ("per seed", "accuracy_per_seed")]), ""]
        k = (meta.get("knn") or {}).get("k")
        capped = [r["fraction"] for r in fraction_rows if r.get("protocol") == "knn" and k
                  and r.get("n_labelled") is not None and r["n_labelled"] < k]
        if capped:
            parts += [f"kNN votes with every labelled image where there are fewer than k={k} "
                      f"(fractions {', '.join(capped)}).", ""]
    if "kmeans" in results:
        km = results["kmeans"]
        parts += ["## k-means", "",
                  markdown_table([{"n": meta.get("kmeans", {}).get("n_clusters"), **km}],
                                 [("clusters", "n"), ("NMI", "nmi"), ("ARI", "ari")]), ""]
        if km.get("nmi") is None:
            parts += ["NMI and ARI need labels; the clustered set has none.", ""]
    return "\n".join(parts)


def segmentation_markdown(results: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> str:
    """``results.md`` of the segment stage."""
    meta = results.get("meta", {})
    metrics = [m for m in SEGMENTATION_TITLES if rows and f"{m}_mean" in rows[0]]
    heading = "Foreground IoU and F-measure (beta^2 = 0.3)" + (", COCO AP of the instance masks and boxes"
                                                               if "mask_ap" in metrics else "")
    parts = ["# Segmentation evaluation", "", *_meta_lines(meta), "",
             f"## {heading} against label fraction (mean ± std over seeds)", "",
             markdown_table(rows, [("label fraction", "fraction"), ("labelled images", "n_labelled"),
                                   *[(SEGMENTATION_TITLES[m], f"{m}_mean±{m}_std") for m in metrics]]), ""]
    baselines = meta.get("baselines")
    if baselines:
        titles = {"all_foreground": "every pixel foreground", "centre_box": "centred square of half the side"}
        parts += ["Image-blind predictions on the same test split (a trained model should beat these):", "",
                  markdown_table([{"name": titles.get(k, k), **v} for k, v in baselines.items()],
                                 [("prediction", "name"),
                                  *[(SEGMENTATION_TITLES[m], m) for m in metrics]]), ""]
    return "\n".join(parts)


def plot_fraction_curves(series: Mapping[str, Sequence[FractionScore]], metric: str | Mapping[str, str], ylabel: str,
                         path: str | Path, title: str = "", chance: float | None = None,
                         references: Mapping[str, float] | None = None) -> Path:
    """Metric against label fraction, one line per series, error bars = std over seeds; saved as PNG.

    Args:
        series: line label -> fraction scores.
        metric: which metric of the scores to plot (e.g. ``"accuracy"``), or line label -> metric.
        chance: draw a dashed horizontal line at this value (e.g. ``1 / n_classes``).
        references: more dotted horizontal lines, label -> value (e.g. an image-blind baseline).
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=120)
    ax = fig.add_subplot(1, 1, 1)
    for name, entries in series.items():
        key = metric if isinstance(metric, str) else metric[name]
        entries = sorted(entries, key=lambda e: e.value)
        x = [e.value for e in entries]
        ax.errorbar(x, [e.mean(key) for e in entries], yerr=[e.std(key) for e in entries], marker="o",
                    capsize=3, label=PROTOCOL_TITLES.get(name, name))
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle="--", linewidth=1, label=f"chance ({chance:.2f})")
    for i, (name, value) in enumerate((references or {}).items()):
        ax.axhline(value, color=f"C{len(series) + i}", linestyle=":", linewidth=1.2, label=f"{name} ({value:.2f})")
    ax.set_xlabel("label fraction")
    ax.set_ylabel(ylabel)
    ax.set_xlim(0, 1.05)
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path)
    return path


def plot_tsne(embedding: np.ndarray, clusters: np.ndarray, labels: np.ndarray | None, classes: Sequence[str],
              path: str | Path, title: str = "t-SNE of frozen features") -> Path:
    """Side-by-side t-SNE scatter plots coloured by k-means cluster and (when known) by label.

    Args:
        embedding: ``(M, 2)`` coordinates from :func:`saliencyssl.eval.clustering.tsne_map`.
        clusters: ``(M,)`` cluster index per point.
        labels: ``(M,)`` class label per point, or ``None`` / negative when unlabelled.
        classes: class names indexed by label (legend).
    """
    from matplotlib.figure import Figure

    has_labels = labels is not None and len(labels) and (np.asarray(labels) >= 0).all()
    panels = 2 if has_labels else 1
    fig = Figure(figsize=(5.5 * panels, 5), dpi=120)
    ax = fig.add_subplot(1, panels, 1)
    _scatter(ax, embedding, clusters, [f"cluster {i}" for i in range(int(np.max(clusters, initial=0)) + 1)])
    ax.set_title("coloured by k-means cluster")
    if has_labels:
        ax = fig.add_subplot(1, panels, 2)
        names = list(classes) or [str(i) for i in range(int(np.max(labels)) + 1)]
        _scatter(ax, embedding, np.asarray(labels), names)
        ax.set_title("coloured by label")
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path)
    return path


def _scatter(ax, embedding: np.ndarray, groups: np.ndarray, names: Sequence[str]) -> None:
    import matplotlib

    groups = np.asarray(groups)
    cmap = matplotlib.colormaps["tab10" if len(names) <= 10 else "tab20"]
    for g in np.unique(groups):
        points = embedding[groups == g]
        name = names[g] if 0 <= g < len(names) else str(g)
        # a class folder whose name is not UTF-8 decodes with lone surrogates, which matplotlib's fonts refuse
        name = str(name).encode("utf-8", "backslashreplace").decode("utf-8")
        ax.scatter(points[:, 0], points[:, 1], s=4, color=cmap(int(g) % cmap.N), label=name)
    ax.set_xticks([])
    ax.set_yticks([])
    if len(names) <= 20:
        ax.legend(loc="best", fontsize=6, markerscale=2, frameon=False)


def _meta_lines(meta: Mapping[str, Any]) -> list[str]:
    backbone = meta.get("backbone", {})
    lines = []
    if backbone:
        cfg = backbone.get("config", {})
        lines.append(f"- backbone: `{backbone.get('source')}` ({cfg.get('arch', 'resnet18')}, "
                     f"{'CIFAR' if cfg.get('cifar_stem') else 'ImageNet'} stem, images at {backbone.get('image_size')} px"
                     + (f", method {cfg['method']}" if cfg.get("method") else "") + ")")
    for name, info in (meta.get("datasets") or {}).items():
        if isinstance(info, Mapping):
            lines.append(f"- {name}: `{info.get('path')}` ({info.get('n_images')} images"
                         + (f", {len(info['classes'])} classes" if info.get("classes") else "") + ")")
    if "seeds" in meta:
        lines.append(f"- seeds: {', '.join(str(s) for s in meta['seeds'])}")
    return lines


def _per_seed(text: str | None) -> str:
    """``"0.123456;0.234567"`` as ``"0.1235, 0.2346"``."""
    return ", ".join(f"{float(v):.4f}" for v in text.split(";") if v) if text else ""


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Mapping):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, (np.integer, np.floating)):
        return _finite(obj.item())
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_report(out_dir: str | Path, results: Mapping[str, Any], rows: Iterable[Mapping[str, Any]],
                 markdown: str) -> dict[str, Path]:
    """Write ``results.csv``, ``results.md`` and, last and atomically, ``results.json`` into ``out_dir``
    (so a finished ``results.json`` marks a finished evaluation); returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"csv": write_csv(out_dir / "results.csv", list(rows)), "md": _write_text(out_dir / "results.md", markdown)}
    paths["json"] = write_json(out_dir / "results.json", results)
    return paths


def _write_text(path: Path, text: str) -> Path:
    return replace_file(path, text if text.endswith("\n") else text + "\n")


__all__ = ["PROTOCOL_TITLES", "protocol_title", "classification_results", "classification_rows", "segmentation_results",
           "segmentation_rows", "write_json", "write_csv", "markdown_table", "classification_markdown",
           "segmentation_markdown", "plot_fraction_curves", "plot_tsne", "write_report"]
