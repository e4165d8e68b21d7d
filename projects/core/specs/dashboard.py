"""What a study's dashboard page shows (dashboards/ reads it): the trade-off charts' columns,
metric-against-setting curves, image galleries and the paper table's layout."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class CurveSpec:
    """A dashboard chart of test metrics against one setting, a line per group, the paper's
    points and the baselines beside it (mammography: against the split; pathology: depth)."""
    title: str
    caption: str
    x: str  # column of the runs table
    x_label: str
    groups: tuple[str, ...]  # one line per combination of these columns
    panels: tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...]  # (metric, title, ((baseline, label), ...))
    x_scale: float = 1.0
    x_ticks: str = ""  # column whose text labels the x ticks ("split": 80:20)
    per_task: bool = False  # one chart per task
    paper_groups: tuple[str, ...] = ()  # columns of the paper's points that choose the group (else one series)


@dataclass(frozen=True)
class GallerySpec:
    """Images a run logged, shown on the study page: the best run of each group, or the
    champion's (falling back to the best run)."""
    title: str
    caption: str
    artifact: str  # e.g. "confusion_matrix.png"
    group_by: tuple[str, ...] = ()  # empty: one image, the champion's
    csv_fallback: str = ""  # a CSV artifact shown as a table when the image is missing
    strip: bool = False  # a tall strip of (tile | overlay) pairs: laid out in rows


@dataclass(frozen=True)
class DashboardSpec:
    title: str  # page title
    metrics: tuple[str, ...]  # test_* and baseline_* columns of the study's tables
    size_by: str  # column that sizes the markers of the trade-off charts
    size_label: str
    hover: tuple[str, ...] = ()  # format strings over run columns, e.g. "filters n={filters}"
    run_columns: tuple[str, ...] = ()  # settings shown in the runs table
    curves: tuple[CurveSpec, ...] = ()
    galleries: tuple[GallerySpec, ...] = ()
    # The paper's section (a study with a paper: dashboards.paper.PaperStudy): how its table is laid out.
    paper_on_tradeoff: bool = False  # the paper published costs: draw its points there
    paper_caption: str = ""
    paper_columns: tuple[str, ...] = ()
    paper_headers: Mapping[str, str] = field(default_factory=dict)
    paper_int_columns: tuple[str, ...] = ()
