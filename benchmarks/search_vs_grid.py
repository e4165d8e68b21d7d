"""Search vs grid: the compute a pruned Optuna search needs to get within 0.01 of the grid's
best model, as a fraction of the grid's compute, for every study that declares a
search benchmark (its optional `search_benchmark`, a projects.core.specs.benchmarks.SearchBenchmark:
a discrete space and the settings it shares).

- the grid: every cell of the space trained through the study's own `run(config)`, each for
  the full epochs (one child run per cell);
- the search: the platform's driver (`projects.search.driver.run_search`: TPE sampler, the
  same `run(config)` per trial, same epochs), once per sampler seed and pruner: the median
  pruner from the first epoch, and with a one-epoch warm-up (`median:warmup=1`). Why both: on
  the embedded tiles the eventual best cell scored the LOWEST value of all cells after
  epoch 1, so pruning at epoch 1 tends to kill it (measured: 2 of 3 seeds did).

Both sides score a model by the search objective (the study's selection metric at the epoch
whose weights the run keeps), so the grid's best and a trial's value are the same quantity.
Compute is counted the same way on both sides: epochs trained and process CPU seconds around
each run(config). The search "gets there" at the first complete trial at or above the grid's
best minus 0.01; its compute is everything spent up to and including that trial (pruned
trials included). Target: at most 40% of the grid's compute.
"""
from __future__ import annotations

import itertools
import math
import tempfile
import time
from dataclasses import dataclass

import mlflow
import optuna
from mlflow.tracking import MlflowClient

from projects.core import space as spaces
from projects.core import tracking
from projects.core.bench import Section, Table, load_average, median, metric_key
from projects.core.study import Study, all_studies
from projects.search import driver, factories
from projects.search.names import ATTR_COMPUTE

TOLERANCE = 0.01
TARGET_FRACTION = 0.40
PRUNERS = {"quick": ("median:warmup=1",), "full": ("median", "median:warmup=1")}


@dataclass(frozen=True)
class Plan:
    study: Study
    mode: str
    space: str
    epochs: int
    n_trials: int
    seeds: tuple[int, ...]
    pruners: tuple[str, ...]

    @property
    def objective(self) -> str:
        return self.study.headline.selection

    def base(self):
        return self.study.config_cls(**dict(self.study.search_benchmark.base), epochs=self.epochs)

    def cells(self) -> list[dict]:
        parsed = spaces.parse_space(self.study.name, self.space, self.study.config_cls)
        axes = [(p.name, p.values()) for p in parsed.params]
        return [dict(zip([n for n, _ in axes], combo)) for combo in itertools.product(*[v for _, v in axes])]


def plan_for(study: Study, quick: bool) -> Plan:
    b, mode = study.search_benchmark, "quick" if quick else "full"
    return Plan(study, mode, b.space[mode], b.epochs[mode], b.n_trials[mode], tuple(b.seeds[mode]), PRUNERS[mode])


def objective_value(metric: str, history: list[dict[str, float]], run_id: str) -> float:
    """The objective at the run's best epoch (the driver's rule)."""
    best = int(MlflowClient().get_run(run_id).data.metrics.get("best_epoch", 0) or 0)
    if 1 <= best <= len(history) and math.isfinite(history[best - 1].get(metric, math.nan)):
        return float(history[best - 1][metric])
    finite = [h[metric] for h in history if math.isfinite(h.get(metric, math.nan))]
    return float(finite[-1]) if finite else math.nan


def run_grid(plan: Plan, experiment_id: str, log) -> list[dict]:
    base, out = plan.base(), []
    prepared = plan.study.prepare(base)
    for values in plan.cells():
        config = base.replace(**values)
        history: list[dict[str, float]] = []
        cpu0, wall0 = time.process_time(), time.perf_counter()
        label = ",".join(f"{k}={v}" for k, v in values.items())
        with mlflow.start_run(experiment_id=experiment_id, nested=True, run_name=f"grid-{label}",
                              tags={"benchmark": "search_vs_grid", "side": "grid"}) as run:
            result = plan.study.run(config, prepared, run_kind="benchmark_grid",
                                    on_epoch=lambda epoch, metrics: history.append(dict(metrics)))
        cell = {"cell": label, "epochs": len(history), "cpu_s": time.process_time() - cpu0,
                "wall_s": time.perf_counter() - wall0, "value": objective_value(plan.objective, history, run.info.run_id),
                "test": result.metrics.get(plan.study.headline.test_metric), "run_id": run.info.run_id}
        log(f"[benchmarks] grid {label}: {plan.objective} {cell['value']:.4f}, {cell['cpu_s']:.0f} CPU s")
        out.append(cell)
    return out


