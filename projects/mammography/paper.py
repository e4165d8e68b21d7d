"""The mammography paper's published numbers (docs/studies.md, Study 1), in one place."""
from __future__ import annotations

from dataclasses import dataclass

SPLITS = ("90:10", "80:20", "70:30", "75:25")


@dataclass(frozen=True)
class PaperScenario:
    task: str
    split: str
    accuracy: float
    precision: float
    recall: float
    f1: float


# The paper reports one set of numbers per split; it does not say whether original or
# augmented data produced them, so both of our variants are compared with the same row.
SCENARIOS = (
    PaperScenario("7class", "90:10", 0.72, 0.11, 0.16, 0.13),
    PaperScenario("7class", "80:20", 0.68, 0.09, 0.14, 0.11),
    PaperScenario("7class", "70:30", 0.63, 0.09, 0.13, 0.11),
    PaperScenario("7class", "75:25", 0.70, 0.11, 0.15, 0.12),
    PaperScenario("benign_malignant", "75:25", 0.35, 0.17, 0.50, 0.27),
)


def paper_row(task: str, split: str) -> PaperScenario | None:
    for row in SCENARIOS:
        if row.task == task and row.split == split:
            return row
    return None
