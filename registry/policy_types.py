"""The words a policy file is written in, as pydantic types: metric names, numbers, levels,
text, and the strict base every part of a policy (and every gate's parameters) builds on.

A gate plug-in (registry/gates/) declares its parameters with these types, so a misspelt
metric or an unknown key in its part of a policy fails the same way as anywhere else: one
line, `<file>: <key path>: <problem>` (registry.policy turns pydantic's errors into it).
"""
from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from projects.core import tracking

CHAMPION = "champion"  # the alias decided first; the data-digest gate compares against it

_METRIC_RE = re.compile(r"^[A-Za-z][\w.\-/]*$")
# Metric names follow projects.core.tracking's conventions: held-out results, baselines,
# per-epoch curves, and the efficiency numbers.
METRIC_PREFIXES = ("test_", "baseline_", "val_", "cpu_")
KNOWN_METRICS = frozenset(tracking.EFFICIENCY_METRICS + (
    tracking.M_PARAMS_KERAS, tracking.M_SIZE_WITH_OPT_MB, tracking.M_TRAIN_LOSS,
    tracking.M_VAL_LOSS, "train_seconds", "best_epoch", "epochs_run"))
METRIC_PATTERN = ("^(?:(?:" + "|".join(METRIC_PREFIXES) + r")[\w.\-/]*|"
                  + "|".join(re.escape(m) for m in sorted(KNOWN_METRICS)) + ")$")


def problem(text: str) -> PydanticCustomError:
    """A validation problem in the policy's own words (raised from a validator)."""
    return PydanticCustomError("policy", text)


def check_metric(value: Any) -> str:
    if not isinstance(value, str) or not _METRIC_RE.match(value):
        raise problem(f"expected a metric name, got {value!r}")
    if not (value.startswith(METRIC_PREFIXES) or value in KNOWN_METRICS):
        raise problem(f"unknown metric {value!r} (metrics are test_*, baseline_*, val_*, cpu_* or one of "
                      f"{', '.join(sorted(KNOWN_METRICS))})")
    return value


def check_number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise problem(f"expected a finite number, got {value!r}")
    return float(value)


def check_level(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise problem(f"expected a level in (0, 1) like 0.05, got {value!r}")
    return float(value)


def names(value: Any) -> Any:
    """One name or a list of names (`experiments: search` reads as `[search]`)."""
    return [value] if isinstance(value, str) else value


# (Constraints come before the validator: the schema shows them, the validator's words are the error.)
Metric = Annotated[str, Field(pattern=METRIC_PATTERN), BeforeValidator(check_metric)]
Number = Annotated[float, BeforeValidator(check_number)]
NonNegative = Annotated[float, Field(ge=0), BeforeValidator(check_number)]
Level = Annotated[float, Field(gt=0, lt=1), BeforeValidator(check_level)]
Text = Annotated[str, Field(strict=True)]
Flag = Annotated[bool, Field(strict=True)]


class StrictModel(BaseModel):
    """A mapping of a policy file: unknown keys are errors; `key:` with no value means the
    default (as YAML readers expect); the parsed object is read-only."""
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _empty_means_default(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None}
        return data


__all__ = ["CHAMPION", "Flag", "KNOWN_METRICS", "Level", "Metric", "NonNegative", "Number", "StrictModel", "Text",
           "check_metric", "names", "problem"]
