"""CPU runtimes for U-Net (32, 5), ELU-Net (8, 5) and resnet101: which is fastest, and is
it still correct?

For each model (trained briefly on the embedded data, so accuracy changes mean something),
every runtime variant below is
- checked: max |output - eager output| on the test images, and the study's metric on the
  test data (per-tile Jaccard for the segmenters, macro-F1 for the classifier) against
  eager's (exact variants must stay within 1e-4 of eager; approximate ones - bf16, int8 -
  count as correct when the metric moves by less than 0.005, and only where eager's metric
  beats the trivial baseline: otherwise an unchanged metric proves nothing);
- timed in steady state: single-image predictions (median and p95) and batched predictions
  (per image), all variants interleaved round by round, with a float32 and a bfloat16
  `torch.mm` sample between rounds (the machine's rate for benchmarks.flops);
- timed with the paper's protocol: load the saved model (weights file, .onnx, TorchScript
  file) and predict N tiles in batches of 8, variants interleaved.

Variants (the `VARIANTS` registry; each has a `prepare` that builds its saved artefact,
untimed, and a `load` that goes from that artefact to a predictor, timed by the protocol):

    eager        PyTorch eager, fp32, NCHW, torch.no_grad(): what a user writes
    torch_cl     torch.inference_mode + batch norm folded into convs + channels-last, fp32
    torchscript  torch.jit.trace + freeze (folds batch norm) + optimize_for_inference, fp32
    compile      torch.compile (inductor, freezing, channels-last), fp32    [full mode only]
    torch_bf16   torch_cl in bfloat16 (weights and activations; AVX512-BF16 here)
    compile_bf16 compile in bfloat16                                         [full mode only]
    ort          ONNX Runtime fp32: all graph optimisations, no spinning threads
    ort_int8     ONNX Runtime, static int8 (QDQ, per-channel weights, calibrated on
                 training tiles)

    fastest_runtime(results, model)  -> the fastest correct variant of a results dict
    python -m benchmarks.runtimes --quick true
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from projects.core.bench import Section, Table, interleaved, load_average, median, metric_key, percentile
from benchmarks.flops import count_flops, rate_probes, summarise_probes
from torch.utils.data import DataLoader, Subset

from projects.core import onnx_runtime
from projects.core.device import cpu_kind, native_bf16
from projects.core.onnx_runtime import fold_batchnorm
from projects.core.specs.benchmarks import CaseData as StudyCaseData, ReferenceModel
from projects.core.study import all_studies
from projects.core.training import TrainConfig, fit, seed_everything

EXACT_ATOL = 1e-4  # exact variants: outputs within this of eager's
METRIC_TOLERANCE = 0.005  # approximate variants: |change of Jaccard / F1| below this
TARGET_SPEEDUP = 1.5

Predict = Callable[[np.ndarray], np.ndarray]


# --- settings -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Settings:
    quick: bool
    size: int  # input height = width
    batch_size: int  # batched steady state and the paper's protocol
    single_rounds: int
    single_repeat: int
    batch_rounds: int
    protocol_n: int  # the paper's N
    protocol_rounds: int
    accuracy_n: int  # test images for the accuracy check (0: all)
    variants: tuple[str, ...]
    models: tuple[str, ...]


def settings(quick: bool, models: tuple[str, ...] | None = None, variants: tuple[str, ...] | None = None) -> Settings:
    # bf16 runtimes only where the CPU does bf16 natively (emulated, one takes minutes), unless named
    all_variants = tuple(name for name, v in VARIANTS.items() if not v.bf16 or native_bf16())
    if quick:
        return Settings(True, 128, 8, single_rounds=3, single_repeat=2, batch_rounds=2, protocol_n=8,
                        protocol_rounds=1, accuracy_n=8,
                        variants=variants or tuple(v for v in all_variants if VARIANTS[v].quick),
                        models=models or tuple(reference_models()))
    return Settings(False, 256, 8, single_rounds=6, single_repeat=3, batch_rounds=4, protocol_n=57,
                    protocol_rounds=2, accuracy_n=0, variants=variants or all_variants,
                    models=models or tuple(reference_models()))


# --- models and their data ------------------------------------------------------------------------
# A study may declare the models it wants measured (a MeasuredStudy): how to build, train
# briefly and score each one. ModelCase is that declaration.
ModelCase = ReferenceModel
CaseData = StudyCaseData


@runtime_checkable
class MeasuredStudy(Protocol):
    """A study with models for the runtime and FLOP sections to measure."""

    def reference_models(self) -> Sequence[ReferenceModel]: ...


def reference_models() -> dict[str, ReferenceModel]:
    return {m.key: m for study in all_studies() if isinstance(study, MeasuredStudy) for m in study.reference_models()}


def case_data(case: ModelCase, size: int) -> CaseData:
    """The embedded data of the model's study at `size` px (tiles / films), cached on disk."""
    return case.data(size)


