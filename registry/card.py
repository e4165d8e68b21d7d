"""The model card at the top of every registered version's description: what the model is
for, what it was trained on, how it did on the study's holdout (with 95% intervals and the
trivial predictors it was measured against), its size and CPU time, and how to use it.
The policy's decisions follow it (registry.pages.version_description)."""
from __future__ import annotations

import math

import mlflow
import pandas as pd
from mlflow.tracking import MlflowClient

from projects.core import serving, tracking

EFFICIENCY = ((tracking.M_SIZE_MB, "weights {:.3g} MB"), (tracking.M_CPU_TOTAL, "CPU load + predict {:.3g} s"),
              (tracking.M_LATENCY_P50, "CPU latency p50 {:.3g} ms"))


def model_card(client: MlflowClient, name: str, version: str, run) -> str:
    t, p, m = run.data.tags, run.data.params, run.data.metrics
    mv = client.get_model_version(name, version)
    lines = [f"**Intended use: {serving.INTENDED_USE}.** Takes image files as they are "
             "(docs/use-the-champion.md): `mlflow models serve`, `-e predict`, `mlflow.pyfunc.load_model`.",
             f"Training data: {p.get('data_root') or p.get('data') or '?'} "
             f"(dataset_digest {t.get(tracking.TAG_DATASET_DIGEST, '?')}; holdout {t.get(tracking.TAG_HOLDOUT_DIGEST, '?')} "
             "never trained on)."]
    holdout = holdout_lines(client, mv)
    lines += holdout or ["Holdout: not scored yet (promotion scores candidates on the study's holdout)."]
    eff = [fmt.format(m[k]) for k, fmt in EFFICIENCY if k in m and math.isfinite(m[k])]
    if eff:
        lines.append("Size and CPU time: " + ", ".join(eff) + ".")
    if mv.tags.get("onnx_model_uri"):
        lines.append(f"ONNX model: {mv.tags['onnx_model_uri']} (max |ONNX - eager| {mv.tags.get('onnx_max_abs_diff', '?')}).")
    return "\n".join(lines)


def holdout_lines(client: MlflowClient, mv) -> list[str]:
    """This version's row of the latest holdout evaluation that scored it, and the baselines."""
    experiment = client.get_experiment_by_name(tracking.EXPERIMENTS["evaluation"])
    if experiment is None:
        return []
    runs = client.search_runs([experiment.experiment_id], f"tags.model = '{mv.name}'",
                              order_by=["attributes.start_time DESC"], max_results=20)
    for run_id in [r.info.run_id for r in runs]:
        try:
            logged = mlflow.artifacts.load_dict(f"runs:/{run_id}/holdout_metrics.json")
        except Exception:  # noqa: BLE001 - an evaluation without its table: try the next one
            continue
        table = pd.DataFrame(logged["data"], columns=logged["columns"])
        own = table[table["run_id"] == mv.run_id]
        if own.empty:
            continue
        metrics = [c for c in table.columns if f"{c}_ci95_low" in table.columns]
        rows = [("this model", own.iloc[0])] + [(r["candidate"], r) for _, r in table.iterrows()
                                                 if str(r["candidate"]).startswith("baseline: ")]
        out = [f"Holdout (evaluation run {run_id}):"]
        for label, row in rows:
            cells = [f"{k} {row[k]:.4f} [{row[f'{k}_ci95_low']:.3f}, {row[f'{k}_ci95_high']:.3f}]"
                     for k in metrics if isinstance(row[k], float) and math.isfinite(row[k])]
            out.append(f"- {label}: " + ", ".join(cells))
        return out
    return []
