"""Training at the machine's speed: fp32 NCHW, channels-last, bf16 and channels-last + bf16
training steps of each study's reference models, interleaved in one run, against the
machine's GEMM rate measured in the same run; then the accuracy check behind the automatic
precision (projects/core/device.py).

1. Speed: one Adam step per variant from the same weights (a copy per variant), variants
   interleaved round by round (A B C D A B C D ...), medians; images/s, GFLOP/s of the step
   (forward + backward counted by torch's FlopCounterMode) and that as a share of the fp32
   (and bf16) torch.mm rate probed between rounds.
2. Accuracy: the study's quick recipe for the model, trained through the study's own
   `run(config)` in fp32 with two seeds (the run-to-run spread) and in the fastest variant's
   precision with the first seed; the final validation metric of each. A precision is the
   automatic choice when it is the fastest and its metric is not below fp32's by more than
   the fp32 spread (one-sided: being better than fp32 is not a reason to refuse it).

`python -m benchmarks --sections training --device cuda` does both on a GPU (the rate probes
become torch.mm on it); the other sections always measure the CPU, as the papers' protocol does.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import mlflow
import torch
from mlflow.tracking import MlflowClient
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.flops import rate_probes, summarise_probes
from projects.core import device as dev
from projects.core import tracking
from projects.core.bench import Section, Table, interleaved, load_average, median, metric_key
from projects.core.specs.benchmarks import TrainingReference
from projects.core.study import Study, all_studies

@runtime_checkable
class TrainingStudy(Protocol):
    """A study with models whose training step this benchmark times (its quick recipes)."""

    def training_references(self) -> Sequence[TrainingReference]: ...


VARIANTS = {  # name -> (channels_last, precision)
    "fp32": (False, "fp32"), "channels_last": (True, "fp32"), "bf16": (False, "bf16"), "cl+bf16": (True, "bf16")}


@dataclass(frozen=True)
class Settings:
    rounds: int
    parity: bool  # train the quick recipes (minutes) or time the steps only
    epochs: int | None  # None: the recipe's own
    batch_size: int | None = None  # None: the recipe's; quick mode times small batches
    small_inputs: bool = False  # quick mode: each reference's quick_step_settings (a smoke run, seconds)
    device: str = "cpu"  # where the steps are timed and the parity runs train (--device)


def measured_variants(device: torch.device = torch.device("cpu")) -> dict[str, tuple[bool, str]]:
    """The variants worth timing here: bf16 ones only where the device does bf16 natively
    (emulated on a CPU, they take minutes to measure a precision `auto` never picks there)."""
    native = torch.cuda.is_bf16_supported() if device.type == "cuda" else dev.native_bf16()
    return {name: v for name, v in VARIANTS.items() if v[1] != "bf16" or native}


def settings(quick: bool, device: str = "cpu") -> Settings:
    if quick:
        return Settings(rounds=1, parity=False, epochs=None, batch_size=2, small_inputs=True, device=device)
    return Settings(rounds=6, parity=True, epochs=None, device=device)


def step_fn(model, loss_fn, inputs, targets, channels_last: bool, precision: str,
            device: torch.device = torch.device("cpu")):
    """One Adam step of a private copy of the model on `device` in a variant's memory format and
    precision. The step ends in loss.item(), which waits for a GPU to finish it."""
    model = copy.deepcopy(model).to(device).train()
    inputs, targets = inputs.to(device), targets.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with dev.autocast(device, precision):
            loss = loss_fn(model(inputs), targets)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def step_flops(model, loss_fn, inputs, targets) -> int:
    """FLOPs of one training step (forward and backward)."""
    model = copy.deepcopy(model).train()
    with FlopCounterMode(display=False) as counter:
        loss_fn(model(inputs), targets).backward()
    return int(counter.get_total_flops())


def time_steps(study: Study, ref: TrainingReference, cfg: Settings) -> dict:
    overrides = (dict(ref.quick_step_settings) if cfg.small_inputs else {}) | (
        {"batch_size": cfg.batch_size} if cfg.batch_size else {})
    config = study.config_cls(**(dict(ref.recipe) | dict(ref.step_settings) | overrides))
    torch.manual_seed(0)
    model, loss_fn, inputs, targets = ref.step(config)
    device = dev.resolve_device(cfg.device)
    variants = measured_variants(device)
    fns = {name: step_fn(model, loss_fn, inputs, targets, cl, p, device) for name, (cl, p) in variants.items()}
    probes = rate_probes(device)
    fns |= {f"probe:{k}": fn for k, (fn, _) in probes.items()}
    samples = interleaved(fns, rounds=cfg.rounds, warmup=1)
    rates = summarise_probes({k: samples[f"probe:{k}"] for k in probes}, {k: f for k, (_, f) in probes.items()})
    flops = step_flops(model, loss_fn, inputs, targets)
    out = {"device": str(device), "flops": flops, "batch": len(inputs), "shape": "x".join(map(str, inputs.shape[1:])),
           "rates": rates, "variants": {}}
    for name, (_, precision) in variants.items():
        seconds = median(samples[name])
        limit = rates["bf16_gflops" if precision == "bf16" else "fp32_gflops"]
        out["variants"][name] = {"step_s": seconds, "images_per_s": len(inputs) / seconds,
                                 "gflops": flops / seconds / 1e9, "of_limit": flops / seconds / 1e9 / limit}
    base = out["variants"]["fp32"]["step_s"]
    for v in out["variants"].values():
        v["speedup"] = base / v["step_s"]
    return out


def final_val(study: Study, ref: TrainingReference, precision: str, seed: int, experiment_id: str,
              device: str = "cpu") -> float:
    """The recipe trained through the study's run(config) on `device`; its last validation metric."""
    config = study.config_cls(**dict(ref.recipe), precision=precision, seed=seed, device=device)
    prepared = study.prepare(config)
    with mlflow.start_run(experiment_id=experiment_id, nested=True, run_name=f"training-{ref.key}-{precision}-s{seed}",
                          tags={"benchmark": "training"}) as run:
        study.run(config, prepared, run_kind="benchmark")
    history = MlflowClient().get_metric_history(run.info.run_id, study.headline.selection)
    return history[-1].value if history else math.nan


