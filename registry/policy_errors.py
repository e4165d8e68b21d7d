"""pydantic's validation errors as the one line a policy's author reads:
`<key path>: <key>: <problem>` (the caller adds the file), e.g.

    aliases.champion: pick: expected 'max <metric>' or 'min <metric>', got 'best test_jaccard'
    unknown key 'colour' (allowed here: aliases, candidates, description, ...)
    gates.pareto: costs: name at least one cost metric (model_size_mb, cpu_latency_ms_p50, ...)
"""
from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel, ValidationError

_TYPE_WORDS = {"bool", "float", "int", "str", "none", "list", "tuple", "dict"}
_FREE_KEYS = {"aliases", "floor", "ceiling"}  # mappings whose keys the author names


def _num(value: Any) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else repr(value)


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


def _clean(loc: tuple) -> list:
    """The key path without pydantic's union-member tags (`bool`, `SmokeOptions`, `function-...`)."""
    out: list = []
    for i, part in enumerate(loc):
        free = i > 0 and loc[i - 1] in _FREE_KEYS
        if isinstance(part, str) and not free and (
                part in _TYPE_WORDS or part[:1].isupper() or any(c in part for c in "[(-") and part != "[key]"):
            continue
        out.append(part)
    return [p for p in out if p != "[key]"]


def _path(parts: list) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _allowed(model: type[BaseModel], parts: list) -> list[str]:
    """The keys allowed at a path of the file (for `unknown key` errors)."""
    current: Any = model
    skip = False
    for part in parts:
        if skip or isinstance(part, int):
            skip = False
            continue
        fields = getattr(current, "model_fields", {})
        if part not in fields:
            return []
        skip = part in _FREE_KEYS
        annotation = fields[part].annotation
        found = _models_in(annotation)
        current = found[0] if found else annotation
    return sorted(getattr(current, "model_fields", {}))


def _problem(err: dict, model: type[BaseModel], parts: list) -> str:
    kind, value, ctx = err["type"], err.get("input"), err.get("ctx") or {}
    if kind == "extra_forbidden":
        allowed = _allowed(model, parts[:-1])
        return f"unknown key {parts[-1]!r}" + (f" (allowed here: {', '.join(allowed)})" if allowed else "")
    words = {
        "missing": "required",
        "string_type": f"expected text, got {_kind(value)}",
        "bool_type": f"expected true or false, got {value!r}",
        "bool_parsing": f"expected true or false, got {value!r}",
        "model_type": f"expected a mapping, got {_kind(value)}",
        "dict_type": f"expected a mapping, got {_kind(value)}",
        "model_attributes_type": f"expected a mapping, got {_kind(value)}",
        "tuple_type": f"expected a list, got {value!r}",
        "list_type": f"expected a list, got {value!r}",
        "int_type": f"expected a whole number, got {value!r}",
        "int_parsing": f"expected a whole number, got {value!r}",
        "int_from_float": f"expected a whole number, got {value!r}",
        "float_type": f"expected a finite number, got {value!r}",
        "float_parsing": f"expected a finite number, got {value!r}",
        "greater_than_equal": f"must be at least {_num(ctx.get('ge'))}, got {_num(value)}",
        "greater_than": f"must be above {_num(ctx.get('gt'))}, got {_num(value)}",
        "less_than": f"must be below {_num(ctx.get('lt'))}, got {_num(value)}",
        "literal_error": "expected one of " + str(ctx.get("expected", "")).replace("'", "").replace(" or ", ", ")
                         + f", got {value!r}",
    }
    return words.get(kind, err["msg"])


def one_line(exc: ValidationError, model: type[BaseModel]) -> str:
    """The most specific of the errors (the deepest key), as `<parent>: <key>: <problem>`."""
    errors = exc.errors(include_url=False)
    err = max(errors, key=lambda e: len(_clean(e["loc"])))
    parts = _clean(err["loc"])
    text = _problem(err, model, parts)
    # A value of neither type of a union (`smoke_predict: 3`): every type it could have had.
    others = [_problem(e, model, parts) for e in errors if _clean(e["loc"]) == parts]
    if len(others) > 1 and all(o.startswith("expected ") and ", got " in o for o in others):
        text = ("expected " + " or ".join(dict.fromkeys(o[len("expected "):o.rindex(", got ")] for o in others))
                + text[text.rindex(", got "):])
    if err["type"] == "extra_forbidden":
        parts = parts[:-1]
    elif parts:
        text = f"{_path(parts[-1:])}: {text}" if not isinstance(parts[-1], int) else text
        parts = parts[:-1] if not isinstance(parts[-1], int) else parts
    return f"{_path(parts)}: {text}" if parts else text