def _weights_dir() -> Path:
    from projects.core import runtime

    return runtime.cache_dir() / "benchmarks" / "weights"


def _recipe(case: ModelCase) -> dict:
    recipe = {"model": case.key, "size": case.train_size_full, "steps": case.steps_full, "lr": case.lr,
              "batch": 8, "v": 2}
    if case.pos_weight != 1.0:
        recipe["pos_weight"] = case.pos_weight
    return recipe


def _recipe_path(recipe: dict) -> Path:
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:10]
    return _weights_dir() / f"{recipe['model']}-{digest}.pt"


def trained_weights(case: ModelCase, quick: bool) -> tuple[Path, str]:
    """Weights trained on the embedded data (cached on disk: trained once per recipe).

    The full run trains them (recipe: see ModelCase) and leaves them in the cache; quick mode
    uses them when present and otherwise the untrained (seeded) initialisation, labelled as
    such: its accuracy deltas then only show that outputs moved, not what a trained model
    loses (a few training steps, tried, gave no better: Jaccard 0.01 after 6 steps).
    """
    recipe = _recipe(case)
    path = _recipe_path(recipe)
    how = f"trained {case.steps_full} steps x 8 at {case.train_size_full}px"
    if path.is_file():
        return path, how + " (cached)"
    if quick:
        untrained = _weights_dir() / f"{case.key}-untrained-seed0.pt"
        if not untrained.is_file():
            torch.manual_seed(0)
            _save_atomic(case.build().state_dict(), untrained)
        return untrained, "UNTRAINED weights (quick mode without a full run's cache: accuracy deltas indicative only)"
    started = time.perf_counter()
    model = _train(case, case_data(case, recipe["size"]), recipe)
    _save_atomic(model.state_dict(), path)
    print(f"[benchmarks] trained {case.label} for the accuracy check in {time.perf_counter() - started:.0f} s "
          f"({how})", file=sys.stderr, flush=True)
    return path, how


