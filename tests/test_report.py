"""saliency-ssl report: the documents' tables come from the committed result files, and stay in step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from _paths import REPO
from saliencyssl.app import report

RESULT = {"title": "t", "date": "2026-12-06", "machine": "a CPU", "command": ["saliency-ssl grid c.json"],
          "columns": ["recipe", "1%", "100%"], "rows": [["default", [0.41234, 0.0101], 0.6], ["sal", None, 7]],
          "notes": ["mean ± spread"]}


def test_a_block_is_rendered_from_its_result_and_checked(tmp_path, capsys):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "r.json").write_text(json.dumps(RESULT))
    doc = tmp_path / "findings.md"
    doc.write_text("# Findings\n\nProse stays.\n\n<!-- result: results/r.json -->\nold\n<!-- /result -->\n\nEnd.\n")
    assert report.main([str(doc), "--root", str(tmp_path), "--check"]) == 1
    assert "out of date: results/r.json" in capsys.readouterr().out
    assert report.main([str(doc), "--root", str(tmp_path)]) == 0
    text = doc.read_text()
    assert "| default | 0.412 ± 0.010 | 0.600 |" in text and "| sal |  | 7 |" in text
    assert "saliency-ssl grid c.json" in text and "Measured 2026-12-06 on a CPU." in text
    assert text.startswith("# Findings\n\nProse stays.") and text.endswith("<!-- /result -->\n\nEnd.\n")
    assert report.main([str(doc), "--root", str(tmp_path), "--check"]) == 0


def test_a_missing_or_malformed_result_file_is_named(tmp_path, capsys):
    doc = tmp_path / "d.md"
    doc.write_text("<!-- result: results/none.json -->\n<!-- /result -->\n")
    assert report.main([str(doc), "--root", str(tmp_path)]) == 2
    assert "results/none.json: no such result file" in capsys.readouterr().err
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "none.json").write_text(json.dumps({**RESULT, "rows": [["only one cell"]]}))
    with pytest.raises(report.ResultFileError, match="a row has 1 cells, the table 3 columns"):
        report.update_document(doc, tmp_path)


def test_the_shipped_documents_are_in_step_with_their_result_files():
    documents = [REPO / d for d in report.DEFAULT_DOCUMENTS if (REPO / d).is_file()]
    with_blocks = {str(d.relative_to(REPO)) for d in [REPO / "README.md", *(REPO / "docs").glob("*.md")]
                   if "<!-- result: " in d.read_text()}
    assert with_blocks <= set(report.DEFAULT_DOCUMENTS), "a document with result blocks that report never renders"
    for document in documents:
        _, changed = report.update_document(document, REPO)
        assert changed == [], f"{document}: run saliency-ssl report (out of date: {changed})"


@pytest.mark.parametrize("cell, reason", [
    ("\ud800", "not valid Unicode"),                       # the document was left empty by a failed write
    ([10 ** 4000, 1], "4000 digits"),                      # an OverflowError traceback
    ("x <!-- /result -->\ntail", "'<!--'"),                # the document grew on every run
    (float("nan"), "not a measurement"),
    (1e308, "not a measurement"),                          # 313 characters a cell: a 110 MB document
])
def test_a_result_file_that_would_break_or_empty_its_document_is_refused_and_the_document_kept(tmp_path, capsys,
                                                                                              cell, reason):
    (tmp_path / "results").mkdir()
    rows = [["default", cell, 0.6], ["sal", None, 7]]
    (tmp_path / "results" / "r.json").write_text(json.dumps({**RESULT, "rows": rows}))
    doc = tmp_path / "findings.md"
    before = "# Findings\n\n<!-- result: results/r.json -->\nold\n<!-- /result -->\n\nEnd.\n"
    doc.write_text(before)
    assert report.main([str(doc), "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "results/r.json" in err and reason in err
    assert doc.read_text() == before and not list(tmp_path.glob(".*.tmp"))


def test_a_file_planted_beside_the_document_is_never_written_through(tmp_path):
    """The document is written to a fresh file of a random name, then moved over it: a link planted at a
    predictable temporary name (it redirected the table into another file) is left alone."""
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "r.json").write_text(json.dumps(RESULT))
    victim = tmp_path / "victim.txt"
    victim.write_text("mine")
    doc = tmp_path / "findings.md"
    doc.write_text("<!-- result: results/r.json -->\nold\n<!-- /result -->\n")
    (tmp_path / ".findings.md.tmp").symlink_to(victim)
    assert report.main([str(doc), "--root", str(tmp_path)]) == 0
    assert victim.read_text() == "mine" and not doc.is_symlink() and "| default |" in doc.read_text()
