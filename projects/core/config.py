"""Configuration declared once: a study's settings are dataclass fields that carry their own
help text and bounds; the command line, validation, the MLproject check, the search space
and the params a run logs are all read from them.

    @dataclass
    class ModelSettings(Section):
        arch: str = setting("elunet", "unet | elunet | smp:<Arch>:<encoder>")
        depth: int = setting(5, "levels of the contracting path", min=2, max=7)

    @dataclass(init=False)
    class MyConfig(Config):
        model: ModelSettings = section(ModelSettings)
        train: TrainSettings = section(TrainSettings)

    cfg = MyConfig(arch="unet", epochs=3)        # flat names: every leaf name is unique
    cfg.model.depth, cfg.depth                   # the same value (flat read)
    cfg.replace(depth=4)                         # a new, validated config
    add_arguments(parser, MyConfig); MyConfig.from_args(parser.parse_args())

A section validates itself when it is made (`__post_init__`): bad values raise
`InputError(<field>, <problem>)`, so a typo fails before any run starts, with one line.
"""
from __future__ import annotations

import argparse
import copy
import contextvars
import dataclasses
import math
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from projects.core import cli
from projects.core.errors import InputError

_META = "medimg"


def setting(default: Any, help: str = "", *, min: float | None = None, max: float | None = None,
            positive: bool = False, unit_interval: bool = False, choices: tuple | None = None,
            cli_flag: bool = True) -> Any:
    """A leaf setting: its default (the papers' value), help text and the checks it must pass.

    min/max: inclusive bounds; positive: > 0; unit_interval: strictly inside (0, 1);
    choices: the allowed values. cli_flag=False keeps a setting off the command line
    (code-only knobs such as the progress bar).
    """
    meta = {"help": help, "min": min, "max": max, "positive": positive, "unit_interval": unit_interval,
            "choices": choices, "cli": cli_flag}
    if type(default).__hash__ is None:  # mutable (list, a config): a fresh copy per instance
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata={_META: meta})
    return dataclasses.field(default=default, metadata={_META: meta})


def section(cls: type) -> Any:
    """A nested section with its own defaults."""
    return dataclasses.field(default_factory=cls, metadata={_META: {"section": True}})


def _meta(field: dataclasses.Field) -> dict:
    return field.metadata.get(_META, {})


