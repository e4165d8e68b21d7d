"""Run the platform's benchmarks, print their tables, log them to the `benchmarks` experiment.

    python -m benchmarks --quick true                 # every section, a few minutes
    python -m benchmarks --quick false                # the full run behind benchmarks/RESULTS.md
    python -m benchmarks --sections runtimes,flops --markdown out.md
    mlflow run . -e benchmark --env-manager local -P quick=true

One MLflow run for the whole benchmark (the `mlflow run` launcher's run when there is one)
with one nested child run per section: the section's metrics and params, and its tables as
`<section>.txt` / `<section>.md` artifacts; the parent gets every table, the machine
description and each section's headline lines.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its OpenMP pool

import projects  # noqa: E402,F401  (runtime defaults + torchvision shim before torch work)

import argparse  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Callable, Mapping  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Protocol, runtime_checkable  # noqa: E402

from benchmarks import SECTIONS  # noqa: E402
from projects.core.bench import Section, Table, load_average, machine  # noqa: E402
from projects.core.study import all_studies  # noqa: E402


@runtime_checkable
class SectionsStudy(Protocol):
    """A study that brings benchmark sections of its own pipeline."""

    def benchmark_sections(self) -> Mapping[str, Callable]:
        """name -> run(quick, experiment_id, log) returning a projects.core.bench.Section."""


def study_sections() -> dict:
    """Sections the studies bring for their own pipelines (SectionsStudy.benchmark_sections)."""
    return {name: run for study in all_studies() if isinstance(study, SectionsStudy)
            for name, run in study.benchmark_sections().items()}


def all_sections() -> list[str]:
    return list(SECTIONS) + [s for s in study_sections() if s not in SECTIONS]


def _device(text: str) -> str:
    """--device, checked before anything runs (one line when this machine has no such device)."""
    from projects.core.device import check_device
    from projects.core.errors import InputError

    try:
        check_device(text)
    except InputError as exc:
        raise argparse.ArgumentTypeError(exc.problem) from None
    return text


def parse_args(argv: list[str] | None):
    from projects.core.cli import str2bool, str_list

    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", type=str2bool, default=True,
                        help="true: small inputs and few rounds (minutes); false: the full run (about an hour)")
    parser.add_argument("--sections", type=str_list, default=[],
                        help=f"comma-separated subset of {','.join(all_sections())} (default: all)")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave the default)")
    parser.add_argument("--markdown", default="", help="also write every table as markdown to this file")
    parser.add_argument("--no-mlflow", action="store_true", help="print only, log nothing")
    parser.add_argument("--device", type=_device, default="cpu",
                        help="where the training section times its steps and trains its parity runs "
                             "(cpu | cuda | cuda:N; the other sections measure the CPU, as the papers do)")
    args = parser.parse_args(argv)
    args.sections = args.sections or all_sections()
    unknown = [s for s in args.sections if s not in all_sections()]
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(all_sections())}")
    return args


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def machine_table(info: dict[str, str], quick: bool) -> Table:
    table = Table("Machine and settings", ["what", "value"])
    for key in ("cpu_model", "cpu_count", "cpu_flags", "torch_threads", "torch_interop_threads", "omp_wait_policy",
                "torch_version", "onnxruntime_version", "python", "load_average_start"):
        table.add(key, info.get(key, ""))
    table.add("mode", "quick" if quick else "full")
    return table


def run_section(name: str, quick: bool, experiment_id: str | None, state: dict, device: str = "cpu") -> Section:
    if name == "runtimes":
        from benchmarks import runtimes

        out = runtimes.run(quick, log=_log)
        state["runtimes"] = out.results
        return out.section
    if name == "flops":
        from benchmarks import flops

        if "runtimes" not in state:
            from benchmarks import runtimes

            state["runtimes"] = runtimes.run(quick, log=_log).results
        return flops.section(state["runtimes"], quick)
    if name == "training":
        from benchmarks import training

        return training.run(quick, experiment_id, log=_log, device=device)
    if name == "system_metrics":
        from benchmarks import system_metrics

        return system_metrics.run(quick, experiment_id, log=_log)
    if name == "search_vs_grid":
        from benchmarks import search_vs_grid

        return search_vs_grid.run(quick, experiment_id, log=_log)
    if name == "predict_latency":
        from benchmarks import predict_latency

        return predict_latency.run(quick, experiment_id, log=_log)
    return study_sections()[name](quick, experiment_id, log=_log)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine()
    sections = [s for s in all_sections() if s in args.sections]  # fixed order: flops follows runtimes
    header = machine_table(info, args.quick)
    print(header.render(), flush=True)

    mlflow = None
    parent_ctx = None
    experiment_id = None
    if not args.no_mlflow:
        import mlflow

        from projects.core import tracking

        tracking.setup_tracking()
        experiment_id = tracking.ensure_experiment(tracking.EXPERIMENTS["benchmark"])
        parent_ctx = tracking.study_run(tracking.EXPERIMENTS["benchmark"], f"benchmark-{'quick' if args.quick else 'full'}",
                                        tags={"benchmark": "all", "quick": str(args.quick).lower()} | tracking.process_tags())
        parent_ctx.__enter__()
        # `sections_run`, not `sections`: under `mlflow run` the launcher has already logged
        # `sections` as given ("" = every section), and MLflow params cannot change.
        mlflow.log_params({f"machine.{k}": v for k, v in info.items()} | {"quick": str(args.quick).lower(),
                                                                          "sections_run": ",".join(sections)})
        experiment_id = mlflow.active_run().info.experiment_id

    state: dict = {}
    done: list[Section] = []
    failed: list[str] = []
    started = time.perf_counter()
    try:
        for name in sections:
            t0 = time.perf_counter()
            child = None
            if mlflow is not None:
                child = mlflow.start_run(experiment_id=experiment_id, run_name=name, nested=True,
                                         tags={"benchmark": name, "quick": str(args.quick).lower()})
            try:
                section = run_section(name, args.quick, experiment_id, state, args.device)
            except Exception as exc:  # noqa: BLE001 - report, go on with the other sections
                traceback.print_exc()
                failed.append(f"{name}: {type(exc).__name__}: {exc}")
                section = Section(name, headline=[f"{name} FAILED: {type(exc).__name__}: {exc}"])
                if child is not None:
                    mlflow.set_tag("error", f"{type(exc).__name__}: {exc}"[:5000])
                    mlflow.end_run("FAILED")
                    child = None
            section.seconds = time.perf_counter() - t0
            print(section.render(), flush=True)
            print(f"[{name}: {section.seconds:.0f} s]\n", flush=True)
            if child is not None:
                _log_section(mlflow, section)
                mlflow.end_run()
            done.append(section)
        total = time.perf_counter() - started
        print(f"benchmarks ({'quick' if args.quick else 'full'}): {len(done) - len(failed)}/{len(sections)} sections "
              f"in {total:.0f} s; load average now {load_average()}", flush=True)
        markdown = _markdown(header, done, args.quick, total)
        if args.markdown:
            Path(args.markdown).write_text(markdown)
        if mlflow is not None:
            with tempfile.TemporaryDirectory() as tmp:
                (Path(tmp) / "benchmarks.md").write_text(markdown)
                (Path(tmp) / "benchmarks.txt").write_text(header.render() + "\n" + "\n".join(s.render() for s in done))
                mlflow.log_artifacts(tmp)
            mlflow.log_metric("benchmark_seconds", total)
            for s in done:
                for i, line in enumerate(s.headline[:10]):
                    mlflow.set_tag(f"headline.{s.name}.{i}", line[:5000])
    except BaseException as exc:
        if parent_ctx is not None:
            parent_ctx.__exit__(type(exc), exc, exc.__traceback__)
        raise
    if parent_ctx is not None:
        parent_ctx.__exit__(None, None, None)
    if failed:
        print("failed sections:\n  " + "\n  ".join(failed), file=sys.stderr)
        return 1
    return 0


def _log_section(mlflow, section: Section) -> None:
    import math

    metrics = {k: float(v) for k, v in section.metrics.items() if v is not None and math.isfinite(float(v))}
    items = list(metrics.items())
    for i in range(0, len(items), 500):
        mlflow.log_metrics(dict(items[i:i + 500]))
    if section.params:
        mlflow.log_params({k: str(v)[:6000] for k, v in section.params.items()})
    mlflow.log_metric("section_seconds", section.seconds)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / f"{section.name}.txt").write_text(section.render())
        (Path(tmp) / f"{section.name}.md").write_text(section.render(markdown=True))
        mlflow.log_artifacts(tmp)


def _markdown(header: Table, sections: list[Section], quick: bool, total: float) -> str:
    lines = [f"# Benchmark run ({'quick' if quick else 'full'}, {time.strftime('%Y-%m-%d %H:%M')}, {total:.0f} s)", "",
             header.render(markdown=True)]
    for s in sections:
        lines += [f"## {s.name} ({s.seconds:.0f} s)", "", s.render(markdown=True)]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