def run_one_search(plan: Plan, seed: int, pruner: str, storage: str) -> list[dict]:
    tag = pruner.replace(":", "-").replace("=", "").replace(",", "-")
    name = f"bench-search-{time.strftime('%Y%m%d-%H%M%S')}-{tag}-s{seed}"
    settings = driver.SearchSettings(study=plan.study.name, base=plan.base(), name=name, n_trials=plan.n_trials,
                                     epochs=plan.epochs, objectives=("accuracy",), pruner=pruner, sampler="tpe",
                                     space=plan.space, storage=storage, n_workers=1, seed=seed, plots=False,
                                     experiment=tracking.EXPERIMENTS["benchmark"], settle_s=0.0)
    driver.run_search(settings)
    study = optuna.load_study(study_name=name, storage=factories.resolve_storage_url(storage))
    trials = []
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        compute = t.user_attrs.get(ATTR_COMPUTE) or {}
        trials.append({"number": t.number, "state": t.state.name, "value": t.value if t.state.name == "COMPLETE" else None,
                       "epochs": int(compute.get("epochs", 0)), "cpu_s": float(compute.get("cpu_s", 0.0)),
                       "wall_s": float(compute.get("wall_s", 0.0)), "params": dict(t.params)})
    return trials


def reach(trials: list[dict], target: float) -> dict:
    """Compute spent until the first complete trial at or above `target` (None if never)."""
    epochs = cpu = wall = 0.0
    for t in trials:
        epochs += t["epochs"]
        cpu += t["cpu_s"]
        wall += t["wall_s"]
        if t["value"] is not None and t["value"] >= target:
            return {"hit_trial": t["number"], "epochs": epochs, "cpu_s": cpu, "wall_s": wall}
    return {"hit_trial": None, "epochs": epochs, "cpu_s": cpu, "wall_s": wall}


def _grid_table(plan: Plan, grid: list[dict]) -> Table:
    best = max(grid, key=lambda c: c["value"])
    table = Table(f"{plan.study.name} grid: {len(grid)} cells of {plan.space}, {plan.epochs} epochs each; "
                  f"{plan.study.search_benchmark.about}",
                  ["cell", f"{plan.objective} (objective)", plan.study.headline.test_metric, "epochs", "CPU s"])
    for c in sorted(grid, key=lambda c: -c["value"]):
        table.add(c["cell"], c["value"], c["test"], c["epochs"], c["cpu_s"])
    table.notes.append(f"grid total: {sum(c['epochs'] for c in grid)} epochs, {sum(c['cpu_s'] for c in grid):.0f} "
                       f"CPU s; best {best['cell']} {plan.objective} {best['value']:.4f}; target = best - {TOLERANCE}")
    return table


