"""Gates a candidate must pass before any alias moves to it.

Each gate returns a `GateResult` with a one-line reason, pass or fail, so the promotion
table can say exactly why a candidate was refused. The gates, in the order they are tried
(cheap first, the model load last):

    metrics          required metrics present and finite
    baseline         beats the trivial predictor(s) the policy names
    data             same dataset_digest as the champion, unless the policy allows a change
    not_rolled_back  the version was not rolled back from this alias (registry.promote rollback)
    pareto           on the accuracy vs cost Pareto front (only for aliases that ask for it)
    smoke            the model artifact loads and predicts on a tiny input built from its
                     signature (batch 2); outputs finite, batch-shaped, probabilities in [0, 1]

Gates see runs and models only through MLflow's API (never the training code).
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from projects.core import tracking
from registry.policy import BaselineGate, ParetoSpec

GATE_METRICS = "metrics"
GATE_BASELINE = "baseline"
GATE_DATA = "data"
GATE_ROLLED_BACK = "not_rolled_back"
GATE_PARETO = "pareto"
GATE_SMOKE = "smoke"
GATE_ORDER = (GATE_METRICS, GATE_BASELINE, GATE_DATA, GATE_ROLLED_BACK, GATE_PARETO, GATE_SMOKE)

P_IMAGE_SHAPE = "image_shape"  # run param, e.g. "3x128x128" (channels x height x width)
SMOKE_BATCH = 2


@dataclass
class Candidate:
    """A finished run that logged a full MLflow model, as the registry sees it."""
    run_id: str
    experiment_id: str
    run_name: str
    start_time: int  # ms since the epoch
    metrics: dict[str, float]
    tags: dict[str, str]
    params: dict[str, str]
    version: str | None = None  # the registered version made from this run, if any
    version_tags: dict[str, str] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        return self.tags.get(tracking.TAG_DATASET_DIGEST, "")

    @property
    def model_uri(self) -> str:
        return f"runs:/{self.run_id}/{tracking.MODEL_ARTIFACT}"

    def label(self) -> str:
        return f"v{self.version}" if self.version else f"run {self.run_id[:8]}"

    def value(self, metric: str) -> float | None:
        value = self.metrics.get(metric)
        return float(value) if value is not None and math.isfinite(value) else None


@dataclass(frozen=True)
class GateResult:
    gate: str
    passed: bool
    reason: str

    def __str__(self) -> str:
        return f"{self.gate}: {self.reason}"


def _fmt(value: float | None) -> str:
    return "missing" if value is None else f"{value:.4g}"


def check_metrics(candidate: Candidate, names: Iterable[str]) -> GateResult:
    missing = [n for n in names if n not in candidate.metrics]
    bad = [f"{n}={candidate.metrics[n]}" for n in names
           if n in candidate.metrics and not math.isfinite(candidate.metrics[n])]
    if missing or bad:
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + ([f"not finite {', '.join(bad)}"] if bad else [])
        return GateResult(GATE_METRICS, False, "; ".join(parts))
    return GateResult(GATE_METRICS, True, "required metrics present and finite")


def check_baseline(candidate: Candidate, gate: BaselineGate | None) -> GateResult:
    if gate is None:
        return GateResult(GATE_BASELINE, True, "no baseline gate in the policy")
    value = candidate.value(gate.metric)
    if value is None:
        return GateResult(GATE_BASELINE, False, f"{gate.metric} missing")
    for ref in gate.above:
        ref_value = candidate.value(ref) if isinstance(ref, str) else float(ref)
        ref_name = ref if isinstance(ref, str) else f"{ref:g}"
        if ref_value is None:
            return GateResult(GATE_BASELINE, False, f"baseline {ref_name} missing")
        if not value > ref_value:
            return GateResult(GATE_BASELINE, False,
                              f"does not beat its baseline: {gate.metric} {value:.4f} <= {ref_name} {ref_value:.4f}")
    refs = ", ".join(f"{r} {_fmt(candidate.value(r))}" if isinstance(r, str) else f"{r:g}" for r in gate.above)
    return GateResult(GATE_BASELINE, True, f"{gate.metric} {value:.4f} > {refs}")


def check_data(candidate: Candidate, champion: Candidate | None, champion_label: str,
               allow_change: bool) -> GateResult:
    if allow_change:
        return GateResult(GATE_DATA, True, "policy allows a data change")
    if champion is None:
        return GateResult(GATE_DATA, True, "no champion yet")
    if not candidate.digest:
        return GateResult(GATE_DATA, False, f"run has no {tracking.TAG_DATASET_DIGEST} tag")
    if candidate.digest != champion.digest:
        return GateResult(GATE_DATA, False,
                          f"{tracking.TAG_DATASET_DIGEST} {candidate.digest[:12]} differs from champion "
                          f"{champion_label}'s {champion.digest[:12]} (policy data_change: refuse)")
    return GateResult(GATE_DATA, True, f"same {tracking.TAG_DATASET_DIGEST} as the champion")


def check_not_rolled_back(candidate: Candidate, alias: str, tag_key: str) -> GateResult:
    when = candidate.version_tags.get(tag_key)
    if when:
        return GateResult(GATE_ROLLED_BACK, False, f"{candidate.label()} was rolled back from {alias} ({when}); "
                                                   f"delete its tag {tag_key} to allow it again")
    return GateResult(GATE_ROLLED_BACK, True, "not rolled back")


def pareto_front(candidates: Sequence[Candidate], spec: ParetoSpec) -> set[str]:
    """Run ids of the candidates no other candidate dominates (accuracy up, costs down)."""
    points = []
    for c in candidates:
        values = [c.value(spec.accuracy)] + [c.value(m) for m in spec.costs]
        if all(v is not None for v in values):
            points.append((c.run_id, -values[0], values[1:]))
    front = set()
    for run_id, neg_acc, costs in points:
        own = (neg_acc, *costs)
        dominated = False
        for other_id, other_neg_acc, other_costs in points:
            if other_id == run_id:
                continue
            other = (other_neg_acc, *other_costs)
            if all(o <= s for o, s in zip(other, own)) and any(o < s for o, s in zip(other, own)):
                dominated = True
                break
        if not dominated:
            front.add(run_id)
    return front


def check_pareto(candidate: Candidate, front: set[str], spec: ParetoSpec) -> GateResult:
    axes = f"{spec.accuracy} vs {', '.join(spec.costs)}"
    if candidate.run_id in front:
        return GateResult(GATE_PARETO, True, f"on the Pareto front of {axes}")
    return GateResult(GATE_PARETO, False, f"not on the Pareto front of {axes} (another gated candidate "
                                          "is at least as accurate and no larger/slower)")


def _shape_from_param(text: str | None) -> tuple[int, ...] | None:
    if not text or not re.fullmatch(r"\d+(x\d+)*", text.strip()):
        return None
    return tuple(int(v) for v in text.strip().split("x"))


def smoke_input(metadata, image_shape: str | None, seed: int = 0) -> np.ndarray:
    """A batch-2 input from the model's tensor signature (else the run's image_shape param)."""
    schema = metadata.get_input_schema() if metadata is not None else None
    shape: tuple[int, ...] | None = None
    dtype = np.dtype("float32")
    if schema is not None and schema.is_tensor_spec() and len(schema.inputs) == 1:
        spec = schema.inputs[0]
        shape = tuple(int(d) for d in spec.shape)[1:]
        dtype = np.dtype(spec.type)
        if any(d < 0 for d in shape):  # a dynamic non-batch dimension: the param says how big
            shape = _shape_from_param(image_shape) or tuple(d if d > 0 else 32 for d in shape)
    else:
        shape = _shape_from_param(image_shape)
    if shape is None:
        raise ValueError("the model has no tensor signature and the run no image_shape param")
    rng = np.random.default_rng(seed)
    return rng.random((SMOKE_BATCH, *shape)).astype(dtype)


def smoke_predict(model_uri: str, image_shape: str | None, probabilities: bool = True) -> GateResult:
    """Load the model through pyfunc and predict on a tiny input; any failure is the reason."""
    import mlflow

    try:
        model = mlflow.pyfunc.load_model(model_uri, suppress_warnings=True)  # no pip-version scan
    except Exception as exc:  # noqa: BLE001  a broken artifact fails in many ways
        return GateResult(GATE_SMOKE, False, f"model does not load: {type(exc).__name__}: {_short(exc)}")
    try:
        x = smoke_input(model.metadata, image_shape)
    except Exception as exc:  # noqa: BLE001
        return GateResult(GATE_SMOKE, False, f"cannot build a sample input: {_short(exc)}")
    try:
        y = model.predict(x)
    except Exception as exc:  # noqa: BLE001
        return GateResult(GATE_SMOKE, False, f"predict failed on {x.shape}: {type(exc).__name__}: {_short(exc)}")
    try:
        y = np.asarray(y, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        return GateResult(GATE_SMOKE, False, f"prediction is not numeric: {_short(exc)}")
    if y.ndim == 0 or y.shape[0] != SMOKE_BATCH:
        return GateResult(GATE_SMOKE, False, f"prediction shape {y.shape} has no batch of {SMOKE_BATCH}")
    out_schema = model.metadata.get_output_schema()
    if out_schema is not None and out_schema.is_tensor_spec() and len(out_schema.inputs) == 1:
        expected = tuple(int(d) for d in out_schema.inputs[0].shape)
        if len(expected) != y.ndim or any(e > 0 and e != s for e, s in zip(expected[1:], y.shape[1:])):
            return GateResult(GATE_SMOKE, False, f"prediction shape {y.shape} does not match the "
                                                 f"signature's {expected}")
    if not np.isfinite(y).all():
        return GateResult(GATE_SMOKE, False, "prediction has NaN or infinite values")
    if probabilities and (y.min() < 0 or y.max() > 1):
        return GateResult(GATE_SMOKE, False, f"prediction outside [0, 1] ({y.min():.3g}..{y.max():.3g}); "
                                             "expected probabilities")
    return GateResult(GATE_SMOKE, True, f"loads and predicts {tuple(x.shape)} -> {tuple(y.shape)}")


def _short(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


__all__ = ["Candidate", "GATE_BASELINE", "GATE_DATA", "GATE_METRICS", "GATE_ORDER", "GATE_PARETO",
           "GATE_ROLLED_BACK", "GATE_SMOKE", "GateResult", "check_baseline", "check_data", "check_metrics",
           "check_not_rolled_back", "check_pareto", "pareto_front", "smoke_input", "smoke_predict"]
