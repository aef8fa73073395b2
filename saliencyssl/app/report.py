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

Documents and result files may come from others (a pull request), so each is read only when it is
a regular file of bounded size (documents :data:`MAX_DOCUMENT_BYTES`, result files
:data:`MAX_RESULT_BYTES`) in UTF-8, and a result path must resolve to a file inside ``--root``: a
block naming ``/dev/zero``, ``../../secret.json`` or a link out of the folder is refused by name.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from saliencyssl.app.options import fail, one_line_errors
from saliencyssl.files import read_text_file, replace_file

SUMMARY = "the findings tables, regenerated from the committed result files (results/*.json)"

#: The documents ``saliency-ssl report`` keeps in step by default.
DEFAULT_DOCUMENTS = ("docs/findings.md", "docs/surrogate.md", "docs/label.md", "docs/benchmarks.md", "docs/cache.md",
                     "README.md")

#: Largest document read (the findings document is tens of KB).
MAX_DOCUMENT_BYTES = 10 << 20
#: Largest result file read (a table of a few dozen rows is a few KB).
MAX_RESULT_BYTES = 1 << 20

_BLOCK = re.compile(r"(<!-- result: (?P<path>[^ ]+?) -->\n)(?P<body>.*?)(<!-- /result -->)", re.S)


class ResultFileError(ValueError):
    """A result file that is missing or does not have the fields a table needs; ``path`` names it."""

    def __init__(self, path: Path, message: str):
        self.path = Path(path)
        super().__init__(f"{path}: {message}")


class DocumentError(ValueError):
    """A document that cannot be read as a bounded UTF-8 text file; ``path`` names it."""

    def __init__(self, path: Path, message: str):
        self.path = Path(path)
        super().__init__(f"{path}: {message}")


def _result_path(root: Path, name: str) -> Path:
    """``root / name`` when it resolves (links followed) to a path inside ``root``, else ResultFileError."""
    path = root / name
    resolved, inside = path.resolve(), root.resolve()
    if not resolved.is_relative_to(inside):
        raise ResultFileError(path, f"lies outside --root {root} ({resolved}); a result file must be a file below the "
                                    f"root folder, e.g. results/<name>.json")
    return path


def load_result(path: str | Path) -> dict:
    """Read and check a result file (see the module docstring): a regular UTF-8 file of at most
    :data:`MAX_RESULT_BYTES`."""
    path = Path(path)
    try:
        text = read_text_file(path, MAX_RESULT_BYTES, "result file")
    except FileNotFoundError:
        raise ResultFileError(path, "no such result file; run the command that measures it, or drop the block")
    except OSError as error:
        raise ResultFileError(path, f"cannot be read ({error.strerror})") from None
    except ValueError as error:
        raise ResultFileError(path, str(error)) from None
    try:
        result = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise ResultFileError(path, f"not valid JSON ({type(error).__name__}: {str(error)[:200]})") from error
    if not isinstance(result, dict):
        raise ResultFileError(path, f"must hold a JSON object, not a {type(result).__name__}")
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
        for cell in row:
            _check_cell(path, cell)
    for text in (result["title"], result["date"], result["machine"], *result["columns"]):
        _check_text(path, text)
    for text in result["command"] + result.get("notes", []):
        _check_text(path, text, one_line=False)
    return result


#: The largest number a cell may hold (beyond it a float conversion overflows, and no measurement is that big).
MAX_CELL_NUMBER = 10 ** 15


