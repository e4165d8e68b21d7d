"""Long measurements as resumable records: one small JSON file per finished unit.

A measurement of hours (the real-data page's trained cells, a benchmark's repetitions, a
search's trials) is a list of units. Each unit that finishes writes one record under
`results/records/<block>/` at once, so a killed job loses at most the unit in progress, and a
rerun skips every unit whose record has the same settings and data digest. Pages are rendered
from the committed records alone: a measurement run in pieces, on several machines, gives the
same page as one run in one go.

    store = RecordStore(RECORDS / "monuseg")
    key = unit_key(settings, data_digest)
    if store.get(key) is None and not budget.spent():
        ... train ...
        store.write(Record(block="monuseg", unit="elunet-4-4-s0", key=key, settings=settings, ...))

A record says what produced it (commit, machine, date) and what it measured: settings, the
data and holdout digests, metrics with their intervals, size, CPU times, wall time.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import platform
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from projects.core import runtime

RECORDS = runtime.REPO_ROOT / "results" / "records"
SCHEMA = 1


def unit_key(settings: Mapping[str, Any], data_digest: str) -> str:
    """Names a unit: the same settings on the same data are the same unit, whatever machine or
    commit measures them (those are written in the record, not in its key)."""
    text = json.dumps({"settings": dict(settings), "data": data_digest}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _finite(value: Any) -> Any:
    """JSON has no NaN: a missing or non-finite number is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


@dataclass
class Record:
    block: str
    unit: str  # readable name of the unit (a cell and seed, a trial, a repetition)
    key: str  # unit_key(settings, data_digest)
    settings: dict[str, Any]
    data_digest: str
    metrics: dict[str, float | None] = field(default_factory=dict)  # the run's logged numbers
    holdout: dict[str, float | None] = field(default_factory=dict)  # scores on the study's holdout
    history: dict[str, list[float | None]] = field(default_factory=dict)  # per-epoch curves (rank stability)
    holdout_digest: str = "none"
    # The holdout result by unit (UnitScores.as_dict): paired tests between records on the same
    # holdout (pipeline/paired.py). Records written before it have none.
    holdout_units: dict[str, Any] = field(default_factory=dict)
    status: str = "FINISHED"  # or "FAILED: <why>" (a cell that cannot run here is a result too)
    wall_s: float = 0.0
    run_id: str = ""
    machine: dict[str, Any] = field(default_factory=dict)
    commit: str = ""
    finished: str = ""
    schema: int = SCHEMA

    def to_json(self) -> str:
        return json.dumps(_finite(asdict(self)), indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Record:
        data = json.loads(text)
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


class RecordStore:
    """The records of one block: `<root>/<key>.json`, written atomically."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def get(self, key: str) -> Record | None:
        path = self.path(key)
        return Record.from_json(path.read_text()) if path.is_file() else None

    def write(self, record: Record) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.path(record.key)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(record.to_json())
        os.replace(tmp, path)  # a kill mid-write leaves no half record
        return path

    def __iter__(self) -> Iterator[Record]:
        for path in sorted(self.root.glob("*.json")):
            yield Record.from_json(path.read_text())

    def all(self) -> list[Record]:
        return list(self)


class Budget:
    """`--budget-min N`: no new unit starts after N minutes (0 or None: no limit). The unit in
    progress finishes; its record is written."""

    def __init__(self, minutes: float | None):
        self.minutes = minutes or 0
        self.start = time.monotonic()

    def elapsed_min(self) -> float:
        return (time.monotonic() - self.start) / 60

    def spent(self) -> bool:
        return bool(self.minutes) and self.elapsed_min() >= self.minutes

    def left_s(self) -> float:
        """Seconds until no new unit may start (infinite without a limit)."""
        return max(0.0, self.minutes * 60 - (time.monotonic() - self.start)) if self.minutes else float("inf")


def commit() -> str:
    """The checkout's commit ("+dirty" when tracked files differ from it): what measured."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=runtime.REPO_ROOT, capture_output=True, text=True,
                              timeout=30).stdout.strip()
    try:
        head = git("rev-parse", "--short=12", "HEAD")
        # the measurement's own outputs (results/: pages and records) do not make the code dirty
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results")
        return head + ("+dirty" if dirty else "") if head else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def machine(load_at_start: float | None = None) -> dict[str, Any]:
    """What measured, and how busy it was: a unit's CPU timings are only as good as the
    machine was idle (the 1-minute load average when the unit started and when it ended)."""
    import torch

    from projects.core import device

    # the model name alone hides what sets the speed: two "AMD EPYC" machines here train 3x apart
    # (AVX-512 BF16 vs AVX2 only: the automatic precision is bf16 on one, fp32 on the other)
    out = {"cpu": runtime.cpu_model(), "cpu_kind": device.cpu_kind(), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
           "torch": torch.__version__, "python": platform.python_version(), "host_kind": platform.machine(),
           "load_1min_end": load_1min()}
    return out | ({"load_1min_start": load_at_start} if load_at_start is not None else {})


def load_1min() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:  # not on every platform
        return None


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
