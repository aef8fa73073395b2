"""``saliency-ssl <stage> ...``: one command for every stage (``saliency-ssl --help`` lists them).

Each stage is a module of :mod:`saliencyssl.app` with a ``SUMMARY`` line and ``main(argv)``; the
module is imported only when its stage runs, so ``saliency-ssl label`` never loads torch's SSL
methods. ``saliency-ssl --help`` reads each ``SUMMARY`` from the module's source without importing
it (the stages' imports load torch), so it is quick.
"""

from __future__ import annotations

import ast
import importlib
import sys
from importlib.util import find_spec
from pathlib import Path

#: Stage name -> module, in the order the data flows.
STAGES = {
    "label": "saliencyssl.app.label",
    "cache": "saliencyssl.app.cache",
    "views": "saliencyssl.app.views",
    "train-surrogate": "saliencyssl.app.train_surrogate",
    "fidelity": "saliencyssl.app.fidelity",
    "pretrain": "saliencyssl.app.pretrain",
    "evaluate": "saliencyssl.app.evaluate",
    "grid": "saliencyssl.app.grid",
    "quickstart": "saliencyssl.app.quickstart",
    "report": "saliencyssl.app.report",
    "segment": "saliencyssl.app.segment",
}


def _summary(module_name: str) -> str:
    """The stage module's ``SUMMARY = "..."``, read from its source ('' when it has none)."""
    tree = ast.parse(Path(find_spec(module_name).origin).read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "SUMMARY" for t in node.targets):
            value = node.value
            return value.value if isinstance(value, ast.Constant) and isinstance(value.value, str) else ""
    return ""


def usage() -> str:
    width = max(len(name) for name in STAGES)
    lines = ["usage: saliency-ssl <stage> [options]   (saliency-ssl <stage> --help for a stage's options)", "",
             "Cheng et al.'s SaliencyCut as a cheap augmentation for self-supervised learning.", "", "stages:"]
    lines += [f"  {name:<{width}}  {_summary(module)}" for name, module in STAGES.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from saliencyssl import __version__

        print(f"saliency-ssl {__version__}")
        return 0
    stage, rest = argv[0], argv[1:]
    if stage not in STAGES:
        print(f"error: unknown stage {stage!r}; choose one of: {', '.join(STAGES)}\n\n{usage()}", file=sys.stderr)
        return 2
    return int(importlib.import_module(STAGES[stage]).main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
