"""`search` entry point: let Optuna find the accuracy-efficiency frontier of a study.

    python -m projects.search --study pathology --n-trials 20 --epochs 5 \
        --objectives accuracy,model_size_mb --pruner median --name my-search

Re-running with the same --name resumes the search (n-trials is the number of COMPLETE +
PRUNED trials the study should end with). See docs/search.md.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from projects.core import cli
from projects.core import space as spaces
from projects.core.errors import InputError
from projects.core.study import get_study, study_names
from projects.search import driver, workers
from projects.search.settings import SearchSettings

_float = cli.number


def _optional_int(text: str) -> int | None:
    return None if str(text).strip() in ("", "none", "None") else cli.integer(text)


def build_parser() -> argparse.ArgumentParser:
    d = SearchSettings()
    p = argparse.ArgumentParser(prog="search", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--study", default="", help=f"the study to search: {' | '.join(study_names())}")
    p.add_argument("--n-trials", type=cli.positive_int, default=d.n_trials,
                   help="target: the study ends with this many COMPLETE + PRUNED trials (resume-safe)")
    p.add_argument("--epochs", type=cli.positive_int, default=d.epochs, help="epochs per trial")
    p.add_argument("--objectives", default="accuracy",
                   help="accuracy (val_jaccard / val_f1_macro, maximised), optionally followed by "
                        "model_size_mb, cpu_latency_ms_p50, params_count or cpu_total_s (minimised): "
                        "two or more make a multi-objective (Pareto) search")
    p.add_argument("--pruner", default="median",
                   help="median | percentile:P | sha | hyperband | threshold:lower=X | none; options "
                        "after a colon: startup=N,warmup=N,min=N,factor=N (e.g. median:startup=1)")
    p.add_argument("--sampler", default=d.sampler, help="auto (brute force when the space is discrete and at most 3x "
                                                       "the trials, else TPE) | brute | tpe | nsga2 | nsga3 | random | gp")
    p.add_argument("--warm-start", type=cli.str2bool, default=False,
                   help="add the store's finished runs that this search could have trained as trials (not retrained)")
    p.add_argument("--enqueue", default="", help="configs tried first: 'paper' (the study's published cells) or "
                                               "'arch=unet,depth=4;arch=elunet,depth=5'")
    p.add_argument("--name", default="", help="search name = Optuna study name; the same name resumes "
                                             "(default: <study>-<timestamp>)")
    p.add_argument("--storage", default="", help="Optuna storage: empty = SQLite beside the tracking store; "
                                                "postgresql://user@host/db for several machines; journal:<file>")
    p.add_argument("--n-workers", type=cli.positive_int, default=1, help="worker processes on this machine")
    p.add_argument("--timeout", type=_float, default=0.0, help="seconds after which no new trial starts (0: none)")
    p.add_argument("--epoch-budget", type=cli.integer, default=0, help="total epochs over all trials (0: none)")
    p.add_argument("--space", default="", help="override the search space, e.g. "
                                             "'depth=3:5,filters=4:16,arch=unet|elunet' (see --show-space)")
    p.add_argument("--base", default="", help="base config settings for every trial, e.g. "
                                            "'tile_size=128,embedded_images=8'; a searched setting given "
                                            "here is fixed unless --space names it too")
    p.add_argument("--data", default="embedded", help="'embedded' or the study's data folder")
    p.add_argument("--max-size-mb", type=_float, default=0.0, help="constraint: model_size_mb <= this (0: none)")
    p.add_argument("--max-latency-ms", type=_float, default=0.0, help="constraint: cpu_latency_ms_p50 <= this (0: none)")
    p.add_argument("--max-params", type=cli.integer, default=0,
                   help="parameter budget checked before training: bigger models are rejected (0: none)")
    p.add_argument("--seed", type=_optional_int, default=None, help="sampler seed (default: random)")
    p.add_argument("--heartbeat", type=cli.positive_int, default=d.heartbeat_s,
                   help="RDB heartbeat seconds; a trial silent for twice this is failed and retried")
    p.add_argument("--plots", type=cli.str2bool, default=True)
    p.add_argument("--log-model", type=cli.str2bool, default=None,
                   help="log each trial's full MLflow model (default: the study's default)")
    p.add_argument("--show-space", action="store_true", help="print the resolved search space and exit")
    # worker processes started by --n-workers
    p.add_argument("--worker-settings", default="", help=argparse.SUPPRESS)
    p.add_argument("--worker-index", type=cli.integer, default=0, help=argparse.SUPPRESS)
    p.add_argument("--parent-run-id", default="", help=argparse.SUPPRESS)
    return p


def settings_from_args(args: argparse.Namespace) -> SearchSettings:
    if not args.study:
        raise InputError("--study", f"name the study to search: {', '.join(study_names())}")
    study = get_study(args.study)
    overrides = spaces.parse_assignments(args.base, study.config_cls)
    overrides.setdefault("data", args.data)
    if args.log_model is not None:
        overrides["log_model"] = args.log_model
    base = study.config_cls.of(**overrides)
    default = spaces.parse_space(study.name, study.default_space, study.config_cls)
    space, pinned = spaces.pin_base(args.space, overrides, default)
    if pinned:
        print(f"[search] --base fixes {', '.join(pinned)}: not searched (name a setting in --space as well to search it)")
    return SearchSettings(
        study=args.study, base=base, name=args.name.strip(), n_trials=args.n_trials, epochs=args.epochs,
        objectives=tuple(cli.str_list(args.objectives)), pruner=args.pruner, sampler=args.sampler,
        space=space, storage=args.storage.strip(), n_workers=args.n_workers, timeout=args.timeout,
        epoch_budget=args.epoch_budget, max_size_mb=args.max_size_mb, max_latency_ms=args.max_latency_ms,
        max_params=args.max_params, seed=args.seed, heartbeat_s=args.heartbeat, plots=args.plots,
        warm_start=args.warm_start, enqueue=args.enqueue)


@cli.entry_point
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.worker_settings:
        settings = SearchSettings.from_json(Path(args.worker_settings).read_text())
        workers.run_worker(settings, args.worker_index, args.parent_run_id)
        return 0
    settings = settings_from_args(args)
    if args.show_space:
        ctx = driver.build_context(settings)
        print(ctx.space.describe())
        print(f"\n--space {ctx.space.text()}")
        return 0
    # `mlflow run` made a run for us: it becomes the parent (or points at the resumed one).
    # Popped so that trial runs started in this process are not mistaken for it.
    launcher = os.environ.pop("MLFLOW_RUN_ID", None)
    try:
        summary = driver.run_search(settings, launcher_run_id=launcher)
    except driver.SearchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(summary.line())
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except InputError as exc:  # raised before entry_point could catch it (argument types)
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