def _search_rows(sec: Section, table: Table, plan: Plan, searches: list[dict], grid: list[dict]) -> None:
    grid_epochs, grid_cpu = sum(c["epochs"] for c in grid), sum(c["cpu_s"] for c in grid)
    for pruner in plan.pruners:
        fractions_epochs, fractions_cpu, misses = [], [], 0
        for s in (x for x in searches if x["pruner"] == pruner):
            trials, r = s["trials"], s["reach"]
            states = [t["state"] for t in trials]
            values = [t["value"] for t in trials if t["value"] is not None]
            distinct = len({tuple(sorted(t["params"].items())) for t in trials if t["state"] in ("COMPLETE", "PRUNED")})
            hit = r["hit_trial"] is not None
            fe = r["epochs"] / grid_epochs if hit else float("nan")
            fc = r["cpu_s"] / grid_cpu if hit else float("nan")
            if hit:
                fractions_epochs.append(fe)
                fractions_cpu.append(fc)
            else:
                misses += 1
            table.add(pruner, s["seed"], f"{states.count('COMPLETE')}/{states.count('PRUNED')}",
                      r["hit_trial"] if hit else "never", r["epochs"] if hit else None, r["cpu_s"] if hit else None,
                      100 * fe, 100 * fc, sum(t["epochs"] for t in trials), distinct, max(values) if values else None)
            key = metric_key(plan.study.name, "search", pruner.replace(":", "_").replace("=", ""), f"seed{s['seed']}")
            sec.metrics[key + ".epochs_fraction"] = fe
            sec.metrics[key + ".cpu_fraction"] = fc
        n = len(fractions_cpu) + misses
        if fractions_cpu:
            fe, fc = median(fractions_epochs), median(fractions_cpu)
            ok = fc <= TARGET_FRACTION and fe <= TARGET_FRACTION and not misses
            sec.headline.append(f"{plan.study.name} {pruner}: within {TOLERANCE} of the grid's best in {n - misses} of "
                                f"{n} seeds, with a median {100 * fe:.0f}% of the grid's epochs and {100 * fc:.0f}% of "
                                f"its CPU s when it got there; target <= {100 * TARGET_FRACTION:.0f}% (every seed): "
                                f"{'met' if ok else 'MISSED'}")
        else:
            sec.headline.append(f"{plan.study.name} {pruner}: never within {TOLERANCE} of the grid's best "
                                f"({n} seeds): target MISSED")


def run_study(sec: Section, plan: Plan, experiment_id: str, log) -> None:
    load_start = load_average()
    log(f"[benchmarks] search vs grid ({plan.study.name}): grid of {len(plan.cells())} cells x {plan.epochs} epochs ...")
    grid = run_grid(plan, experiment_id, log)
    target = max(c["value"] for c in grid) - TOLERANCE
    searches = []
    with tempfile.TemporaryDirectory() as tmp:
        for pruner in plan.pruners:
            for seed in plan.seeds:
                log(f"[benchmarks] search ({pruner}) seed {seed}: {plan.n_trials} trials ...")
                trials = run_one_search(plan, seed, pruner, f"sqlite:///{tmp}/optuna.db")
                searches.append({"pruner": pruner, "seed": seed, "trials": trials, "reach": reach(trials, target)})
    sec.tables.append(_grid_table(plan, grid))
    table = Table(f"Pruned Optuna search (TPE, {plan.n_trials} trials of {plan.epochs} epochs) until within "
                  f"{TOLERANCE} of the grid's best", ["pruner", "seed", "trials (complete/pruned)", "hit at trial",
                                                      "epochs to hit", "CPU s to hit", "epochs % of grid",
                                                      "CPU % of grid", "search total epochs", "distinct configs",
                                                      "best value"])
    _search_rows(sec, table, plan, searches, grid)
    table.notes.append(f"load average {load_start} -> {load_average()}; a seed that never got within {TOLERANCE} is a "
                       "miss; distinct configs: trained configs (the driver skips a re-proposed config without "
                       "training it: duplicates cost nothing and do not count as trials)")
    sec.tables.append(table)
    if plan.mode == "quick":
        sec.headline.append(f"quick mode: a {len(grid)}-cell grid and {plan.n_trials} trials only, too small for the "
                            "fraction to mean much; see RESULTS.md for the full run")
    prefix = f"search_vs_grid.{plan.study.name}"
    sec.params.update({f"{prefix}.space": plan.space, f"{prefix}.epochs": str(plan.epochs),
                       f"{prefix}.n_trials": str(plan.n_trials), f"{prefix}.seeds": ",".join(map(str, plan.seeds)),
                       f"{prefix}.pruners": ",".join(plan.pruners)})


def run(quick: bool, experiment_id: str | None = None, log=print) -> Section:
    sec = Section("search_vs_grid")
    experiment_id = experiment_id or tracking.ensure_experiment(tracking.EXPERIMENTS["benchmark"])
    for study in all_studies():
        if getattr(study, "search_benchmark", None) is not None:
            run_study(sec, plan_for(study, quick), experiment_id, log)
    if not sec.tables:
        sec.headline.append("no study declares a search benchmark (a study's search_benchmark)")
    return sec
