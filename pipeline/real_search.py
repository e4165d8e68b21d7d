"""The platform's own search on a real data set, resumable, and its winner measured as records.

A real-data search is the `search` entry point (projects/search) with its Optuna study kept in
a journal file beside the records (`results/records/searches/<name>.journal`, committed like
them): a search of hours runs in pieces, on any machine, and a killed trial is retried when
the search is started again. It selects on a validation metric; the run's test split and the
study's holdout are untouched. Once the journal holds the search's trials, its best
configuration is trained with 3 seeds as a block of the real-data runner
(pipeline/real_data.py: one record per seed, scored on the holdout), and the page's section
shows the search, the winner and the seeds with their intervals.

    python -m pipeline.real_search --data-root data --budget-min 120     # search, then the winner's seeds
    python -m pipeline.real_search --render                              # the page's sections from the records

A study declares its searches with `real_searches(data_root)` (projects/<study>/real_data.py).
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Protocol, runtime_checkable
from pathlib import Path

from projects.core import cli, records, runtime, tracking
from projects.core.errors import InputError
from projects.core.records import Budget, RecordStore
from projects.core.specs.pipeline import RealSearch
from projects.core.study import Study, all_studies

SEARCHES = "searches"  # records/<SEARCHES>/<name>.journal


@runtime_checkable
class SearchingStudy(Protocol):
    """A study with searches on this page: the platform's search on its public data sets."""

    def real_searches(self, root: Path, quick: bool = False) -> Sequence[RealSearch]: ...


def searches(data_root: Path, quick: bool = False) -> dict[str, tuple[Study, RealSearch]]:
    return {s.name: (study, s) for study in all_studies() if isinstance(study, SearchingStudy)
            for s in study.real_searches(data_root, quick)}


def journal(root: Path, search: RealSearch) -> Path:
    return root / SEARCHES / f"{search.name}.journal"


def load(root: Path, search: RealSearch):
    """The search's Optuna study from its journal, or None before its first trial."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    path = journal(root, search)
    if not path.is_file():
        return None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=search.name, storage=JournalStorage(JournalFileBackend(str(path))))


def finished_trials(study) -> list:
    from optuna.trial import TrialState

    return [t for t in study.get_trials(deepcopy=False) if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]


def winner(root: Path, search: RealSearch) -> dict | None:
    """The best complete trial's searched settings, once the search has all its trials."""
    study = load(root, search)
    if study is None or len(finished_trials(study)) < search.n_trials:
        return None
    return dict(study.best_trial.params)


def run_search(study: Study, search: RealSearch, root: Path, budget: Budget) -> None:
    from projects.search.__main__ import main as search_main

    path = journal(root, search)
    path.parent.mkdir(parents=True, exist_ok=True)
    argv = ["--study", study.name, "--data", str(search.source), "--base", search.base, "--space", search.space,
            "--epochs", str(search.epochs), "--n-trials", str(search.n_trials), "--objectives", search.objective,
            "--name", search.name, "--storage", f"journal:{path}", "--seed", "0", "--plots", "false",
            "--pruner", search.pruner]
    if budget.minutes:
        argv += ["--timeout", str(max(1, int(budget.left_s())))]
    code = search_main(argv)
    if code:
        raise InputError(search.name, f"the search ended with exit status {code}")


def section(root: Path, search: RealSearch, study: Study) -> str:
    """The page's section: the search from its journal, the winner's seeds from their records."""
    from pipeline import real_data

    lines = [f"## {search.name}", "",
             f"The platform's search (`search` entry point) over `{search.space}`, every trial `{search.base}` with "
             f"{search.epochs} epochs, pruner `{search.pruner}`, selecting on `{search.objective}` "
             f"(validation; test split and holdout "
             f"untouched); its Optuna study is `{real_data._shown(journal(root, search))}`.", ""]
    opt = load(root, search)
    done = finished_trials(opt) if opt is not None else []
    if not done:
        return "\n".join(lines + [f"Not measured yet: `python -m pipeline.real_search --data-root data --searches "
                                  f"{search.name}` runs it.", ""])
    from optuna.trial import TrialState

    complete = sorted((t for t in done if t.value is not None), key=lambda t: -t.value)
    pruned = sum(t.state == TrialState.PRUNED for t in done)  # the search may give a pruned trial a value
    lines += [f"{len(done)} of {search.n_trials} trials ({len(done) - pruned} complete, {pruned} "
              f"pruned). The best five:", "", f"| trial | {search.objective} | settings |", "|---|---|---|"]
    lines += [f"| {t.number} | {t.value:.3f} | {', '.join(f'{k}={v:g}' if isinstance(v, float) else f'{k}={v}' for k, v in t.params.items())} |"
              for t in complete[:5]]
    params = winner(root, search)
    if params is None:
        return "\n".join(lines + ["", "The winner's seeds are measured when the search has all its trials.", ""])
    block = search.winner_block(params)
    lines += ["", "The winner with 3 seeds (each a record: test split and the study's holdout):", ""]
    body = real_data.block_section(study, block, RecordStore(root / block.name),  # its seeds resume with the search
                                   sum(len(study.grid_configs(g)) for g in block.grids),
                                   rest=f"python -m pipeline.real_search --data-root data --searches {search.name}")
    return "\n".join(lines + body.split("\n", 2)[2:])


@cli.entry_point
def main(argv: list[str] | None = None) -> int:
    from pipeline import real_data, registry_records

    parser = argparse.ArgumentParser(prog="python -m pipeline.real_search", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", type=Path, default=Path("data"), help="folder of the public data sets")
    parser.add_argument("--searches", type=cli.str_list, default=[], help="a subset of the searches (default: all)")
    parser.add_argument("--budget-min", type=float, default=0, help="start no new trial or unit after this many minutes")
    parser.add_argument("--render", action="store_true", help="only re-render the page's sections from the records")
    parser.add_argument("--quick", type=cli.str2bool, default=False,
                        help="2 trials of 1 epoch, one seed of the winner: wiring only (records under the cache)")
    parser.add_argument("--records", type=Path, default=None, help="folder of the records (default: results/records)")
    parser.add_argument("--out", type=Path, default=real_data.OUT)
    parser.add_argument("--promote", type=cli.str2bool, default=True,
                        help="run promote after every seed of a winner measured")
    args = parser.parse_args(argv)
    args.records = args.records or (runtime.cache_dir() / "records-quick" if args.quick else records.RECORDS)
    known = searches(args.data_root.resolve(), args.quick)
    unknown = [s for s in args.searches if s not in known]
    if unknown:
        raise InputError("--searches", f"unknown search(es) {', '.join(unknown)}; here: {', '.join(known) or '(none)'}")
    chosen = {k: v for k, v in known.items() if not args.searches or k in args.searches}
    if not args.render:
        tracking.setup_tracking()
        budget = Budget(args.budget_min)
        promote = (lambda: registry_records.promote(args.records)) if args.promote else None  # the seeds are candidates
        for name, (study, search) in chosen.items():
            if not search.source.is_dir():
                raise InputError("--data-root", f"search {name} needs {search.source}, which does not exist")
            if winner(args.records, search) is None and not budget.spent():
                run_search(study, search, args.records, budget)
            params = winner(args.records, search)
            if params is not None and not budget.spent():
                block = search.winner_block(params)
                real_data.run_block(study, block, RecordStore(args.records / block.name), budget, promote)
    # the whole page, as pipeline.real_data renders it (its blocks, these searches, the registry)
    return real_data.main(["--render", "--quick", str(args.quick).lower(), "--records", str(args.records),
                           "--out", str(args.out)])


if __name__ == "__main__":
    sys.exit(main())
