"""A policy file's format as pydantic models: what `registry.policy` validates a YAML file
against, and what registry/policies/schema.json publishes (`python -m registry.policy --schema`).

Every mapping forbids unknown keys (policy_types.StrictModel); the `gates:` part has one key
per registered gate plug-in (registry/gates/), with that gate's parameter type, plus `order`.
"""
from __future__ import annotations

import datetime as dt
import functools
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, create_model, model_validator

from registry import gates as G
from registry.policy_types import Flag, Level, Metric, NonNegative, Number, StrictModel, Text, check_metric, names, problem

_ALIAS_RE = re.compile(r"^[A-Za-z][\w\-]*$")  # MLflow: alphanumerics, _ and -; not v<digits>


def _since(raw: Any) -> Any:
    if isinstance(raw, dt.datetime) or raw is None:
        since = raw
    elif isinstance(raw, dt.date):
        since = dt.datetime(raw.year, raw.month, raw.day)
    else:
        try:
            since = dt.datetime.fromisoformat(raw)
        except (TypeError, ValueError):
            raise problem(f"expected a date like 2025-01-31, got {raw!r}") from None
    return since.replace(tzinfo=dt.timezone.utc) if since is not None and since.tzinfo is None else since


class Candidates(StrictModel):
    """Which runs may be promoted (always also: FINISHED, study/task tags, registry_candidate)."""
    experiments: Annotated[tuple[Text, ...], BeforeValidator(names)] = ()  # () : the study's and search
    filter: Annotated[Text, AfterValidator(str.strip)] = ""  # extra MLflow search filter, ANDed
    max_age_days: NonNegative = 0.0  # 0: any age
    since: Annotated[dt.datetime | None, BeforeValidator(_since, json_schema_input_type=dt.date | None)] = None
    max_results: Annotated[int, Field(ge=1, strict=True)] = 1000


class Evaluation(StrictModel):
    """How candidates are compared: on the study's fixed holdout (scored at promotion, every
    candidate on the same units), or only within groups that share the given tags (their own
    test sets are then comparable: the paper's per-split view)."""
    mode: Literal["holdout", "compare_within"] = "holdout"
    compare_within: Annotated[tuple[Text, ...], BeforeValidator(names)] = ()
    shortlist: Annotated[int, Field(ge=1, strict=True)] = 10  # scored on the holdout: the best by their own test metric

    @model_validator(mode="after")
    def _groups_named(self) -> Evaluation:
        if self.mode == "compare_within" and not self.compare_within:
            raise problem("compare_within: name the tags candidates must share (e.g. [split]) for mode compare_within")
        return self


def _pick(text: Any) -> str:
    if not isinstance(text, str):
        raise problem(f"expected 'max <metric>' or 'min <metric>', got {text!r}")
    parts = text.split()
    if len(parts) != 2 or parts[0] not in ("max", "min"):
        raise problem(f"expected 'max <metric>' or 'min <metric>', got {text!r}")
    check_metric(parts[1])
    return text


def _significance(raw: Any) -> Any:
    """`significance: 0.05` | `{level: 0.05}` | `none`; the champion's default is 0.05."""
    if raw is False or (isinstance(raw, str) and raw.strip().lower() in ("none", "off")):
        return None
    if isinstance(raw, dict):
        unknown = sorted(set(raw) - {"level"}, key=str)
        if unknown:
            raise problem(f"unknown key {unknown[0]!r} (allowed here: level)")
        raw = raw.get("level", 0.05)
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise problem(f"expected a level like 0.05, {{level: 0.05}} or none, got {raw!r}")
    if not 0 < raw < 1:
        raise problem(f"the level must be in (0, 1), got {raw}")
    return float(raw)


def _alias_name(alias: Any) -> Any:
    if not isinstance(alias, str) or not _ALIAS_RE.match(alias) or re.match(r"^[vV]\d+$", alias) \
            or alias.lower() == "latest":
        raise problem(f"invalid alias name {alias!r} (letters, digits, _ and -; not 'latest' or v<number>)")
    return alias


def _some_aliases(value: Any) -> Any:
    if not isinstance(value, dict) or not value:
        raise problem("expected a mapping of alias name -> rule, with at least one alias")
    return value


class WithinSpec(StrictModel):
    metric: Metric
    of: Text  # another alias
    tolerance: NonNegative


class PreferCheaper(StrictModel):
    """Also move when the newcomer is not worse than the holder by more than `tolerance` (the
    paired interval's lower end) and strictly cheaper in `cost`."""
    cost: Metric
    tolerance: NonNegative = 0.0


class LevelSpec(StrictModel):
    level: Level = 0.05


_SignificanceInput = Level | LevelSpec | Literal["none", "off", False]


class AliasSpec(StrictModel):
    """One alias's rule as written (`pick: max <metric>`, optionally narrowed)."""
    pick: Annotated[str, Field(pattern=r"^(max|min) \S+$"), BeforeValidator(_pick)]
    within: WithinSpec | None = None
    floor: dict[Metric, Number] = {}
    ceiling: dict[Metric, Number] = {}
    newer_than: Text | None = None  # another alias
    pareto: Flag = False
    when_none: Literal["keep", "remove"] = "keep"  # what happens when no candidate fits the rule
    significance: Annotated[Level | None, BeforeValidator(_significance, json_schema_input_type=_SignificanceInput)] \
        = None  # left out: 0.05 for the champion, none for the others
    prefer_cheaper: PreferCheaper | None = None


def _gate_fields(gates: tuple[G.Gate, ...]) -> dict[str, Any]:
    fields: dict[str, Any] = {g.key: (g.params, Field(default=g.default, description=f"gate {g.name}: {g.summary}"))
                              for g in gates if g.key}
    fields["order"] = (tuple[Text, ...] | None, Field(default=None, description="the gates' order (default: "
                                                                                 + ", ".join(G.DEFAULT_ORDER) + ")"))
    return fields


@functools.lru_cache(maxsize=8)
def _file_model(gates: tuple[G.Gate, ...]) -> type[StrictModel]:
    """The policy file's model, with one key per registered gate under `gates:`."""
    gates_model = create_model("Gates", __base__=StrictModel, __doc__="The gates every candidate must pass.",
                               **_gate_fields(gates))
    return create_model(
        "PolicyFile", __base__=StrictModel, __doc__="A promotion policy (registry/README.md).",
        model=(Text, Field(description="the registered model: <study>-<task>, also the file's name")),
        study=(Text, ...), task=(Text, ...), description=(Text, ""),
        candidates=(Candidates, Candidates()), gates=(gates_model, gates_model()), evaluation=(Evaluation, Evaluation()),
        on_gate_failure=(Literal["next", "refuse"], "next"),
        aliases=(Annotated[dict[Annotated[str, BeforeValidator(_alias_name)], AliasSpec],
                           BeforeValidator(_some_aliases)], ...))


def file_model() -> type[StrictModel]:
    return _file_model(tuple(G.all_gates()))


def schema() -> dict:
    """The JSON schema of a policy file (what registry/policies/schema.json holds)."""
    out = {"$schema": "https://json-schema.org/draft/2020-12/schema"} | file_model().model_json_schema()
    return out


__all__ = ["AliasSpec", "Candidates", "Evaluation", "LevelSpec", "PreferCheaper", "WithinSpec", "file_model",
           "schema"]