def _check_text(path: Path, text: str, one_line: bool = True) -> None:
    """Refuse text that cannot be written as UTF-8, or that would break the document around its block: a
    block marker (the next run would nest blocks), a code fence, or a line break inside a table cell."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ResultFileError(path, f"holds text that is not valid Unicode ({text!r:.60}); write it as UTF-8 "
                                    f"text") from None
    breaking = [s for s in ("<!--", "-->", "```") if s in text] + (["a line break"] if one_line and "\n" in text
                                                                  else [])
    if breaking:
        raise ResultFileError(path, f"holds {breaking[0]!r} in {text!r:.60}, which would break the document "
                                    f"around its block")


def _check_cell(path: Path, cell) -> None:
    values = cell if isinstance(cell, list) else [cell]
    for value in values:
        if isinstance(value, str):
            _check_text(path, value)
        elif isinstance(value, bool) or value is None:
            continue
        elif isinstance(value, int) and abs(value) > MAX_CELL_NUMBER:
            raise ResultFileError(path, f"a cell holds a number of {value.bit_length() * 0.30103:.0f} digits, larger "
                                        f"than any measurement; the file is damaged")
        elif isinstance(value, float) and not (math.isfinite(value) and abs(value) <= MAX_CELL_NUMBER):
            raise ResultFileError(path, f"a cell holds {value:.3g}, not a measurement; the file is damaged")
        elif not isinstance(value, (int, float)):
            raise ResultFileError(path, f"a cell holds a {type(value).__name__}; cells are numbers, text, "
                                        f"[mean, spread] pairs or null")


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


def read_document(path: str | Path) -> str:
    """A document's text: a regular UTF-8 file of at most :data:`MAX_DOCUMENT_BYTES`.

    Raises:
        DocumentError: naming the file and what is wrong with it.
    """
    path = Path(path)
    try:
        return read_text_file(path, MAX_DOCUMENT_BYTES, "document")
    except FileNotFoundError:
        raise DocumentError(path, "no such document; give the markdown files that hold result blocks") from None
    except OSError as error:
        raise DocumentError(path, f"cannot be read ({error.strerror})") from None
    except ValueError as error:
        raise DocumentError(path, str(error)) from None


def update_document(path: str | Path, root: str | Path = ".") -> tuple[str, list[str]]:
    """The document with every marked block rendered from its result file (paths relative to ``root``,
    and inside it), and the result files whose blocks changed.

    Raises:
        DocumentError: the document is not a bounded UTF-8 file.
        ResultFileError: a result file is missing, outside ``root``, too large, or not a table.
    """
    path, root = Path(path), Path(root)
    text = read_document(path)
    changed: list[str] = []

    def replace(match: re.Match) -> str:
        body = render(load_result(_result_path(root, match.group("path"))))
        if body != match.group("body"):
            changed.append(match.group("path"))
        return match.group(1) + body + match.group(4)

    new = _BLOCK.sub(replace, text)
    if len(new.encode("utf-8")) > MAX_DOCUMENT_BYTES:
        raise DocumentError(path, f"would grow past the {MAX_DOCUMENT_BYTES:,} bytes a document may have; its blocks' "
                                  f"result files are far larger than tables of measurements")
    return new, changed


@dataclass(frozen=True)
class ReportConfig:
    """``saliency-ssl report``: the ``documents`` whose result blocks are rendered from the result files below
    ``root``; with ``check``, nothing is written (the blocks are only compared)."""

    documents: tuple[Path, ...] = tuple(Path(d) for d in DEFAULT_DOCUMENTS)
    root: Path = Path(".")
    check: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.documents, (str, Path)) or not self.documents:
            raise ValueError("documents: give one or more markdown files (a list), e.g. README.md docs/findings.md")
        object.__setattr__(self, "documents", tuple(Path(d) for d in self.documents))
        object.__setattr__(self, "root", Path(self.root))
        if not self.root.is_dir():
            raise ValueError(f"--root {self.root} is not a folder; give the folder the result paths are read from")


def run(config: ReportConfig) -> dict[str, list[str]]:
    """Rewrite (or with ``check`` only compare) every document; returns the changed blocks per document."""
    out = {}
    root, check = config.root, config.check
    for document in config.documents:
        new, changed = update_document(document, root)
        out[str(document)] = changed
        if changed and not check:  # written beside it, then moved over it: a failed write leaves it as it was
            replace_file(document, new)
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


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        changed = run(ReportConfig(tuple(args.documents), args.root, args.check))
    except (OSError, ValueError) as error:  # ResultFileError and DocumentError are ValueErrors
        return fail(error)
    stale = {doc: blocks for doc, blocks in changed.items() if blocks}
    for doc, blocks in stale.items():
        print(f"{doc}: {'out of date' if args.check else 'updated'}: {', '.join(blocks)}")
    if not stale:
        print("every result block is up to date")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
