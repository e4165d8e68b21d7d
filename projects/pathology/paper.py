"""Table V of the pathology paper (Study 2 in docs/studies.md), as data.

`TABLE_V` holds the 13 trained cells (4 U-Net, 9 ELU-Net) exactly as published;
`UNTRAINABLE` the U-Net cells the authors could not train (dashes in the table);
`projects.pathology.models.paper.param_count_table()` sets our counts beside the paper's.
Torch-free, so dashboards can import the paper's numbers without any model code.
"""
from __future__ import annotations

from dataclasses import dataclass



@dataclass(frozen=True)
class PaperCell:
    """One trained row of Table V. cpu_s: load the saved model + predict 57 tiles on CPU;
    size_mb: the saved Keras file (about 12 bytes per parameter, optimizer state included)."""

    arch: str  # "unet" or "elunet", as build_model names them
    filters: int
    depth: int
    params: int
    jaccard: float
    cpu_s: float
    size_mb: float


TABLE_V: tuple[PaperCell, ...] = (
    PaperCell("unet", 32, 4, 1_926_149, 0.903, 4.3, 23.26),
    PaperCell("unet", 32, 5, 7_760_645, 0.928, 5.3, 93.31),
    PaperCell("unet", 64, 4, 7_698_437, 0.889, 12.3, 92.53),
    PaperCell("unet", 64, 5, 31_032_837, 0.829, 15.6, 372.61),
    PaperCell("elunet", 4, 4, 52_053, 0.867, 2.9, 0.916),
    PaperCell("elunet", 4, 5, 163_109, 0.851, 3.9, 2.25),
    PaperCell("elunet", 4, 6, 580_337, 0.824, 5.2, 7.47),
    PaperCell("elunet", 8, 4, 205_769, 0.854, 3.4, 2.76),
    PaperCell("elunet", 8, 5, 644_697, 0.897, 4.0, 8.1),
    PaperCell("elunet", 8, 6, 2_313_537, 0.830, 6.3, 28.26),
    PaperCell("elunet", 16, 4, 818_193, 0.812, 5.2, 10.1),
    PaperCell("elunet", 16, 5, 2_570_417, 0.867, 5.5, 31.2),
    PaperCell("elunet", 16, 6, 9_238_529, 0.857, 9.1, 111.34),
)

# (arch, filters, depth) cells shown as a dash: not trainable on the authors' resources.
UNTRAINABLE: tuple[tuple[str, int, int], ...] = (
    ("unet", 32, 6),
    ("unet", 64, 6),
    ("unet", 128, 4),
    ("unet", 128, 5),
    ("unet", 128, 6),
)


def paper_cell(arch: str, filters: int, depth: int) -> PaperCell | None:
    """The published row for this configuration, or None if the paper has none."""
    for cell in TABLE_V:
        if (cell.arch, cell.filters, cell.depth) == (arch, filters, depth):
            return cell
    return None
