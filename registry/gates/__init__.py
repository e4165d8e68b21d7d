"""Gates a candidate must pass before any alias moves to it: one plug-in module per gate.

A gate is a `Gate` subclass registered with `register_gate`: its name (in the refusal, the
passed list and the version's page), its policy key under `gates:` and the pydantic type of
its parameters there, its stage, and its check, which returns a `GateResult` with a one-line
reason (or None: the gate does not apply, e.g. switched off in the policy). The gates known:

- every module of this package (`registry/gates/<gate>.py`), imported on first use;
- every entry point of the `medimg.gates` group (an installed package's own gates);
- the modules named in `MEDIMG_GATES` (comma-separated; how tests and not-installed
  plug-ins add a gate, subprocesses included).

Stages, in this order: `candidate` (once per candidate before any ranking; a refusal holds
for every alias), `holdout` (under holdout evaluation, after the candidate is scored there),
`alias` (for each alias, walking down its ranking). Within a stage gates run in the chain
order: the policy's `gates.order`, else `DEFAULT_ORDER` below, then gates named in neither
by name. The gates passed are recorded on the version as one line written by
`passed_text` and read back by `read_passed` (nowhere else).

Gates see runs and models only through MLflow's API (never the training code).
"""
from __future__ import annotations

import functools
import importlib
import importlib.metadata
import math
import os
import pkgutil
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from projects.core import tracking

CANDIDATE, HOLDOUT, ALIAS = "candidate", "holdout", "alias"
STAGES = (CANDIDATE, HOLDOUT, ALIAS)
# The chain order, cheap first and the model load last (the one list; a policy may give its own).
DEFAULT_ORDER = ("metrics", "baseline", "holdout_clean", "holdout_baseline", "data", "not_rolled_back",
                 "pareto", "smoke")
ENTRY_POINT_GROUP = "medimg.gates"
GATES_ENV = "MEDIMG_GATES"
P_IMAGE_SHAPE = "image_shape"  # run param, e.g. "3x128x128" (channels x height x width)
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


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


class Context(Protocol):
    """What a check may ask of the promotion it runs in (registry.decision.Promotion)."""
    policy: Any  # registry.policy.Policy
    evaluation: Any  # registry.evaluation.HoldoutEvaluation under holdout evaluation, else None
    gated: list[Candidate]  # the candidates that passed the earlier stages
    decided: dict[str, Candidate | None]  # aliases decided so far in this promotion, and their choice
    cache: dict  # per promotion, for gates that reuse work (the smoke test, the Pareto front)

    def metric(self, name: str) -> str: ...  # a rule's metric as compared (the holdout's, where scored)

    def holder(self, alias: str) -> Candidate | None: ...  # the alias's holder before this promotion

    def model_uri(self, candidate: Candidate) -> str: ...


class Gate:
    """One gate (see the module docstring). Subclass, set the class attributes, write `check`."""
    name: ClassVar[str]
    key: ClassVar[str | None] = None  # its key under the policy's `gates:`; None: no setting
    params: ClassVar[Any] = None  # the type of that setting (a policy_types.StrictModel, a bool, ...)
    default: ClassVar[Any] = None  # the setting when the policy leaves the key out
    stage: ClassVar[str] = ALIAS
    summary: ClassVar[str] = ""  # what it checks, in a few words (README, --help)

    def settings(self, policy) -> Any:
        return getattr(policy.gates, self.key) if self.key else None

    def metrics(self, settings: Any) -> tuple[str, ...]:
        """Metrics the setting names: a candidate must have them (the `metrics` gate)."""
        return ()

    def check_policy(self, settings: Any, aliases: dict) -> str | None:
        """A problem with the policy as a whole ("<key path>: <problem>"), or None."""
        return None

    def check(self, candidate: Candidate, settings: Any, ctx: Context, rule=None) -> GateResult | None:
        raise NotImplementedError

    def result(self, passed: bool, reason: str) -> GateResult:
        return GateResult(self.name, passed, reason)


_GATES: dict[str, Gate] = {}
_LOADED: set[str] = set()


