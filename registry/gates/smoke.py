"""Gate `smoke`: the model artifact loads through pyfunc and predicts on a tiny input built
from its signature (batch 2); outputs finite, batch-shaped, and with `probabilities: true`
(the default) in [0, 1].

Policy key `smoke_predict: true | false | {probabilities: true|false}`. It is the last gate
(the model load is the expensive one); its result is cached per candidate for a promotion."""
from __future__ import annotations

import re
from typing import Any

import numpy as np

from registry.gates import ALIAS, P_IMAGE_SHAPE, Candidate, Context, Gate, GateResult, register_gate
from registry.policy_types import Flag, StrictModel

GATE_SMOKE = "smoke"
SMOKE_BATCH = 2


class SmokeOptions(StrictModel):
    probabilities: Flag = True  # smoke outputs must lie in [0, 1]


def enabled(settings: bool | SmokeOptions) -> bool:
    return settings is not False


def probabilities(settings: bool | SmokeOptions) -> bool:
    return settings.probabilities if isinstance(settings, SmokeOptions) else True


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


def _fail(reason: str) -> GateResult:
    return GateResult(GATE_SMOKE, False, reason)


def _check_output(model, x: np.ndarray, y, probabilities: bool) -> GateResult:
    try:
        y = np.asarray(y, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        return _fail(f"prediction is not numeric: {_short(exc)}")
    if y.ndim == 0 or y.shape[0] != SMOKE_BATCH:
        return _fail(f"prediction shape {y.shape} has no batch of {SMOKE_BATCH}")
    out_schema = model.metadata.get_output_schema()
    if out_schema is not None and out_schema.is_tensor_spec() and len(out_schema.inputs) == 1:
        expected = tuple(int(d) for d in out_schema.inputs[0].shape)
        if len(expected) != y.ndim or any(e > 0 and e != s for e, s in zip(expected[1:], y.shape[1:])):
            return _fail(f"prediction shape {y.shape} does not match the signature's {expected}")
    if not np.isfinite(y).all():
        return _fail("prediction has NaN or infinite values")
    if probabilities and (y.min() < 0 or y.max() > 1):
        return _fail(f"prediction outside [0, 1] ({y.min():.3g}..{y.max():.3g}); expected probabilities")
    return GateResult(GATE_SMOKE, True, f"loads and predicts {tuple(x.shape)} -> {tuple(y.shape)}")


def smoke_predict(model_uri: str, image_shape: str | None, probabilities: bool = True) -> GateResult:
    """Load the model through pyfunc and predict on a tiny input; any failure is the reason."""
    import mlflow

    try:
        model = mlflow.pyfunc.load_model(model_uri, suppress_warnings=True)  # no pip-version scan
    except Exception as exc:  # noqa: BLE001  a broken artifact fails in many ways
        return _fail(f"model does not load: {type(exc).__name__}: {_short(exc)}")
    try:
        x = smoke_input(model.metadata, image_shape)
    except Exception as exc:  # noqa: BLE001
        return _fail(f"cannot build a sample input: {_short(exc)}")
    try:
        y = model.predict(x)
    except Exception as exc:  # noqa: BLE001
        return _fail(f"predict failed on {x.shape}: {type(exc).__name__}: {_short(exc)}")
    return _check_output(model, x, y, probabilities)


def _short(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def cached_smoke(ctx: Context, candidate: Candidate) -> GateResult:
    """The smoke test of a candidate, once per promotion (the Pareto gate asks too)."""
    cache = ctx.cache.setdefault(GATE_SMOKE, {})
    if candidate.run_id not in cache:
        shape = candidate.params.get(P_IMAGE_SHAPE) or candidate.version_tags.get(P_IMAGE_SHAPE)
        cache[candidate.run_id] = smoke_predict(ctx.model_uri(candidate), shape,
                                                probabilities(ctx.policy.gates.smoke_predict))
    return cache[candidate.run_id]


@register_gate
class SmokeGate(Gate):
    name, key, stage = GATE_SMOKE, "smoke_predict", ALIAS
    params, default = bool | SmokeOptions, True
    summary = "the model loads and predicts a batch of 2 built from its signature"

    def check(self, candidate: Candidate, settings: Any, ctx: Context, rule=None) -> GateResult | None:
        return cached_smoke(ctx, candidate) if enabled(settings) else None
