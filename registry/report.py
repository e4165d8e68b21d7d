"""What a promotion decided, as the table `promote` prints and logs: per alias, from where to
where and why (status, value, the paired test, refusals)."""
from __future__ import annotations

from dataclasses import dataclass, field

from projects.core import tracking
from registry import gates as G
from registry.store import vlabel

MOVED, WOULD_MOVE, UNCHANGED, REFUSED, NONE, REMOVED, WOULD_REMOVE, ROLLED_BACK, WOULD_ROLL_BACK = (
    "moved", "would move", "unchanged", "refused", "no candidates", "removed", "would remove",
    "rolled back", "would roll back")


@dataclass
class Decision:
    alias: str
    rule: str
    before: str | None
    after: str | None
    status: str
    value: float | None = None
    target: G.Candidate | None = None
    refused: list[tuple[str, str]] = field(default_factory=list)  # (candidate, reason)
    note: str = ""
    gates: str = ""  # the gates the chosen candidate passed
    significance: str = ""  # the paired test behind a move or a kept holder
    goal: str = ""  # max | min: the direction the rule's metric is good in

    @property
    def changed(self) -> bool:
        return self.status in (MOVED, REMOVED, ROLLED_BACK)


@dataclass
class ModelReport:
    model: str
    policy_ref: str
    dry_run: bool
    n_candidates: int
    decisions: list[Decision]
    refused_all: list[tuple[str, str]]  # refused for every alias (metrics, baseline, holdout)
    notes: list[str] = field(default_factory=list)
    evaluation_run: str | None = None

    def summary(self) -> str:
        if not self.n_candidates and not any(d.before for d in self.decisions):
            return f"{self.model}: no candidates"
        parts = []
        for d in self.decisions:
            target = vlabel(d.after)
            if d.status in (MOVED, WOULD_MOVE, ROLLED_BACK, WOULD_ROLL_BACK):
                parts.append(f"{d.alias}->{target}" + (" (dry run)" if d.status.startswith("would") else ""))
            elif d.status in (REMOVED, WOULD_REMOVE):
                parts.append(f"{d.alias} removed" + (" (dry run)" if d.status == WOULD_REMOVE else ""))
            elif d.after:
                parts.append(f"{d.alias}={target} ({d.status})")
            else:
                parts.append(f"{d.alias}: {d.status}")
        return f"{self.model}: " + ", ".join(parts)

    def table(self) -> str:
        head = (f"{self.model}  (policy {self.policy_ref}, {self.n_candidates} candidate run"
                f"{'' if self.n_candidates == 1 else 's'}{', DRY RUN: nothing changed' if self.dry_run else ''})")
        rows = [("alias", "from", "to", "status", "value", "rule")]
        for d in self.decisions:
            rows.append((d.alias, vlabel(d.before), vlabel(d.after) if d.after or d.target else "-",
                         d.status, "-" if d.value is None else f"{d.value:.4g}", d.rule))
        if not self.n_candidates and all(d.status == NONE and not d.before for d in self.decisions):
            return f"{head}\n  no candidate runs (FINISHED, {tracking.TAG_CANDIDATE}=true) match the policy; nothing moved"
        lines = [head] + _columns(rows) + [f"  {n}" for n in self.notes]
        for d in self.decisions:
            if d.significance:
                lines.append(f"  {d.alias}: {d.significance}")
            if d.note:
                lines.append(f"  {d.alias}: {d.note}")
            for who, why in d.refused:
                lines.append(f"  {d.alias}: refused {who}: {why}")
        for who, why in self.refused_all:
            lines.append(f"  refused for every alias: {who}: {why}")
        if self.evaluation_run:
            lines.append(f"  holdout evaluation: run {self.evaluation_run}")
        return "\n".join(lines)


def _columns(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def who(c: G.Candidate) -> str:
    name = c.run_name or c.tags.get(tracking.TAG_ARCH, "")
    if c.version:
        return f"v{c.version} (run {c.run_id[:8]}{' ' + name if name else ''})"
    return f"run {c.run_id[:8]}" + (f" ({name})" if name else "")