def parity(study: Study, ref: TrainingReference, fastest: str, experiment_id: str, device: str = "cpu") -> dict:
    fp32 = [final_val(study, ref, "fp32", seed, experiment_id, device) for seed in (0, 1)]
    out = {"fp32_seed0": fp32[0], "fp32_seed1": fp32[1], "spread": abs(fp32[0] - fp32[1]), "choice": "fp32"}
    if fastest != "fp32":
        out["fastest_seed0"] = final_val(study, ref, fastest, 0, experiment_id, device)
        within = out["fastest_seed0"] >= fp32[0] - out["spread"] - 1e-9
        out["choice"] = fastest if within else "fp32"
    return out


def _tables(results: dict, cfg: Settings) -> list[Table]:
    speed = Table("Training step: images/s, GFLOP/s and share of the machine's rate (same run)",
                  ["model", "input", "variant", "step ms", "images/s", "GFLOP/s", "of fp32/bf16 mm rate", "x fp32"])
    accuracy = Table("Accuracy parity: final validation metric of the quick recipe", [
        "model", "metric", "fp32 seed 0", "fp32 seed 1", "fp32 spread", "fastest variant (seed 0)", "automatic choice"])
    for key, r in results.items():
        for name, v in r["speed"]["variants"].items():
            speed.add(r["label"], f"{r['speed']['batch']}x{r['speed']['shape']}", name, 1000 * v["step_s"],
                      v["images_per_s"], v["gflops"], f"{100 * v['of_limit']:.0f}%", v["speedup"])
        if "parity" in r:
            p = r["parity"]
            accuracy.add(r["label"], r["metric"], p["fp32_seed0"], p["fp32_seed1"], p["spread"],
                         p.get("fastest_seed0"), p["choice"])
    first = next(iter(results.values()))["speed"] if results else {}
    rates, device = first.get("rates", {}), first.get("device", "cpu")
    bf16 = (f"bf16 mm {rates.get('bf16_gflops', math.nan):.0f} GFLOP/s" if device != "cpu" or dev.native_bf16() else
            f"bf16 not measured: this CPU ({dev.cpu_kind()}) has no bf16 instructions (emulated) and `auto` "
            f"trains in fp32 on it")
    speed.notes.append(f"device {device}; its rate in this run: fp32 mm {rates.get('fp32_gflops', math.nan):.0f} "
                       f"GFLOP/s, {bf16}; load average {load_average()}")
    return [speed] + ([accuracy] if cfg.parity else [])


def run(quick: bool, experiment_id: str | None = None, log=print, device: str = "cpu") -> Section:
    cfg, sec, results = settings(quick, device), Section("training"), {}
    experiment_id = experiment_id or tracking.ensure_experiment(tracking.EXPERIMENTS["benchmark"])
    for study in (s for s in all_studies() if isinstance(s, TrainingStudy)):
        for ref in study.training_references():
            log(f"[benchmarks] training: {ref.label} ...")
            r = results[ref.key] = {"label": ref.label, "metric": study.headline.selection,
                                    "speed": time_steps(study, ref, cfg)}
            fastest = max(r["speed"]["variants"], key=lambda n: r["speed"]["variants"][n]["speedup"])
            precision = VARIANTS[fastest][1]
            if cfg.parity:
                r["parity"] = parity(study, ref, precision, experiment_id, cfg.device)
            for name, v in r["speed"]["variants"].items():
                sec.metrics[metric_key("training", ref.key, name, "speedup")] = v["speedup"]
                sec.metrics[metric_key("training", ref.key, name, "images_per_s")] = v["images_per_s"]
            best = r["speed"]["variants"][fastest]
            sec.headline.append(f"{ref.label}: fastest {fastest} {best['speedup']:.2f}x fp32 NCHW "
                                f"({best['images_per_s']:.1f} images/s, {100 * best['of_limit']:.0f}% of the "
                                f"{precision} mm rate)" + (f"; automatic precision: {r['parity']['choice']}"
                                                           if "parity" in r else ""))
    sec.tables.extend(_tables(results, cfg))
    return sec
