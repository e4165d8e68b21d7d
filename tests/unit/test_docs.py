"""The documents a user reads: the README (short, the two commands first, citations, licence,
research-use statement), every relative link resolving inside the repository, and no path
that points outside it."""
from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"


def user_documents() -> list[Path]:
    skip = {".venv", ".git", "tests", ".cache", "mlruns", "node_modules"}
    return sorted(p for p in REPO.rglob("*.md") if not skip & set(p.relative_to(REPO).parts))


def test_readme_starts_with_the_two_commands_and_stays_short():
    text = README.read_text()
    # words, not lines: a line count rewarded one 2,000-character paragraph over a table
    assert len(text.split()) < 1800, len(text.split())
    block = re.search(r"```bash\n(.*?)```", text, re.S).group(1).splitlines()
    assert [line.split("#")[0].strip() for line in block] == ["make demo", "make test"]
    assert text.index("make demo") < 300  # at the top, before any prose


def test_readme_states_use_licence_and_cites_papers_and_data():
    text = " ".join(README.read_text().split())
    assert "Not for clinical use" in text and "Research use only" in text
    assert (REPO / "LICENSE").read_text().startswith("MIT License")
    for needed in ("mini-MIAS", "PAIP 2023", "MoNuSeg", "Jurnal Sistem Komputer dan Informatika",
                   "Jurnal Nasional Teknik Elektro", "CC BY-NC-SA 4.0", "http://peipa.essex.ac.uk",
                   "https://monuseg.grand-challenge.org", "docs/img/dashboard.png", "docs/img/mlflow-ui.png",
                   "results/REAL_DATA.md", "docs/use-the-champion.md"):
        assert needed in text, needed


def test_no_document_points_outside_the_repository():
    found = [f"{p.relative_to(REPO)}:{n}: {line.strip()}" for p in user_documents()
             for n, line in enumerate(p.read_text().splitlines(), 1)
             if re.search(r"\.\./shared|/work/shared", line)]
    assert not found, "\n".join(found)


def test_every_relative_link_resolves():
    broken = []
    for doc in user_documents():
        for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text()):
            if re.match(r"[a-z]+:|#", target):
                continue
            if not (doc.parent / target.split("#")[0]).exists():
                broken.append(f"{doc.relative_to(REPO)} -> {target}")
    assert not broken, "\n".join(broken)


def test_every_real_data_number_in_the_readme_is_on_the_page():
    """The README copies real-data numbers from results/REAL_DATA.md (rendered from the
    records); a number typed in by hand, or left behind when the page changed, fails here."""
    section = (REPO / "README.md").read_text().split("## Results on real data", 1)[1].split("\n## ", 1)[0]
    page = (REPO / "results" / "REAL_DATA.md").read_text()
    numbers = re.findall(r"\d\.\d{3}(?: \[\d\.\d{3}, \d\.\d{3}\])?", section)
    assert len(numbers) >= 10
    assert [n for n in numbers if n not in page] == []