def _check_value(name: str, value: Any, meta: dict) -> None:
    """The field's declared bounds, with the platform's usual one-line messages."""
    if meta.get("choices") is not None and value not in meta["choices"]:
        shown = ", ".join(str(c) if c != "" else "'' (none)" for c in meta["choices"])
        raise InputError(name, f"unknown value {value!r}; choose from {shown}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if isinstance(value, float) and math.isnan(value) and (meta.get("min") is not None or meta.get("positive")):
        raise InputError(name, f"must be a number, got {value}")
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and hi is not None and not lo <= value <= hi:
        raise InputError(name, f"must be between {lo} and {hi}, got {value}")
    if lo is not None and value < lo:
        raise InputError(name, f"must be at least {lo}, got {value}")
    if hi is not None and value > hi:
        raise InputError(name, f"must be at most {hi}, got {value}")
    if meta.get("positive") and not value > 0:
        raise InputError(name, f"must be positive, got {value}")
    if meta.get("unit_interval") and not 0 < value < 1:
        raise InputError(name, f"must be in (0, 1), got {value}")


class Section:
    """Base of a settings section: validates its declared bounds when made, then `validate()`."""

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            meta = _meta(field)
            if meta and not meta.get("section"):
                _check_value(field.name, getattr(self, field.name), meta)
        self.validate()

    def validate(self) -> None:
        """Checks that involve several fields or parsing (override)."""


@dataclass(frozen=True)
class Leaf:
    name: str  # the flat name (unique in a config): CLI flag, search-space and param name
    path: tuple[str, ...]  # attribute path from the config
    type: type
    default: Any
    help: str
    cli: bool
    item: type | None = None  # element type of a list setting
    choices: tuple | None = None  # the allowed values, when the setting declares them


def _resolve_type(owner: type, field: dataclasses.Field) -> Any:
    return typing.get_type_hints(owner)[field.name]


def _section_default(field: dataclasses.Field) -> Any:
    if field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return field.default_factory()  # type: ignore[misc]
    return field.default


def leaves(cls: type, prefix: tuple[str, ...] = ()) -> Iterator[Leaf]:
    """Every leaf setting of a (nested) config class, depth first, in declaration order."""
    for field in dataclasses.fields(cls):
        kind = _resolve_type(cls, field)
        meta = _meta(field)
        if meta.get("section"):
            yield from leaves(kind, prefix + (field.name,))
            continue
        yield Leaf(field.name, prefix + (field.name,), _plain_type(kind), _section_default(field),
                   meta.get("help", ""), meta.get("cli", True), _item_type(kind), meta.get("choices"))


def _plain_type(kind: Any) -> type:
    origin = typing.get_origin(kind)
    if origin in (list, tuple):
        return list
    return kind if isinstance(kind, type) else str


def _item_type(kind: Any) -> type | None:
    args = typing.get_args(kind) if typing.get_origin(kind) in (list, tuple) else ()
    return args[0] if args and isinstance(args[0], type) else None


def leaf_map(cls: type) -> dict[str, Leaf]:
    out: dict[str, Leaf] = {}
    sections = {f.name for f in dataclasses.fields(cls)}
    for leaf in leaves(cls):
        if len(leaf.path) > 1 and leaf.name in sections:
            raise TypeError(f"{cls.__name__}: setting {leaf.name!r} has the name of a section; rename one")
        if leaf.name in out:
            raise TypeError(f"{cls.__name__}: setting {leaf.name!r} declared twice "
                            f"({'.'.join(out[leaf.name].path)} and {'.'.join(leaf.path)})")
        out[leaf.name] = leaf
    return out


_IN_PRESET: contextvars.ContextVar[bool] = contextvars.ContextVar("in_preset", default=False)


class Config:
    """Base of a study's top-level config: sections of settings, made, read and replaced by
    flat name. Subclasses are `@dataclass(init=False)` so that this constructor, which takes
    flat names (and whole sections by their names), is the one used."""

    _leaf_cache: ClassVar[dict[type, dict[str, Leaf]]] = {}

    # A study's named recipes (a `preset` setting picks one): name -> {setting: value}.
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}
    # Settings added after measurements were recorded, at the value that changes nothing: the
    # records' keys leave them out at that value (pipeline/real_data.py `unit_settings`), so the
    # records made before them keep naming their units.
    ADDED_LATER: ClassVar[dict[str, Any]] = {}

    def __init__(self, **values: Any):
        sections = {f.name: f for f in dataclasses.fields(self)}
        for name, field in sections.items():
            object.__setattr__(self, name, values.pop(name) if name in values else field.default_factory())
        if values:
            replaced = self.replace(**values)
            for name in sections:
                object.__setattr__(self, name, getattr(replaced, name))
        if "preset" in type(self).settings() and self.preset and not _IN_PRESET.get():
            token = _IN_PRESET.set(True)  # replace() builds configs: they must not apply it again
            try:
                replaced = self.replace(**self._preset_values())
            finally:
                _IN_PRESET.reset(token)
            for name in sections:
                object.__setattr__(self, name, getattr(replaced, name))

    def _preset_values(self) -> dict[str, Any]:
        """The preset's settings that the config leaves at their defaults (a value the user gave
        wins; a setting cannot tell a given default from an omitted one, so it takes the preset's)."""
        presets = type(self).PRESETS
        if self.preset not in presets:
            raise InputError("preset", f"unknown preset {self.preset!r}; choose from {', '.join(presets) or '(none)'}")
        known = type(self).settings()
        return {k: v for k, v in presets[self.preset].items() if getattr(self, k) == known[k].default}

    @classmethod
    def settings(cls) -> dict[str, Leaf]:
        if cls not in Config._leaf_cache:
            Config._leaf_cache[cls] = leaf_map(cls)
        return Config._leaf_cache[cls]

    @classmethod
    def of(cls, **flat: Any):
        """A config from flat setting names (`of(arch="unet", epochs=3)`); the rest default."""
        return cls(**flat)

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails: a flat read of a leaf inside a section.
        leaf = type(self).settings().get(name) if not name.startswith("_") else None
        if leaf is None:
            raise AttributeError(f"{type(self).__name__} has no setting {name!r}")
        value: Any = self
        for part in leaf.path:
            value = object.__getattribute__(value, part)
        return value

    def replace(self, **flat: Any):
        """A new config with these flat settings changed; every touched section re-validates."""
        known = type(self).settings()
        by_section: dict[tuple[str, ...], dict[str, Any]] = {}
        for name, value in flat.items():
            if name not in known:
                raise InputError(name, f"not a setting of {type(self).__name__}; known: {', '.join(known)}")
            by_section.setdefault(known[name].path[:-1], {})[name] = value
        out = self
        for path, values in sorted(by_section.items(), key=lambda kv: -len(kv[0])):
            out = _replace_at(out, path, values)
        return out

    def flat(self) -> dict[str, Any]:
        """Every leaf by its flat name (what a run logs as params)."""
        return {name: getattr(self, name) for name in type(self).settings()}

    @classmethod
    def from_flat(cls, values: Mapping[str, Any]):
        return cls.of(**{k: v for k, v in values.items() if k in cls.settings()})

    @classmethod
    def from_params(cls, params: Mapping[str, str]):
        """A config from a run's logged params (text, as MLflow keeps them); settings the run did
        not log keep their defaults, params that are not settings are ignored."""
        known = cls.settings()
        values = {}
        for name, text in params.items():
            leaf = known.get(name)
            if leaf is None:
                continue
            values[name] = (str(text) if leaf.type is str else
                            [v for v in str(text).split(",") if v] if leaf.type is list else coerce(name, str(text), leaf.type))
        return cls.of(**values)

    @classmethod
    def from_args(cls, args: argparse.Namespace):
        return cls.of(**{name: getattr(args, name) for name, leaf in cls.settings().items()
                         if leaf.cli and hasattr(args, name)})


