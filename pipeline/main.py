"""The `main` job: the whole platform once, on the embedded default data.

data -> each study's grid -> searches -> promotion -> dashboard -> summary. What runs for a
study under a profile is the study's own data (its `profiles`, name -> projects.core.specs.pipeline.StudyProfile;
a study without them is left out):
`quick` finishes in minutes on 2 cores (small models, small images, few epochs);
`smoke` wires every stage in about a minute (tests); `paper` runs the papers' full settings
(hours on a CPU).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from dataclasses import dataclass, field

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from dashboards import build as dashboard_build
from projects.core import cli, tracking
from projects.core.grid import plan_grid, run_grid
from projects.core.study import Study, all_studies, get_study
from projects.search import driver as search_driver
from registry import promote
from registry import store as registry_store
from registry.policy import load_policies

PROFILES = ("quick", "smoke", "paper")
PROFILE_HELP = "quick: <10 min on 2 cores; paper: the papers' settings (hours); smoke: ~1 min, wiring only"


@dataclass
class Summary:
    profile: str
    tracking_uri: str
    seconds: dict[str, float] = field(default_factory=dict)  # stage -> wall seconds
    grid_runs: dict[str, str] = field(default_factory=dict)  # study -> grid parent run id
    tables: dict[str, object] = field(default_factory=dict)  # study -> its comparison table
    searches: list[str] = field(default_factory=list)
    promotion: str = ""
    champions: list[str] = field(default_factory=list)
    dashboard: str = ""
    links: list[tuple[str, str]] = field(default_factory=list)  # (what, MLflow UI address)


def _stage(i: int, n: int, title: str) -> float:
    print(f"\n=== {i}/{n} {title} ===", file=sys.stderr, flush=True)
    return time.perf_counter()


def _parser(studies: list[Study]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="main", description=__doc__)
    parser.add_argument("--profile", default="quick", choices=PROFILES, help=PROFILE_HELP)
    parser.add_argument("--dashboard-out", default="", help="folder for the dashboard pages (default dashboards/out)")
    for study in studies:
        parser.add_argument(f"--data-{study.name}", dest=f"data_{study.name}", default="embedded",
                            help=f"{study.name} data: 'embedded' or a folder")
    return parser


def _grid(study: Study, profile: str, data: str, summary: Summary) -> None:
    grid = study.profiles[profile].grid
    grid = dataclasses.replace(grid, base=grid.base.replace(data=data))
    plan = plan_grid(study, grid)
    with tracking.study_run(study.experiment, f"main-{profile}-grid", tags=tracking.process_tags(),
                            adopt=False) as run:
        summary.tables[study.name] = run_grid(study, grid, plan)
        summary.grid_runs[study.name] = run.info.run_id


@cli.entry_point
def main(argv: list[str] | None = None) -> int:
    studies = [s for s in all_studies() if getattr(s, "profiles", None)]  # a study the main job runs has profiles
    args = _parser(studies).parse_args(argv)
    studies = [s for s in studies if args.profile in s.profiles]
    summary = Summary(args.profile, tracking.setup_tracking())
    launcher_run = os.environ.pop("MLFLOW_RUN_ID", None)  # the grids are runs of their own
    started, n = time.perf_counter(), len(studies) + 3
    for i, study in enumerate(studies, 1):
        t = _stage(i, n, f"{study.name} grid")
        _grid(study, args.profile, getattr(args, f"data_{study.name}"), summary)
        summary.seconds[study.name] = time.perf_counter() - t
    t = _stage(n - 2, n, "architecture search")
    for study in studies:
        plan = study.profiles[args.profile].search
        if plan is not None:
            base = study.profiles[args.profile].grid.base.replace(data=getattr(args, f"data_{study.name}"))
            summary.searches.append(search_driver.main_job_search(study.name, base, plan))
    summary.seconds["search"] = time.perf_counter() - t
    t = _stage(n - 1, n, "registry promotion")
    summary.promotion = promote.promote_all(dry_run=False)
    summary.champions = champions()
    summary.seconds["promotion"] = time.perf_counter() - t
    t = _stage(n, n, "dashboard")
    summary.dashboard = str(dashboard_build.build_and_log(args.dashboard_out or None))
    summary.seconds["dashboard"] = time.perf_counter() - t
    summary.seconds["total"] = time.perf_counter() - started
    summary.links = ui_links(summary)
    _log_main_run(summary, launcher_run, print_summary(summary))
    return 0


def ui_links(summary: Summary) -> list[tuple[str, str]]:
    """Where to look in the MLflow UI (`make ui`): each grid parent (its summary metrics and
    paper-vs-ours table), each study's runs table, each registered model; all in the
    model-training view."""
    client, links = MlflowClient(), []
    for name, run_id in summary.grid_runs.items():
        exp = client.get_run(run_id).info.experiment_id
        links += [(f"{name} grid", tracking.ui_run_url(exp, run_id)), (f"{name} runs", tracking.ui_experiment_url(exp))]
    for name in sorted(load_policies()):
        if registry_store.registered_model(client, name) is not None:
            links.append((f"model {name}", tracking.ui_model_url(name)))
    return links


def _log_main_run(summary: Summary, launcher_run: str | None, text: str) -> None:
    if launcher_run:
        os.environ["MLFLOW_RUN_ID"] = launcher_run
    with tracking.study_run(tracking.EXPERIMENTS["main"], f"main-{summary.profile}", tags=tracking.process_tags()):
        tags = {"profile": summary.profile, "tracking_uri": summary.tracking_uri, "promotion": summary.promotion,
                "dashboard": summary.dashboard, "search": "; ".join(summary.searches)}
        tags |= {f"{name}_grid_run": run_id for name, run_id in summary.grid_runs.items()}
        mlflow.set_tags({k: v[:5000] for k, v in tags.items()} | {tracking.TAG_RUN_KIND: "main"})
        mlflow.log_metrics({f"{k}_s": v for k, v in summary.seconds.items()})
        links = "\n".join(f"- [{what}]({url})" for what, url in summary.links)
        mlflow.set_tag("mlflow.note.content", f"{links}\n\n```\n{text}\n```"[:5000])
        if summary.champions:
            mlflow.log_text("\n".join(summary.champions) + "\n", "champions.txt")
        for name, table in summary.tables.items():
            mlflow.log_text(table.to_string(index=False), f"{name}_table.txt")


def champions() -> list[str]:
    """One line per registered model that has a @champion: its run's settings, metrics and cost."""
    client, lines = MlflowClient(), []
    for name, policy in sorted(load_policies().items()):
        try:
            version = client.get_model_version_by_alias(name, "champion")
        except MlflowException:
            continue
        run = client.get_run(version.run_id)
        m, tags = run.data.metrics, run.data.tags
        shown = [f"{label} {m[key]:.3f}" + (f" [{m[tracking.ci_low(key)]:.2f}, {m[tracking.ci_high(key)]:.2f}]"
                                             if tracking.ci_low(key) in m else "")
                 for key, label in get_study(policy.study).summary_metrics if key in m]
        cpu = f"CPU {m.get(tracking.M_CPU_TOTAL, float('nan')):.2f} s"
        if tracking.M_CPU_TOTAL + "_onnx" in m:
            cpu += f" / {m[tracking.M_CPU_TOTAL + '_onnx']:.2f} s"
        lines.append(f"{name}@champion = v{version.version} ({run.info.run_name}, {tags.get(tracking.TAG_ARCH, '?')}): "
                     + ", ".join(shown) + f"; {m.get(tracking.M_PARAMS, 0):,.0f} params, "
                     f"{m.get(tracking.M_SIZE_MB, float('nan')):.2f} MB, {cpu}")
    return lines


def print_summary(summary: Summary) -> str:
    lines = ["", "=" * 72, f"main ({summary.profile}) finished in {summary.seconds['total']:.0f} s"]
    for name, table in summary.tables.items():
        shown = get_study(name).summary_lines(table)
        if shown:
            lines += ["", *shown]
    lines += [f"\nsearch: {line}" for line in summary.searches]
    if summary.champions:
        lines += ["", "best model per registered model (its @champion; size = weights file, CPU = load + "
                      "predict on the test images, eager / ONNX Runtime):"]
        lines += [f"  {line}" for line in summary.champions]
    lines += ["", f"registry: {summary.promotion}", "", f"dashboard: {summary.dashboard}", "",
              f"Browse the runs:  mlflow ui --backend-store-uri {summary.tracking_uri} --host 127.0.0.1 --port 5000"]
    lines += [f"  {what}: {url}" for what, url in summary.links]
    lines.append("=" * 72)
    text = "\n".join(lines)
    print(text, file=sys.stdout, flush=True)
    return text


if __name__ == "__main__":
    sys.exit(main())
