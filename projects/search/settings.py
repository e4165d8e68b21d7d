"""A search's settings and objectives (what a launcher and its workers agree on)."""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from projects.core import tracking
from projects.core.errors import InputError
from projects.core.study import Study, get_study
from projects.search.names import EFFICIENCY_OBJECTIVES

@dataclass
class SearchSettings:
    study: str = ""  # a registered study's name (projects.core.study)
    base: Any = None  # the study's config (its defaults when None)
    name: str = ""  # Optuna study name = search name; empty: <study>-<timestamp>
    n_trials: int = 20  # target: COMPLETE + PRUNED trials in the study
    epochs: int = 5  # per trial
    objectives: Sequence[str] = ("accuracy",)
    pruner: Any = "median"  # spec string (see build_pruner) or an optuna pruner object
    sampler: str = "auto"  # auto (brute force for a small discrete space, else TPE) | brute | tpe | nsga2 | nsga3 | random | gp
    warm_start: bool = False  # add the store's finished runs that match the search as complete trials
    enqueue: str = ""  # configs tried first: "paper" (the study's published cells) or "a=1,b=2;a=3,b=4"
    space: str = ""  # --space overrides of the study's default space
    storage: str = ""  # "" (SQLite beside the tracking store) | RDB URL | journal:<file>
    n_workers: int = 1  # worker processes on this machine
    timeout: float = 0.0  # seconds; no new trial starts after it (0: none)
    epoch_budget: int = 0  # total epochs over all trials of the study (0: none)
    max_size_mb: float = 0.0  # constraint (Optuna): feasible trials only count as best
    max_latency_ms: float = 0.0  # constraint on cpu_latency_ms_p50
    max_params: int = 0  # budget checked BEFORE training: bigger models are rejected
    seed: int | None = None  # sampler seed (offset per worker and per resume)
    heartbeat_s: int = 60  # RDB heartbeat; a silent trial is failed after 2x this
    max_retry: int = 2  # retries of a trial whose process died
    plots: bool = True
    experiment: str = tracking.EXPERIMENTS["search"]
    settle_s: float = 1.0  # wait before electing the parent run (several launchers at once)
    # set by the launcher for its worker processes
    deadline: float | None = None
    torch_threads: int = 0

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data["base"] = self.base.flat() if self.base is not None else None
        if not isinstance(self.pruner, str):
            raise InputError("--pruner", "worker processes need a pruner given as text")
        data["objectives"] = list(self.objectives)
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> SearchSettings:
        data = json.loads(text)
        base = data.pop("base")
        settings = cls(**data)
        settings.base = get_study(data["study"]).config_cls.from_flat(base) if base is not None else None
        return settings


@dataclass(frozen=True)
class Objective:
    metric: str  # a val_* metric of the epoch loop or an efficiency metric of the run
    direction: str  # maximize | minimize
    per_epoch: bool  # val_* (known during training: prunable) vs efficiency (after training)


def resolve_objectives(names: Sequence[str], study: Study) -> list[Objective]:
    """`accuracy` is the study's selection metric (a val_* metric); efficiency objectives are
    minimised; a test_* metric is refused (selecting on the test set leaks it)."""
    selection = study.headline.selection
    out: list[Objective] = []
    for raw in names:
        name = raw.strip()
        if not name:
            continue
        if name in ("accuracy", "acc"):
            name = selection
        if name.startswith("test_"):
            raise InputError("--objectives", f"{name}: selecting on the test set leaks it; use a val_* metric")
        if name.startswith("val_"):
            out.append(Objective(name, "minimize" if "loss" in name else "maximize", True))
        elif name in EFFICIENCY_OBJECTIVES:
            out.append(Objective(name, "minimize", False))
        else:
            raise InputError("--objectives", f"unknown objective {raw!r}; use accuracy (= {selection}), "
                                             f"a val_* metric, or one of {', '.join(EFFICIENCY_OBJECTIVES)}")
    if not out:
        raise InputError("--objectives", "no objective given")
    if not out[0].per_epoch:
        raise InputError("--objectives", "the first objective must be the accuracy (a val_* metric); "
                                         "e.g. accuracy,model_size_mb")
    if len({o.metric for o in out}) != len(out):
        raise InputError("--objectives", f"repeated objective in {','.join(names)}")
    return out


