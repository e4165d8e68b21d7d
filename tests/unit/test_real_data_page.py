"""results/REAL_DATA.md keeps the sections of blocks a partial run (--blocks) did not redo."""
from __future__ import annotations

from pipeline.real_data import HEADER, page, sections

OLD = "\n".join(HEADER + ["## mias-roi", "", "old roi table", "", "## monuseg", "", "old monuseg table", "",
                          "## Registry", "", "old promotion", ""])


def test_a_partial_run_rewrites_its_blocks_and_keeps_the_others_in_order():
    new = {"monuseg": "## monuseg\n\nnew monuseg table\n", "Registry": "## Registry\n\nnew promotion\n"}
    text = page(new, OLD, order=["mias-roi", "mias-film", "monuseg"])
    got = sections(text)
    assert list(got) == ["mias-roi", "monuseg", "Registry"]
    assert "old roi table" in got["mias-roi"] and "new monuseg table" in got["monuseg"]
    assert "old monuseg table" not in text and "old promotion" not in text
    assert text.startswith(HEADER[0]) and text.count(HEADER[0]) == 1


def test_the_first_run_writes_a_page_from_nothing():
    text = page({"mias-film": "## mias-film\n\nt\n"}, "", order=["mias-roi", "mias-film"])
    assert list(sections(text)) == ["mias-film"]