def register_gate(gate: Gate | type[Gate]) -> Gate | type[Gate]:
    """Add a gate (call at import of its module, or use as a class decorator)."""
    instance = gate() if isinstance(gate, type) else gate
    if not _NAME_RE.match(instance.name) or (instance.key is not None and not _NAME_RE.match(instance.key)):
        raise ValueError(f"gate {instance.name!r}: names and keys are lower-case words (a-z, 0-9, _)")
    if instance.stage not in STAGES:
        raise ValueError(f"gate {instance.name!r}: stage must be one of {', '.join(STAGES)}")
    old = _GATES.get(instance.name)
    if old is not None and type(old).__qualname__ != type(instance).__qualname__:
        raise ValueError(f"gate {instance.name!r} is registered twice ({type(old).__module__} and "
                         f"{type(instance).__module__})")
    clash = [g.name for g in _GATES.values() if g.key and g.key == instance.key and g.name != instance.name]
    if clash:
        raise ValueError(f"gate {instance.name!r}: policy key {instance.key!r} is already gate {clash[0]!r}'s")
    _GATES[instance.name] = instance
    return gate


def unregister_gate(name: str) -> None:
    """Remove a gate (tests that add one for a while)."""
    _GATES.pop(name, None)


@functools.lru_cache(maxsize=1)
def _installed_modules() -> tuple[str, ...]:
    """This package's gate modules and the installed ones, read once per process (entry_points()
    scans every installed distribution's metadata; a promotion asks for the gates per candidate)."""
    names = [f"{__name__}.{m.name}" for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")]
    names += [ep.value.split(":")[0] for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)]
    return tuple(names)


def _modules() -> list[str]:
    names = list(_installed_modules())
    names += [m.strip() for m in os.environ.get(GATES_ENV, "").split(",") if m.strip()]
    return list(dict.fromkeys(names))


def load_gates() -> None:
    """Import every gate module once (a new MEDIMG_GATES entry is picked up)."""
    for module in _modules():
        if module not in _LOADED:
            importlib.import_module(module)
            _LOADED.add(module)


def all_gates() -> list[Gate]:
    load_gates()
    return [_GATES[name] for name in sorted(_GATES)]


def get_gate(name: str) -> Gate:
    load_gates()
    return _GATES[name]


def chain(order: Sequence[str] | None = None) -> list[Gate]:
    """Every gate in the order it runs: by stage, then `order` (else DEFAULT_ORDER), then name."""
    rank = {name: i for i, name in enumerate(order or DEFAULT_ORDER)}
    return sorted(all_gates(), key=lambda g: (STAGES.index(g.stage), rank.get(g.name, len(rank)), g.name))


# --- the passed list, as the version's `promotion.<alias>.gates` tag ---------------------------
PASSED = "passed: "
_EARLIER = "; when promoted "


@dataclass(frozen=True)
class Passed:
    gates: tuple[tuple[str, str], ...] = ()  # (gate, note) in chain order
    earlier: str = ""  # a rollback's record of the gates passed when first promoted
    text: str = ""  # a value in no known form, kept as it is


def passed_text(gates: Iterable[str | tuple[str, str]], earlier: str = "") -> str:
    """`passed: metrics, baseline, smoke` - one line, readable in the MLflow UI; a gate may
    carry a note (`smoke (re-checked for the rollback)`), a rollback the earlier record."""
    items = [g if isinstance(g, str) else f"{g[0]} ({g[1]})" if g[1] else g[0] for g in gates]
    return PASSED + ", ".join(items) + (f"{_EARLIER}{earlier}" if earlier else "")


def read_passed(text: str) -> Passed:
    """The inverse of passed_text (the same form has been written since the first release)."""
    if not text.startswith(PASSED):
        return Passed(text=text)
    head, _, earlier = text[len(PASSED):].partition(_EARLIER)
    gates = []
    for item in (part.strip() for part in head.split(",") if part.strip()):
        gate, _, note = item.partition(" ")
        gates.append((gate, note.strip().removeprefix("(").removesuffix(")")))
    return Passed(tuple(gates), earlier)


__all__ = ["ALIAS", "CANDIDATE", "Candidate", "Context", "DEFAULT_ORDER", "Gate", "GateResult", "HOLDOUT",
           "P_IMAGE_SHAPE", "Passed", "all_gates", "chain", "get_gate", "load_gates", "passed_text",
           "read_passed", "register_gate", "unregister_gate"]