def _replace_at(obj: Any, path: tuple[str, ...], values: dict[str, Any]) -> Any:
    if not path:
        return dataclasses.replace(obj, **values)
    child = getattr(obj, path[0])
    return dataclasses.replace(obj, **{path[0]: _replace_at(child, path[1:], values)})


# --- the command line, generated ------------------------------------------------------------
def parser_for(kind: type, item: type | None = None) -> Callable[[str], Any]:
    """How a command-line (or MLproject) string becomes a value of this type."""
    if kind is list and item is int:
        return cli.int_list
    if kind is bool:
        return cli.str2bool
    if kind is int:
        return cli.integer
    if kind is float:
        return float  # argparse's own message: "invalid float value: 'fast'"
    if kind is list:
        return cli.str_list
    return str


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_arguments(parser: argparse.ArgumentParser, cls: type, *, defaults: Mapping[str, Any] | None = None,
                  skip: tuple[str, ...] = ()) -> None:
    """One `--flag` per command-line setting of `cls` (a Config or any settings dataclass),
    typed by the field, with its help text and default."""
    known = cls.settings() if issubclass(cls, Config) else leaf_map(cls)
    for name, leaf in known.items():
        if not leaf.cli or name in skip:
            continue
        default = (defaults or {}).get(name, leaf.default)
        parser.add_argument(flag(name), dest=name, type=parser_for(leaf.type, leaf.item), default=default,
                            help=help_text(leaf, default))


def help_text(leaf: Leaf, default: Any) -> str:
    """A flag's help: the setting's text, its allowed values when it declares them and the text
    does not list them already, and its default; `%` escaped (argparse formats help with %)."""
    text = leaf.help
    if leaf.choices and not all(str(c) in text for c in leaf.choices):
        text += f" (one of: {', '.join(map(str, leaf.choices))})"
    if leaf.type is bool and "true" not in text:
        text += " (true | false)"
    shown = (",".join(map(str, default)) if isinstance(default, list) else
             str(default).lower() if isinstance(default, bool) else default)
    return f"{text} (default: {shown})".strip().replace("%", "%%")


def values_from_args(cls: type, args: argparse.Namespace) -> dict[str, Any]:
    """The command-line settings of a plain settings dataclass, by field name."""
    return {name: getattr(args, name) for name, leaf in leaf_map(cls).items() if leaf.cli and hasattr(args, name)}


def coerce(name: str, text: str, kind: type) -> Any:
    """A typed value from text, with the field named in the error (search spaces, --base)."""
    try:
        return parser_for(kind)(text)
    except (argparse.ArgumentTypeError, ValueError) as exc:
        raise InputError(name, f"{text!r} is not a valid {kind.__name__} ({exc})") from None
