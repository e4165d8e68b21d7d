"""What MLflow's system-metrics sampler costs a training run, at the platform's interval.

Training runs log system metrics (CPU, memory, disk, network: MLflow's sampler, a background
thread of the training process, started by `mlflow.start_run(log_system_metrics=True)`). Each sample reads
psutil, asks the tracking store whether the run still runs, and logs a batch: CPU time of
the training process, taken from training. Measured directly: the process's CPU time over
windows of equal length with the sampler off and on, interleaved (off on off on ...), with
the process otherwise idle, so the difference is the sampler's own. Each window is a nested
run, started with the sampler on or off through MLflow's public switch, and timed only between
its start and its end. Its share of a training
run's CPU time is that over the CPU time training burns in the same window (all torch
threads busy). The interval is runtime.ENV_DEFAULTS[MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL].
"""
from __future__ import annotations

import os
import time

import mlflow
import torch

from projects.core import runtime, tracking
from projects.core.bench import Section, Table, load_average, median

TARGET_PCT = 1.0  # issue #20: the sampling must cost under 1% of training time


def interval_s() -> float:
    return float(os.environ.get("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL")
                 or runtime.ENV_DEFAULTS["MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL"])


def _window(seconds: float, sampler: bool, interval: float) -> tuple[float, int]:
    """Process CPU seconds over `seconds` of idle wall time in a nested run, sampler on or off."""
    mlflow.set_system_metrics_sampling_interval(interval)
    with mlflow.start_run(run_name=f"window-{'on' if sampler else 'off'}", nested=True,
                          log_system_metrics=sampler):
        c0 = time.process_time()
        time.sleep(seconds)
        used = time.process_time() - c0
    return used, int(seconds // interval) if sampler else 0


def run(quick: bool, experiment_id: str | None = None, log=print) -> Section:
    interval = interval_s()
    window, rounds = (3 * interval, 1) if quick else (10 * interval, 4)
    experiment_id = experiment_id or tracking.ensure_experiment(tracking.EXPERIMENTS["benchmark"])
    off, on, samples = [], [], 0
    log(f"[benchmarks] system_metrics: {rounds} x 2 windows of {window:.0f} s, sampling every {interval:g} s ...")
    with mlflow.start_run(experiment_id=experiment_id, run_name="system-metrics-probe", nested=True,
                          tags={"benchmark": "system_metrics"}):
        for _ in range(rounds):
            off.append(_window(window, False, interval)[0])
            used, n = _window(window, True, interval)
            on.append(used)
            samples += n
    cost_s = max(0.0, median(on) - median(off))  # sampler CPU seconds per window
    per_sample_ms = 1000 * cost_s / max(1, window // interval)
    threads = torch.get_num_threads()
    share_pct = 100 * cost_s / (window * threads)  # of the CPU time a training run burns meanwhile
    sec = Section("system_metrics")
    table = Table("System metrics sampler: CPU cost in a training process", [
        "interval s", "window s", "rounds", "CPU s off (median)", "CPU s on (median)", "CPU ms per sample",
        "share of one core", f"share of training CPU ({threads} threads)", "target"])
    table.add(interval, window, rounds, median(off), median(on), per_sample_ms, f"{100 * cost_s / window:.2f}%",
              f"{share_pct:.2f}%", f"< {TARGET_PCT:g}%")
    table.notes.append(f"load average {load_average()}; samples logged during the 'on' windows: {samples}")
    sec.tables.append(table)
    sec.metrics.update({"system_metrics.interval_s": interval, "system_metrics.cpu_ms_per_sample": per_sample_ms,
                        "system_metrics.training_share_pct": share_pct})
    sec.headline.append(f"system metrics every {interval:g} s: {per_sample_ms:.1f} ms CPU per sample, "
                        f"{share_pct:.2f}% of a {threads}-thread training run's CPU time (target < {TARGET_PCT:g}%)")
    return sec