def _save_atomic(state: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(state, tmp)
    tmp.replace(path)


def _train(case: ModelCase, data: CaseData, recipe: dict) -> nn.Module:
    gen = seed_everything(0)
    model = case.build()
    dataset, loss_fn = case.training(data, recipe)
    n = min(len(dataset), recipe["steps"] * recipe["batch"])
    epochs = max(1, -(-recipe["steps"] * recipe["batch"] // len(dataset)))  # more steps than tiles: repeat
    dataset = Subset(dataset, torch.randperm(len(dataset), generator=gen)[:n].tolist())
    loader = DataLoader(dataset, batch_size=recipe["batch"], shuffle=True, generator=gen, drop_last=True)
    fit(model, loader, None, loss_fn, TrainConfig(epochs=epochs, lr=recipe["lr"], progress=False),
        evaluate=lambda m, l: {}, log=False)
    return model.eval()


# --- helpers for the torch variants -----------------------------------------------------------------
def _numpy(out: torch.Tensor) -> np.ndarray:
    return out.float().numpy()


# --- variants ---------------------------------------------------------------------------------------
@dataclass
class Context:
    case: ModelCase
    weights: Path  # the saved fp32 weights (state_dict)
    workdir: Path
    example: np.ndarray  # (1, C, S, S)
    calibration: np.ndarray  # training images for int8 calibration
    batch_size: int


class Variant:
    name = ""
    label = ""
    exact = True  # expected within EXACT_ATOL of eager
    quick = True  # part of quick mode
    bf16 = False  # measured by default only where bf16 is native (projects/core/device.native_bf16)

    def prepare(self, ctx: Context) -> None:
        """Build the saved artefact from the fp32 weights (not timed by the protocol)."""

    def load(self, ctx: Context) -> Predict:
        """From the saved artefact to a predictor (timed by the paper's protocol)."""
        raise NotImplementedError

    def fixed_load_s(self) -> float | None:
        """A load time measured once at prepare (compile), instead of per protocol round."""
        return None


def _load_fp32(ctx: Context) -> nn.Module:
    from projects.core.efficiency import load_weights

    return load_weights(ctx.case.build(), ctx.weights).eval()


class Eager(Variant):
    name, label = "eager", "PyTorch eager (fp32, NCHW, no_grad)"

    def load(self, ctx):
        model = _load_fp32(ctx)

        def predict(x):
            with torch.no_grad():
                return _numpy(model(torch.from_numpy(x)))

        return predict


class TorchChannelsLast(Variant):
    name, label = "torch_cl", "PyTorch inference_mode + BN folded + channels-last (fp32)"
    dtype = torch.float32

    def load(self, ctx):
        model = fold_batchnorm(_load_fp32(ctx)).to(memory_format=torch.channels_last)
        if self.dtype != torch.float32:
            model = model.to(self.dtype)
        dtype = self.dtype

        def predict(x):
            with torch.inference_mode():
                t = torch.from_numpy(x).to(dtype).contiguous(memory_format=torch.channels_last)
                return _numpy(model(t))

        return predict


class TorchBF16(TorchChannelsLast):
    name, label = "torch_bf16", "PyTorch bf16 + BN folded + channels-last"
    exact, bf16 = False, True
    dtype = torch.bfloat16


class TorchScript(Variant):
    name, label = "torchscript", "TorchScript trace + freeze + optimize_for_inference (fp32)"

    def prepare(self, ctx):
        model = _load_fp32(ctx)
        with torch.no_grad():
            traced = torch.jit.freeze(torch.jit.trace(model, torch.from_numpy(ctx.example)))
        self.path = ctx.workdir / f"{ctx.case.key}.torchscript.pt"
        torch.jit.save(traced, str(self.path))

    def load(self, ctx):
        module = torch.jit.optimize_for_inference(torch.jit.load(str(self.path)))

        def predict(x):
            with torch.no_grad():
                return _numpy(module(torch.from_numpy(x)))

        return predict


class Compiled(Variant):
    name, label = "compile", "torch.compile (inductor, freezing, channels-last, fp32)"
    quick = False  # a cold compile costs minutes here (122 s for ELU-Net on a busy machine)
    dtype = torch.float32

    def prepare(self, ctx):
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True
        started = time.perf_counter()
        model = _load_fp32(ctx).to(memory_format=torch.channels_last)
        if self.dtype != torch.float32:
            model = model.to(self.dtype)
        compiled = torch.compile(model, dynamic=False)
        dtype = self.dtype

        def predict(x):
            with torch.no_grad():
                return _numpy(compiled(torch.from_numpy(x).to(dtype).contiguous(memory_format=torch.channels_last)))

        # Compiled for the shapes the protocol and the steady state use: batch 1 and batch B.
        predict(ctx.example)
        predict(np.repeat(ctx.example, ctx.batch_size, 0))
        self._compile_s = time.perf_counter() - started
        self._predict = predict

    def load(self, ctx):
        return self._predict

    def fixed_load_s(self):
        return self._compile_s


class CompiledBF16(Compiled):
    name, label = "compile_bf16", "torch.compile (inductor, freezing, channels-last, bf16)"
    exact, bf16 = False, True
    dtype = torch.bfloat16


class OnnxRuntime(Variant):
    name, label = "ort", "ONNX Runtime fp32 (graph opt. ALL, no spinning)"
    quantize = False

    def prepare(self, ctx):
        model = _load_fp32(ctx)
        path = onnx_runtime.export_onnx(model, torch.from_numpy(ctx.example), ctx.workdir / f"{ctx.case.key}.onnx")
        if self.quantize:
            path = onnx_runtime.quantize_int8(path, ctx.workdir / f"{ctx.case.key}.int8.onnx", ctx.calibration)
        self.path = path

    def load(self, ctx):
        session = onnx_runtime.make_session(self.path)
        return lambda x: onnx_runtime.run_session(session, x)


class OnnxRuntimeInt8(OnnxRuntime):
    name, label = "ort_int8", "ONNX Runtime static int8 (QDQ, per-channel)"
    exact = False
    quantize = True


VARIANTS: dict[str, Variant] = {v.name: v for v in (Eager(), TorchChannelsLast(), TorchScript(), Compiled(),
                                                     TorchBF16(), CompiledBF16(), OnnxRuntime(), OnnxRuntimeInt8())}


# --- accuracy -----------------------------------------------------------------------------------------
def task_metric(case: ModelCase, data: CaseData, outputs: np.ndarray, n: int) -> float:
    """The study's metric of the model on the first n test inputs (per-tile Jaccard, macro-F1)."""
    return case.score(data, outputs, n)


def baseline_metric(case: ModelCase, data: CaseData, n: int) -> float:
    """The same metric for the trivial predictor the study logs as its baseline."""
    return case.baseline(data, n)


def approximate_correct(eager_metric: float, baseline: float, delta: float) -> bool | None:
    """Whether an approximate (bf16, int8) variant is correct: |metric change| < 0.005, but only
    when eager's metric beats the trivial baseline. A model at or below its baseline predicts
    (nearly) one thing everywhere, so an unchanged metric says nothing: None (= unverified)."""
    if not eager_metric > baseline:
        return None
    return abs(delta) < METRIC_TOLERANCE


def agreement(case: ModelCase, ref: np.ndarray, out: np.ndarray) -> float:
    """Share of pixels (segmentation) or inputs (classification) predicted the same as eager."""
    return case.agreement(ref, out)


def _predict_all(predict: Predict, x: np.ndarray, batch: int) -> np.ndarray:
    return np.concatenate([predict(np.ascontiguousarray(x[i:i + batch])) for i in range(0, len(x), batch)])


# --- the section -----------------------------------------------------------------------------------------
@dataclass
class RuntimeRun:
    section: Section
    results: dict = field(default_factory=dict)


def fastest_runtime(model_results: dict, by: str = "protocol_total_s", exact_only: bool = False
                    ) -> tuple[str | None, float]:
    """(name, speed-up over eager) of the fastest CORRECT variant of one model's results:
    exact (max |diff| <= 1e-4) or with |metric change| < 0.005 (exact_only: the exact ones
    only). `by`: protocol_total_s, single_p50_s or batch_per_image_s."""
    variants = model_results["variants"]
    base = variants.get("eager", {}).get(by)
    best, best_time = None, float("inf")
    for name, v in variants.items():
        if v.get("error") or not v.get("correct") or not v.get(by):
            continue
        if exact_only and not (v.get("max_abs_diff", float("inf")) <= EXACT_ATOL):
            continue
        if v[by] < best_time:
            best, best_time = name, v[by]
    return best, (base / best_time if best and base else float("nan"))


def _measure_model(case: ModelCase, cfg: Settings, probes: dict, probe_samples: dict,
                   log: Callable[[str], None]) -> dict:
    from projects.core.efficiency import count_params

    data = case_data(case, cfg.size)
    weights, how = trained_weights(case, cfg.quick)
    n_acc = len(data.test) if not cfg.accuracy_n else min(cfg.accuracy_n, len(data.test))
    test = data.test[:n_acc]
    rng = np.random.default_rng(0)
    calibration = data.train[rng.choice(len(data.train), size=min(32 if not cfg.quick else 8, len(data.train)),
                                        replace=False)]
    example = data.test[:1]
    flops = count_flops(case.build().eval(), torch.from_numpy(example))
    res: dict = {"label": case.label, "trained": how, "flops": flops,
                 "params": count_params(case.build()), "data": data.source, "accuracy_n": n_acc,
                 "metric_name": case.metric_name, "variants": {}}
    with tempfile.TemporaryDirectory() as tmp:
        ctx = Context(case, weights, Path(tmp), example, calibration, cfg.batch_size)
        predictors: dict[str, Predict] = {}
        reference = None
        for name in cfg.variants:
            variant = VARIANTS[name]
            v = res["variants"].setdefault(name, {"label": variant.label, "exact": variant.exact})
            try:
                started = time.perf_counter()
                variant.prepare(ctx)
                v["prepare_s"] = time.perf_counter() - started
                predict = variant.load(ctx)
                outputs = _predict_all(predict, test, cfg.batch_size)
            except Exception as exc:  # noqa: BLE001 - a variant that fails is reported, not fatal
                v["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
                log(f"[benchmarks] {case.label} {name}: {v['error']}")
                continue
            if reference is None:  # eager comes first
                reference = outputs
                res["eager_metric"] = task_metric(case, data, outputs, n_acc)
                res["baseline_metric"] = baseline_metric(case, data, n_acc)
            v["max_abs_diff"] = float(np.max(np.abs(outputs - reference)))
            v["metric"] = task_metric(case, data, outputs, n_acc)
            v["metric_delta"] = v["metric"] - res["eager_metric"]
            v["agreement"] = agreement(case, reference, outputs)
            if variant.exact:
                v["correct"] = v["max_abs_diff"] <= EXACT_ATOL
            else:
                verdict = approximate_correct(res["eager_metric"], res["baseline_metric"], v["metric_delta"])
                v["correct"], v["unverified"] = bool(verdict), verdict is None
            predictors[name] = predict
        log(f"[benchmarks] {case.label}: variants ready ({', '.join(predictors)}); timing ...")

        # Steady state: single images, then batches, all variants interleaved, with matmul samples.
        one = np.ascontiguousarray(test[:1])
        batch = np.ascontiguousarray(np.resize(test, (cfg.batch_size,) + test.shape[1:]))
        fns = {name: (lambda p=p: p(one)) for name, p in predictors.items()}
        fns.update({f"__probe_{k}": fn for k, (fn, _) in probes.items()})
        single = interleaved(fns, cfg.single_rounds, warmup=1, repeat=cfg.single_repeat)
        bfns = {name: (lambda p=p: p(batch)) for name, p in predictors.items()}
        bfns.update({f"__probe_{k}": fn for k, (fn, _) in probes.items()})
        batched = interleaved(bfns, cfg.batch_rounds, warmup=1)
        for k in probes:
            probe_samples[k] += single[f"__probe_{k}"] + batched[f"__probe_{k}"]
        for name in predictors:
            v = res["variants"][name]
            v["single_p50_s"] = median(single[name])
            v["single_p95_s"] = percentile(single[name], 95)
            v["batch_per_image_s"] = median(batched[name]) / cfg.batch_size
            v["single_samples"] = len(single[name])

        # The paper's protocol: load the saved model, predict N tiles in batches; interleaved.
        tiles = np.ascontiguousarray(np.resize(test, (cfg.protocol_n,) + test.shape[1:]))
        loads: dict[str, list[float]] = {n: [] for n in predictors}
        predicts: dict[str, list[float]] = {n: [] for n in predictors}
        order = list(predictors)
        for r in range(cfg.protocol_rounds):
            for name in order[r % len(order):] + order[:r % len(order)]:  # who goes first rotates
                variant = VARIANTS[name]
                t0 = time.perf_counter()
                predict = variant.load(ctx)
                t1 = time.perf_counter()
                for i in range(0, len(tiles), cfg.batch_size):
                    predict(tiles[i:i + cfg.batch_size])
                t2 = time.perf_counter()
                fixed = variant.fixed_load_s()
                loads[name].append(fixed if fixed is not None else t1 - t0)
                predicts[name].append(t2 - t1)
                del predict
        for name in predictors:
            v = res["variants"][name]
            v["protocol_load_s"] = median(loads[name])
            v["protocol_predict_s"] = median(predicts[name])
            v["protocol_total_s"] = v["protocol_load_s"] + v["protocol_predict_s"]
    eager = res["variants"].get("eager", {})
    for v in res["variants"].values():
        for key, out in (("single_p50_s", "speedup_single"), ("batch_per_image_s", "speedup_batch"),
                         ("protocol_total_s", "speedup_protocol")):
            if v.get(key) and eager.get(key):
                v[out] = eager[key] / v[key]
    return res


def run(quick: bool, models: tuple[str, ...] | None = None, variants: tuple[str, ...] | None = None,
        log: Callable[[str], None] | None = None) -> RuntimeRun:

    log = log or (lambda m: print(m, file=sys.stderr, flush=True))
    cfg = settings(quick, models, variants)
    if "eager" not in cfg.variants:
        cfg = Settings(**{**cfg.__dict__, "variants": ("eager",) + cfg.variants})
    else:  # eager first: it is the reference every other variant is checked against
        cfg = Settings(**{**cfg.__dict__, "variants": ("eager",) + tuple(v for v in cfg.variants if v != "eager")})
    probes = rate_probes()
    probe_samples: dict[str, list[float]] = {k: [] for k in probes}
    load_start = load_average()
    results: dict = {"size": cfg.size, "threads": torch.get_num_threads(), "quick": quick, "models": {},
                     "settings": cfg.__dict__}
    for key in cfg.models:
        log(f"[benchmarks] runtimes: {reference_models()[key].label} at {cfg.size}px ...")
        results["models"][key] = _measure_model(reference_models()[key], cfg, probes, probe_samples, log)
    results["peak"] = summarise_probes(probe_samples, {k: flops for k, (_, flops) in probes.items()})
    results["load_average"] = f"{load_start} -> {load_average()}"
    return RuntimeRun(_section(results, cfg), results)


def _section(results: dict, cfg: Settings) -> Section:
    sec = Section("runtimes")
    threads = results["threads"]
    context = (f"{results['size']}x{results['size']} input{' (QUICK: full run uses 256)' if cfg.quick else ''}; "
               f"torch threads {threads} (ORT intra-op threads {threads}); load average {results['load_average']}")
    summary = Table("Fastest correct runtime vs PyTorch eager (ratios measured side by side)",
                    ["model", "fastest correct", "speed-up protocol", "speed-up 1 image", "speed-up batch",
                     "metric change", f">= {TARGET_SPEEDUP}x", "fastest exact (1e-4)", "its speed-up protocol"])
    hits = 0
    for key, res in results["models"].items():
        metric = res["metric_name"]
        table = Table(f"{res['label']}: {res['data']}; {res['trained']}; eager {metric} "
                      f"{res.get('eager_metric', float('nan')):.4f} (trivial baseline "
                      f"{res.get('baseline_metric', float('nan')):.4f}) on {res['accuracy_n']} test images",
                      ["runtime", "1-img p50 ms", "1-img p95 ms", f"batch{cfg.batch_size} ms/img",
                       "protocol load s", f"protocol N={cfg.protocol_n} s", "max abs diff", f"{metric} change",
                       "agree %", "correct", "x 1-img", "x batch", "x protocol"])
        for name, v in res["variants"].items():
            if v.get("error"):
                table.add(name, *(["-"] * 8), "FAILED", "-", "-", "-")
                table.notes.append(f"{name}: {v['error']}")
                continue
            table.add(name, 1000 * v.get("single_p50_s", float("nan")), 1000 * v.get("single_p95_s", float("nan")),
                      1000 * v.get("batch_per_image_s", float("nan")), v.get("protocol_load_s"),
                      v.get("protocol_total_s"), v.get("max_abs_diff"), v.get("metric_delta"),
                      100 * v.get("agreement", float("nan")),
                      "unverified" if v.get("unverified") else v.get("correct"), v.get("speedup_single"),
                      v.get("speedup_batch"), v.get("speedup_protocol"))
            for k in ("single_p50_s", "single_p95_s", "batch_per_image_s", "protocol_load_s", "protocol_total_s",
                      "max_abs_diff", "metric_delta", "speedup_single", "speedup_batch", "speedup_protocol"):
                if v.get(k) is not None:
                    sec.metrics[metric_key("runtimes", key, name, k)] = float(v[k])
        table.notes.append("x = eager time / this runtime's time (medians of interleaved samples); protocol = "
                           f"load the saved model + predict N={cfg.protocol_n} in batches of {cfg.batch_size}")
        if "compile" in res["variants"] and not res["variants"]["compile"].get("error"):
            table.notes.append("compile: protocol load = the cold compile (batch 1 and batch "
                               f"{cfg.batch_size} shapes), measured once")
        if not res.get("eager_metric", float("nan")) > res.get("baseline_metric", float("nan")):
            table.notes.append(f"eager's {metric} does not beat the trivial baseline: the accuracy check cannot "
                               "tell whether bf16 / int8 change the predictions, so they are 'unverified' and "
                               "never chosen as the fastest correct runtime")
        sec.tables.append(table)
        best, speedup = fastest_runtime(res, "protocol_total_s")
        exact, exact_speedup = fastest_runtime(res, "protocol_total_s", exact_only=True)
        if best:
            v = res["variants"][best]
            ok = speedup >= TARGET_SPEEDUP
            hits += ok
            summary.add(res["label"], best, speedup, v.get("speedup_single"), v.get("speedup_batch"),
                        v.get("metric_delta"), ok, exact, exact_speedup)
            sec.metrics[metric_key("runtimes", key, "best_exact_speedup_protocol")] = exact_speedup
            sec.metrics[metric_key("runtimes", key, "best_speedup_protocol")] = speedup
            sec.params[f"runtimes.{key}.fastest"] = best
    summary.notes.append(context)
    if not native_bf16() and not any(VARIANTS[v].bf16 for v in cfg.variants):
        summary.notes.append(f"bf16 runtimes not measured: this CPU ({cpu_kind()}) has no bf16 instructions "
                             "(emulated bf16 is tens of times slower; name them with --variants to measure anyway)")
    summary.notes.append("correct = outputs within 1e-4 of eager (fp32 variants) or |Jaccard / F1 change| < 0.005 "
                         "on the test data (bf16, int8; only where eager beats the trivial baseline)")
    sec.tables.insert(0, summary)
    sec.headline.append(f"fastest correct runtime >= {TARGET_SPEEDUP}x eager (protocol) for {hits} of "
                        f"{len(results['models'])} models (target: 2 of 3)")
    sec.metrics["runtimes.models_at_target"] = hits
    sec.params.update({"runtimes.size": str(cfg.size), "runtimes.torch_threads": str(threads),
                       "runtimes.protocol_n": str(cfg.protocol_n), "runtimes.variants": ",".join(cfg.variants)})
    return sec


def main(argv: list[str] | None = None) -> None:
    import argparse

    from projects.core.cli import str2bool, str_list

    parser = argparse.ArgumentParser(description="CPU runtime variants, side by side")
    parser.add_argument("--quick", type=str2bool, default=True)
    parser.add_argument("--models", type=str_list, default=[])
    parser.add_argument("--variants", type=str_list, default=[])
    args = parser.parse_args(argv)
    out = run(args.quick, tuple(args.models) or None, tuple(args.variants) or None)
    print(out.section.render())


if __name__ == "__main__":
    import projects  # noqa: F401

    main()
