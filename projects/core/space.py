"""The search space of each study, in one readable place, and the `--space` override syntax.

A space is a list of config fields with the values a trial may take. Its text form is also
the command-line syntax, so what the parent run logs as `space` can be pasted back:

    arch=unet|elunet,depth=3:6,filters=4:32:pow2,lr=0.0001:0.01:log,batch_size=4|8|16

    a|b|c          one of these values (categorical; the only form for text fields, so
                   `arch=unet|smp:Unet:resnet18` keeps the colons of an smp spec)
    low:high       an integer or float range, both ends included
    low:high:log   a float range sampled on a log scale
    low:high:pow2  powers of two from low to high (4:32 -> 4|8|16|32)
    value          fixed: not searched, every trial uses it

`--space depth=3:5,arch=unet|elunet` replaces those entries of the default space and keeps
the others; a field that is not in the default space is added (any field of the study's
config dataclass, typed by it). A setting given in `--base` is fixed, not searched, unless
`--space` names it as well (`pin_base`). An override of a pow2 or log entry keeps that scale unless
it names another one (`filters=4:16` stays powers of two).

Each study declares its default space as text (`Study.default_space`) and may narrow it for
a base config (`Study.narrow_space`); which combinations are invalid (a depth the tile
cannot be halved to, a model over the parameter budget) is decided by the search before
anything trains.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from projects.core.config import Config, coerce
from projects.core.errors import InputError

# --- one entry of a space ---------------------------------------------------------------


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


@dataclass(frozen=True)
class Choice:
    """One of a few values (text, booleans, or numbers without an order worth modelling)."""

    name: str
    choices: tuple

    def suggest(self, trial) -> Any:
        return trial.suggest_categorical(self.name, list(self.choices))

    def values(self) -> tuple | None:
        return self.choices

    def text(self) -> str:
        return "|".join(_fmt(c) for c in self.choices)


@dataclass(frozen=True)
class IntRange:
    name: str
    low: int
    high: int

    def suggest(self, trial) -> int:
        return trial.suggest_int(self.name, self.low, self.high)

    def values(self) -> tuple | None:
        return tuple(range(self.low, self.high + 1))

    def text(self) -> str:
        return f"{self.low}:{self.high}"


@dataclass(frozen=True)
class Pow2:
    """Powers of two between low and high (searched as a categorical of those values, so
    the trial's parameter is the config value itself: `filters=16`, not `log2_filters=4`)."""

    name: str
    low: int
    high: int

    def suggest(self, trial) -> int:
        return trial.suggest_categorical(self.name, list(self.values()))

    def values(self) -> tuple:
        out, v = [], 1
        while v <= self.high:
            if v >= self.low:
                out.append(v)
            v *= 2
        return tuple(out)

    def text(self) -> str:
        return f"{self.low}:{self.high}:pow2"


@dataclass(frozen=True)
class FloatRange:
    name: str
    low: float
    high: float
    log: bool = False

    def suggest(self, trial) -> float:
        return trial.suggest_float(self.name, self.low, self.high, log=self.log)

    def values(self) -> tuple | None:
        return None

    def text(self) -> str:
        return f"{self.low:g}:{self.high:g}" + (":log" if self.log else "")


@dataclass(frozen=True)
class Fixed:
    """Not searched: every trial uses this value (an override that pins a field)."""

    name: str
    value: Any

    def suggest(self, trial) -> Any:
        return self.value

    def values(self) -> tuple:
        return (self.value,)

    def text(self) -> str:
        return _fmt(self.value)


Param = Choice | IntRange | Pow2 | FloatRange | Fixed


@dataclass(frozen=True)
class Space:
    study: str
    params: tuple[Param, ...]

    def names(self) -> list[str]:
        return [p.name for p in self.params]

    def get(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)

    def replace(self, param: Param) -> Space:
        if self.get(param.name) is None:
            return Space(self.study, self.params + (param,))
        return Space(self.study, tuple(param if p.name == param.name else p for p in self.params))

    def sample(self, trial) -> dict[str, Any]:
        """The trial's values for every field of the space (fixed ones included)."""
        return {p.name: p.suggest(trial) for p in self.params}

    def searched(self) -> list[str]:
        return [p.name for p in self.params if not isinstance(p, Fixed)]

    def size(self) -> int | None:
        """How many distinct configs the space holds (None when a field is a continuous range)."""
        n = 1
        for p in self.params:
            values = p.values()
            if values is None:
                return None
            n *= len(values)
        return n

    def text(self) -> str:
        """The space in `--space` syntax (logged on the parent run, pasteable)."""
        return ",".join(f"{p.name}={p.text()}" for p in self.params)

    def describe(self) -> str:
        """One line per field, for `--show-space` and the docs."""
        lines = [f"{self.study} search space:"]
        for p in self.params:
            kind = type(p).__name__
            values = p.values()
            shown = f" -> {', '.join(_fmt(v) for v in values)}" if values and not isinstance(p, (Choice, Fixed)) and len(values) <= 12 else ""
            lines.append(f"  {p.name:<16} {p.text():<32} ({kind}{shown})")
        return "\n".join(lines)


# --- parsing `--space` --------------------------------------------------------------------


def field_types(config_cls: type) -> dict[str, type]:
    """Flat setting name -> its Python type (int, float, str, bool, list)."""
    return {name: leaf.type for name, leaf in config_cls.settings().items()}


def _convert(name: str, text: str, kind: type) -> Any:
    try:
        return coerce(name, text.strip(), kind)
    except InputError:
        raise InputError("--space", f"{name}: {text.strip()!r} is not a valid {kind.__name__}") from None


def split_entries(text: str) -> list[tuple[str, str]]:
    """'a=1:2,b=x|y' -> [('a', '1:2'), ('b', 'x|y')]. Commas inside a value are not allowed."""
    out = []
    for part in str(text or "").replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        if "=" not in part:
            raise InputError("--space", f"expected name=values, got {part!r} (e.g. depth=3:5,arch=unet|elunet)")
        name, value = part.split("=", 1)
        name = name.strip().replace("-", "_")
        if not value.strip():
            raise InputError("--space", f"{name}: no values given")
        out.append((name, value.strip()))
    return out


def parse_param(name: str, text: str, kind: type, previous: Param | None = None) -> Param:
    """One `name=values` entry, typed by the config field."""
    if "|" in text:
        choices = tuple(_convert(name, c, kind) for c in text.split("|") if c.strip())
        if len(set(choices)) != len(choices):
            raise InputError("--space", f"{name}: repeated values in {text!r}")
        return Choice(name, choices) if len(choices) > 1 else Fixed(name, choices[0])
    if kind in (int, float) and ":" in text:
        parts = text.split(":")
        scale = ""
        if parts[-1].strip().lower() in ("log", "pow2", "linear"):
            scale = parts.pop().strip().lower()
        if len(parts) != 2:
            raise InputError("--space", f"{name}: expected low:high[:log|:pow2], got {text!r}")
        low, high = (_convert(name, p, kind) for p in parts)
        if low > high:
            raise InputError("--space", f"{name}: low {low} is above high {high}")
        if not scale and previous is not None:
            scale = "pow2" if isinstance(previous, Pow2) else "log" if getattr(previous, "log", False) else ""
        if scale == "pow2":
            if kind is not int or low < 1:
                raise InputError("--space", f"{name}: pow2 needs positive integers, got {text!r}")
            param = Pow2(name, int(low), int(high))
            if not param.values():
                raise InputError("--space", f"{name}: no power of two between {low} and {high}")
            return param
        if kind is int:
            if scale == "log":
                raise InputError("--space", f"{name}: use :pow2 for integers on a log scale")
            return IntRange(name, int(low), int(high))
        if scale == "log" and low <= 0:
            raise InputError("--space", f"{name}: a log range needs low > 0, got {low}")
        return FloatRange(name, float(low), float(high), log=scale == "log")
    return Fixed(name, _convert(name, text, kind))


def parse_space(study: str, text: str, config_cls: type) -> Space:
    """A space from its text form (a study's `default_space`, or a logged `space` param)."""
    return apply_overrides(Space(study, ()), text, config_cls)


def apply_overrides(space: Space, overrides: str, config_cls: type) -> Space:
    """The space with `--space` entries replacing or adding fields."""
    types = field_types(config_cls)
    for name, text in split_entries(overrides):
        if name not in types:
            raise InputError("--space", f"{name!r} is not a {space.study} setting; known: {', '.join(types)}")
        kind = types[name]
        if kind not in (int, float, str, bool):
            raise InputError("--space", f"{name} has type {kind}, which cannot be searched")
        space = space.replace(parse_param(name, text, kind, space.get(name)))
    return space


def pin_base(overrides: str, base: Mapping[str, Any], default: Space) -> tuple[str, list[str]]:
    """`--space` text with every `--base` setting that the default space searches, and the
    overrides do not name, fixed at its base value; and those `name=value` entries.

    Without it `--base filters=16` would be searched over anyway (the overrides keep the
    default axes): a setting a user wrote down for every trial stays fixed; naming it in
    `--space` too searches it."""
    named = {name for name, _ in split_entries(overrides)}
    pinned = [f"{name}={str(value).lower() if isinstance(value, bool) else value}" for name, value in base.items()
              if default.get(name) is not None and name not in named]
    return ",".join(e for e in (overrides.strip().strip(","), *pinned) if e), pinned


def parse_assignments(text: str, config_cls: type) -> dict[str, Any]:
    """`--base tile_size=128,embedded_images=8` -> typed values for the base config."""
    types = field_types(config_cls)
    out = {}
    for name, value in split_entries(text):
        if name not in types:
            raise InputError("--base", f"{name!r} is not a setting of {config_cls.__name__}; known: {', '.join(types)}")
        out[name] = _convert(name, value, types[name])
    return out


def categorical_values(space: Space, names: Iterable[str], base: Any) -> list[dict[str, Any]] | None:
    """Every combination of the given fields the space can produce (None if one is a range)."""
    combos: list[dict[str, Any]] = [{}]
    for name in names:
        param = space.get(name)
        if param is None:
            values: Sequence | None = (getattr(base, name),)
        else:
            values = param.values()
            if isinstance(param, (IntRange,)) and values is not None and len(values) > 8:
                values = None
        if values is None:
            return None
        combos = [c | {name: v} for c in combos for v in values]
    return combos


def config_for(base: Config, values: Mapping[str, Any]) -> Config:
    return base.replace(**dict(values))
