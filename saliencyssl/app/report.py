"""The findings' tables, regenerated from the small result files committed under ``results/``.

Every measured figure the documentation quotes lives in a result file, ``results/<name>.json``,
written by the command that measured it (or by a collection script over its run folders)::

    {
      "title": "CIFAR-10: mask-aware recipes against default (linear probe)",
      "date": "2026-12-06",
      "machine": "AMD EPYC (2 cores), 2 torch threads, no GPU",
      "command": ["saliency-ssl grid configs/mask_aware_cifar10_cpu.json"],
      "columns": ["recipe", "1%", "10%", "100%"],
      "rows": [["default", [0.412, 0.010], [0.55, 0.004], 0.61]],
      "notes": ["mean ± spread over 2 pretraining seeds x 3 label seeds"]
    }

A cell is a string, a number (three decimals), ``null`` (blank) or ``[mean, spread]``
(``mean ± spread``). A document carries a table as a marked block::

    <!-- result: results/mask_aware_cifar10.json -->
    ... replaced by the table, its notes, the command, the date and the machine ...
    <!-- /result -->

``saliency-ssl report`` rewrites every marked block of the documents from their result files;
``--check`` only says which blocks are out of date (and exits 1), so a test keeps the documents
and the result files in step. Nothing else in a document is touched.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from saliencyssl.app.options import fail

SUMMARY = "the findings tables, regenerated from the committed result files (results/*.json)"

#: The documents ``saliency-ssl report`` keeps in step by default.
DEFAULT_DOCUMENTS = ("docs/findings.md",)

_BLOCK = re.compile(r"(<!-- result: (?P<path>[^ ]+?) -->\n)(?P<body>.*?)(<!-- /result -->)", re.S)


class ResultFileError(ValueError):
    """A result file that is missing or does not have the fields a table needs; ``path`` names it."""

    def __init__(self, path: Path, message: str):
        self.path = Path(path)
        super().__init__(f"{path}: {message}")


def load_result(path: str | Path) -> dict:
    """Read and check a result file (see the module docstring)."""
    path = Path(path)
    try:
        result = json.loads(path.read_text())
    except FileNotFoundError:
        raise ResultFileError(path, "no such result file; run the command that measures it, or drop the block")
    except (ValueError, RecursionError) as error:
        raise ResultFileError(path, f"not valid JSON ({type(error).__name__}: {str(error)[:200]})") from error
    required = {"title": str, "date": str, "machine": str, "command": list, "columns": list, "rows": list}
    for key, kind in required.items():
        if not isinstance(result.get(key), kind):
            raise ResultFileError(path, f"needs {key!r} ({kind.__name__})")
    if not all(isinstance(c, str) for c in result["columns"]) or not all(isinstance(c, str) for c in result["command"]):
        raise ResultFileError(path, "columns and command must be lists of strings")
    if not isinstance(result.get("notes", []), list) or not all(isinstance(n, str) for n in result.get("notes", [])):
        raise ResultFileError(path, "notes must be a list of strings")
    for row in result["rows"]:
        if not isinstance(row, list) or len(row) != len(result["columns"]):
            raise ResultFileError(path, f"a row has {len(row) if isinstance(row, list) else 'no'} cells, the table "
                                        f"{len(result['columns'])} columns: {row!r:.80}")
    return result


def format_cell(value) -> str:
    """One table cell (see the module docstring)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        return f"{value:.3f}" if isinstance(value, float) else f"{value:,}"
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
        return f"{value[0]:.3f} ± {value[1]:.3f}"
    return str(value)


def render(result: dict) -> str:
    """The markdown of one result: its table, notes, command, date and machine."""
    columns = result["columns"]
    lines = ["| " + " | ".join(columns) + " |", "| " + " | ".join("---" for _ in columns) + " |"]
    lines += ["| " + " | ".join(format_cell(v) for v in row) + " |" for row in result["rows"]]
    lines.append("")
    for note in result.get("notes", []):
        lines.append(f"{note}")
        lines.append("")
    commands = "\n".join(result["command"])
    lines += ["```", commands, "```", "", f"Measured {result['date']} on {result['machine']}.", ""]
    return "\n".join(lines)


def update_document(path: str | Path, root: str | Path = ".") -> tuple[str, list[str]]:
    """The document with every marked block rendered from its result file (paths relative to ``root``),
    and the result files whose blocks changed."""
    path, root = Path(path), Path(root)
    text = path.read_text()
    changed: list[str] = []

    def replace(match: re.Match) -> str:
        body = render(load_result(root / match.group("path")))
        if body != match.group("body"):
            changed.append(match.group("path"))
        return match.group(1) + body + match.group(4)

    return _BLOCK.sub(replace, text), changed


def run(documents: list[Path], root: Path = Path("."), check: bool = False) -> dict[str, list[str]]:
    """Rewrite (or with ``check`` only compare) every document; returns the changed blocks per document."""
    out = {}
    for document in documents:
        new, changed = update_document(document, root)
        out[str(document)] = changed
        if changed and not check:
            document.write_text(new)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="saliency-ssl report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("documents", nargs="*", type=Path, default=[Path(d) for d in DEFAULT_DOCUMENTS],
                        help=f"markdown files with result blocks (default: {', '.join(DEFAULT_DOCUMENTS)})")
    parser.add_argument("--root", type=Path, default=Path("."),
                        help="where the result paths of the blocks are read from (default: this folder)")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 when a block differs from its result file")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        changed = run(args.documents, args.root, args.check)
    except (OSError, ResultFileError) as error:
        return fail(str(error))
    stale = {doc: blocks for doc, blocks in changed.items() if blocks}
    for doc, blocks in stale.items():
        print(f"{doc}: {'out of date' if args.check else 'updated'}: {', '.join(blocks)}")
    if not stale:
        print("every result block is up to date")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
