"""The Optuna pieces a search is built from, each from a short text spec: pruner, sampler
and storage (SQLite beside the tracking store, an RDB URL, or a journal file)."""
from __future__ import annotations

import re
import sys
import warnings
from pathlib import Path
from typing import Any

from projects.core import runtime
from projects.core.errors import InputError
from projects.search.recovery import RetryDeadTrial

def quiet_optuna() -> None:
    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")


def _spec(text: str) -> tuple[str, dict[str, str], list[str]]:
    """'median:startup=1,warmup=0' -> ('median', {'startup': '1', 'warmup': '0'}, [])."""
    name, _, rest = str(text).strip().partition(":")
    opts, positional = {}, []
    for part in rest.split(","):
        part = part.strip()
        if not part:
            continue
        if "=" in part:
            k, v = part.split("=", 1)
            opts[k.strip().lower()] = v.strip()
        else:
            positional.append(part)
    return name.strip().lower(), opts, positional


def build_pruner(spec: Any, epochs: int, n_trials: int, multi_objective: bool):
    """median | percentile:P | sha | hyperband | threshold:lower=X | none, with options
    startup=N (trials before pruning starts), warmup=N (epochs never pruned), min=N
    (min_resource), factor=N (reduction_factor). Returns (pruner, description)."""
    from optuna import pruners

    if not isinstance(spec, str):
        return spec, type(spec).__name__
    name, opts, positional = _spec(spec)
    if multi_objective and name not in ("", "none", "nop", "off", "false"):
        # Trial.report / should_prune are single-objective only in Optuna.
        print(f"[search] pruner {spec!r} ignored: Optuna cannot prune multi-objective studies",
              file=sys.stderr)
        return pruners.NopPruner(), f"none (multi-objective; asked {spec})"

    def num(key: str, default: float, kind=int):
        try:
            return kind(opts.get(key, default))
        except ValueError:
            raise InputError("--pruner", f"{key}={opts[key]!r} is not a number") from None

    startup = num("startup", max(1, min(5, n_trials // 4)))
    warmup = num("warmup", 0)
    try:
        if name in ("median",):
            pruner = pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=warmup)
        elif name in ("percentile",):
            p = float(positional[0]) if positional else num("percentile", 25.0, float)
            pruner = pruners.PercentilePruner(p, n_startup_trials=startup, n_warmup_steps=warmup)
        elif name in ("sha", "successive_halving", "successivehalving", "asha"):
            pruner = pruners.SuccessiveHalvingPruner(min_resource=num("min", 1), reduction_factor=num("factor", 3))
        elif name in ("hyperband",):
            pruner = pruners.HyperbandPruner(min_resource=num("min", 1), max_resource=max(epochs, 1),
                                             reduction_factor=num("factor", 3))
        elif name in ("threshold",):
            lower = opts.get("lower")
            upper = opts.get("upper")
            pruner = pruners.ThresholdPruner(lower=float(lower) if lower is not None else None,
                                             upper=float(upper) if upper is not None else None,
                                             n_warmup_steps=warmup)
        elif name in ("", "none", "nop", "off", "false"):
            pruner = pruners.NopPruner()
        else:
            raise InputError("--pruner", f"unknown pruner {spec!r}; use median, percentile:P, sha, hyperband, "
                                         "threshold:lower=X or none (options: startup=N,warmup=N,min=N,factor=N)")
    except (TypeError, ValueError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError("--pruner", f"{spec!r}: {exc}") from None
    return pruner, _describe(pruner)


def _describe(obj: Any) -> str:
    keep = {k.lstrip("_"): v for k, v in vars(obj).items()
            if isinstance(v, (int, float, str, bool)) and not k.startswith("__")}
    return f"{type(obj).__name__}({', '.join(f'{k}={v}' for k, v in sorted(keep.items()))})"


# A discrete space of at most this many times the trial budget is enumerated (BruteForceSampler):
# TPE re-proposes cells it has tried in small spaces (each one a proposal spent), and with few
# more cells than trials there is nothing for a model of the space to learn.
ENUMERATE_UP_TO = 3


def build_sampler(spec: str, n_objectives: int, n_trials: int, seed: int | None, space_size: int | None = None):
    """The sampler for a spec; `auto` enumerates a small discrete space (space_size cells)."""
    from optuna import samplers

    name, opts, _ = _spec(spec or "auto")
    startup = int(opts.get("startup", max(3, min(10, n_trials // 3))))
    if name == "auto" and space_size is not None and space_size <= ENUMERATE_UP_TO * n_trials:
        name = "brute"
    if name in ("brute", "bruteforce", "grid"):
        if space_size is None:
            raise InputError("--sampler", "brute force needs a discrete space (every field a list or an integer "
                                          "range); this one has a continuous range")
        sampler = samplers.BruteForceSampler(seed=seed)
        return sampler, f"BruteForceSampler(seed={seed}, {space_size} configs)"
    if name in ("auto", "tpe", "motpe"):
        # TPE handles one objective and several (MOTPE); it suits budgets of tens of trials,
        # where NSGA-II's generations (population 50 by default) would be mostly random.
        sampler = samplers.TPESampler(n_startup_trials=startup, seed=seed, constant_liar=True)
    elif name in ("nsga2", "nsgaii"):
        pop = int(opts.get("population", max(4, min(50, n_trials // 2))))
        sampler = samplers.NSGAIISampler(population_size=pop, seed=seed)
    elif name in ("nsga3", "nsgaiii"):
        pop = int(opts.get("population", max(4, min(50, n_trials // 2))))
        sampler = samplers.NSGAIIISampler(population_size=pop, seed=seed)
    elif name == "random":
        sampler = samplers.RandomSampler(seed=seed)
    elif name == "gp":
        sampler = samplers.GPSampler(seed=seed, n_startup_trials=startup)
    else:
        raise InputError("--sampler", f"unknown sampler {spec!r}; use auto, brute, tpe, nsga2, nsga3, random or gp")
    detail = f"population={pop}" if name.startswith("nsga") else "" if name == "random" else f"startup={startup}"
    return sampler, f"{type(sampler).__name__}(seed={seed}{', ' + detail if detail else ''})"


def default_storage_url() -> str:
    """SQLite file beside the tracking store (mlflow.db's folder, else MEDIMG_STORE)."""
    uri = runtime.tracking_uri()
    folder = runtime.store_dir()
    if uri.startswith("sqlite:///"):
        folder = Path(uri[len("sqlite:///"):]).expanduser().resolve().parent
    return f"sqlite:///{folder / 'optuna.db'}"


def _journal_path(spec: str) -> Path | None:
    if spec.startswith("journal:"):
        return Path(spec[len("journal:"):]).expanduser().resolve()
    if "://" not in spec and spec.endswith((".log", ".journal", ".jsonl")):
        return Path(spec).expanduser().resolve()
    return None


def resolve_storage_url(spec: str) -> str:
    spec = (spec or "").strip()
    if not spec:
        return default_storage_url()
    journal = _journal_path(spec)
    if journal is not None:
        return f"journal:{journal}"
    if "://" not in spec:
        raise InputError("--storage", f"{spec!r}: use an RDB URL (sqlite:///file.db, postgresql://user@host/db) "
                                      "or journal:<file>")
    return _postgres_driver(spec)


def _postgres_driver(url: str) -> str:
    """postgres:// (the short form some tools print) as postgresql://, which SQLAlchemy knows;
    its default driver for it, psycopg 3, is a dependency of the platform."""
    return "postgresql://" + url[len("postgres://"):] if url.startswith("postgres://") else url


def open_storage(url: str, heartbeat_s: int, max_retry: int):
    """Optuna storage for the URL: RDB with heartbeat + retry of dead trials, or a journal file."""
    from optuna import storages

    quiet_optuna()
    if url.startswith("journal:"):
        path = Path(url[len("journal:"):])
        path.parent.mkdir(parents=True, exist_ok=True)
        from optuna.storages.journal import JournalFileBackend

        return storages.JournalStorage(JournalFileBackend(str(path)))
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:"):
        Path(url[len("sqlite:///"):]).expanduser().parent.mkdir(parents=True, exist_ok=True)
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    else:
        kwargs["engine_kwargs"] = {"pool_pre_ping": True}
    try:
        return storages.RDBStorage(
            url, heartbeat_interval=max(1, int(heartbeat_s)), grace_period=max(2, 2 * int(heartbeat_s)),
            heartbeat_stale_trial_callback=RetryDeadTrial(max_retry=max_retry),
            **kwargs)
    except Exception as exc:  # bad URL, unreachable server, missing driver
        raise InputError("--storage", f"cannot open Optuna storage {safe_url(url)}: {type(exc).__name__}: {exc}") from None


def safe_url(url: str) -> str:
    """The storage URL without its password (for params and messages)."""
    if "://" not in url or url.startswith("sqlite"):
        return url
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


