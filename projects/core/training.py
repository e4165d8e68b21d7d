"""The one training loop every study uses: epochs on the run's device and precision
(channels-last, mixed precision through autocast), early stopping that restores the best
weights, per-epoch metrics logged to the active MLflow run, throughput, a progress bar, and a
hook that search trials use for pruning. On return the model is back on the CPU in fp32: what
is saved, exported and timed is the same whatever trained it.

Inside `with resumable(path):` every fit writes its whole state (weights, optimizer, schedule,
the kept epoch, early-stopping count, history, random generators) to `path` after each epoch
and, when `path` already exists, continues from it: a unit of a long measurement
(pipeline/real_data.py) that is killed loses at most the epoch in progress.
"""
from __future__ import annotations

import contextlib
import contextvars
import copy
import os
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from projects.core import device as dev
from projects.core import tracking
from projects.core.config import Section, setting
from projects.core.errors import InputError


@dataclass
class TrainConfig(Section):
    """The training settings every study shares (a study's config subclasses them to set its
    paper's defaults and add its own)."""
    epochs: int = setting(10, "training epochs", min=1)
    batch_size: int = setting(32, "batch size", min=1)
    lr: float = setting(1e-4, "Adam learning rate", positive=True)
    weight_decay: float = setting(0.0, "Adam weight decay", min=0)
    # Early stopping on the selection metric; 0 disables it (every epoch runs, the best is kept).
    patience: int = setting(0, "early stopping: epochs without a better selection metric; 0 = off", min=0)
    # Small real data sets are judged by balanced accuracy or macro-F1: the epoch of lowest
    # loss is often one that predicts the majority class (measured on real mini-MIAS).
    select_on: str = setting("loss", "validation metric that picks the kept epoch and drives early stopping: "
                                     "loss (lowest) or a metric of the study's validation (highest, e.g. "
                                     "balanced_accuracy, f1_macro, jaccard)")
    lr_schedule: str = setting("constant", "constant | cosine (decay to 0 over the epochs)",
                               choices=("constant", "cosine"))
    seed: int = setting(0, "seed of the split, the initialisation and the data order")
    device: str = setting("auto", f"where to train: {dev.DEVICES} (auto: CUDA when present, else the CPU)")
    precision: str = setting("auto", "fp32 | bf16 | fp16 mixed precision, or auto: the measured fastest at "
                                     "equal accuracy for the model family on this device (projects/core/device.py)",
                             choices=dev.PRECISIONS)
    channels_last: bool = setting(True, "channels-last memory format for the convolutions (faster on CPU and GPU)")
    workers: int = setting(0, "DataLoader worker processes (0: load in the training process)", min=0)
    progress: bool = setting(True, "progress bar and one line per epoch", cli_flag=False)


@dataclass(frozen=True)
class Placement:
    """A run's device, precision and memory format, resolved once."""
    device: torch.device
    precision: str
    channels_last: bool

    @classmethod
    def of(cls, config: TrainConfig, family: str) -> Placement:
        device = dev.resolve_device(config.device)
        return cls(device, dev.resolve_precision(config.precision, family, device), config.channels_last)

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x

    def targets(self, y: torch.Tensor) -> torch.Tensor:
        return y.to(self.device, non_blocking=True)

    def batches(self, loader: DataLoader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in loader:
            yield self.inputs(x), self.targets(y)


def make_loader(dataset: Dataset, config: TrainConfig, *, shuffle: bool = False, generator=None,
                drop_last: bool = False, batch_size: int | None = None, sampler=None) -> DataLoader:
    """A DataLoader with the run's workers (kept alive across epochs) and pinned memory on CUDA."""
    cuda = dev.resolve_device(config.device).type == "cuda"
    return DataLoader(dataset, batch_size=batch_size or config.batch_size, shuffle=shuffle and sampler is None,
                      generator=generator, sampler=sampler, drop_last=drop_last, num_workers=config.workers,
                      persistent_workers=config.workers > 0, pin_memory=cuda)


def balanced_sampler(labels: np.ndarray, generator=None) -> torch.utils.data.WeightedRandomSampler:
    """An epoch-sized draw with replacement, each class equally likely (probability of an item
    proportional to 1 / its class count): rare classes are seen as often as common ones."""
    counts = np.bincount(labels)
    weights = 1.0 / counts[labels]
    return torch.utils.data.WeightedRandomSampler(torch.as_tensor(weights, dtype=torch.double), len(labels),
                                                  replacement=True, generator=generator)


def selection_score(metrics: dict[str, float], select_on: str) -> float:
    """Higher is better: minus the validation loss, or the named validation metric."""
    if select_on == "loss":
        return -metrics.get(tracking.M_VAL_LOSS, float("nan"))
    key = tracking.val_metric(select_on)
    if key not in metrics:
        raise InputError("select_on", f"{select_on!r} is not a validation metric of this study "
                                      f"({', '.join(sorted(k[4:] for k in metrics if k.startswith('val_')))})")
    return metrics[key]


@dataclass
class FitResult:
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    train_seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    best_metrics: dict[str, float] = field(default_factory=dict)
    # The optimizer as training left it: its state is part of the size-with-optimizer metric.
    optimizer: torch.optim.Optimizer | None = None


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


# (model, batches) -> metrics with at least "loss"; names without the val_ prefix. The model is
# on the run's device in eval mode; batches are (inputs, targets) pairs already moved there.
Evaluate = Callable[[nn.Module, Iterator[tuple[torch.Tensor, torch.Tensor]]], dict[str, float]]
# Called after each epoch with (epoch, logged metrics); may raise to stop (pruning).
EpochHook = Callable[[int, dict[str, float]], None]


def make_optimizer(model: nn.Module, config: TrainConfig) -> tuple[torch.optim.Optimizer, object | None]:
    """The optimizer and learning-rate schedule of every study, from its TrainConfig: the one
    place the settings lr, weight_decay, lr_schedule and epochs reach the optimisation."""
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
                if config.lr_schedule == "cosine" else None)
    return optimizer, schedule


def epoch_line(epoch: int, epochs: int, metrics: dict[str, float], seconds: float) -> str:
    """One line per epoch for a log that someone reads hours later: the metrics, what the epoch
    took and how long the run can still take (an upper bound: early stopping may end it sooner)."""
    shown = "  ".join(f"{k}={v:.4f}" for k, v in metrics.items())
    left_min = seconds * (epochs - epoch) / 60
    return f"epoch {epoch}/{epochs}  {shown}  ({seconds:.0f} s; at most {left_min:.0f} min left)"


def fit(model: nn.Module, train_loader: DataLoader, val_loader: DataLoader | None,
        loss_fn: nn.Module, config: TrainConfig, evaluate: Evaluate,
        on_epoch: EpochHook | None = None, log: bool = True, family: str = "conv") -> FitResult:
    """Train `model` in place; on return it holds the weights of the best validation epoch, on
    the CPU in fp32. With no validation loader the last epoch's weights are kept. The optimizer
    is made from `config` (make_optimizer) and returned in the result.

    `family` (unet, elunet, smp, timm, ...) picks the `auto` precision (projects/core/device.py).
    `evaluate` receives the model on the run's device and batches already moved there.
    """
    place = Placement.of(config, family)
    model.to(place.device)  # before the optimizer is made: it holds the parameters where they train
    if place.channels_last:
        model.to(memory_format=torch.channels_last)
    loss_fn.to(place.device)
    optimizer, schedule = make_optimizer(model, config)
    scaler = dev.grad_scaler(place.device, place.precision)
    if log:
        mlflow.set_tags({tracking.TAG_DEVICE: str(place.device), tracking.TAG_PRECISION: place.precision,
                         "channels_last": str(place.channels_last).lower()})
    best, steps, start = _Best(config.select_on), _Steps(), time.perf_counter()
    checkpoint = _CHECKPOINT.get()
    first, bad_epochs, history, stopped_early = _resume(checkpoint, config, log, model, optimizer, schedule, scaler,
                                                        best, train_loader)
    for epoch in range(first, config.epochs + 1):
        epoch_start = time.perf_counter()
        metrics = {tracking.M_TRAIN_LOSS: _train_epoch(model, train_loader, loss_fn, optimizer, scaler, place,
                                                       config, epoch, steps)}
        if schedule is not None:
            schedule.step()
        if val_loader is not None:
            model.eval()
            with torch.no_grad():
                val = evaluate(model, place.batches(val_loader))
            metrics.update({tracking.val_metric(k): v for k, v in val.items()})
        history.append(metrics)
        if log:
            tracking.log_metrics_finite(metrics, step=epoch)
        if config.progress:
            print(epoch_line(epoch, config.epochs, metrics, time.perf_counter() - epoch_start),
                  file=sys.stderr, flush=True)
        if best.update(epoch, metrics, model, validated=val_loader is not None):
            bad_epochs = 0
        else:
            bad_epochs += 1
        if checkpoint is not None:
            _save(checkpoint, epoch, model, optimizer, schedule, scaler, best, bad_epochs, history, train_loader)
        if on_epoch is not None:
            on_epoch(epoch, metrics)
        if config.patience and bad_epochs >= config.patience:
            stopped_early = True
            break
    if best.state is not None:
        model.load_state_dict(best.state)
    model.to("cpu").to(memory_format=torch.contiguous_format).float()
    if log:
        tracking.log_metrics_finite(steps.metrics())
    return FitResult(best_epoch=best.epoch, epochs_run=len(history), stopped_early=stopped_early,
                     train_seconds=time.perf_counter() - start, history=history,
                     best_metrics=best.metrics, optimizer=optimizer)


# --- resumable training ---------------------------------------------------------------------------
# A context variable rather than a fit() argument: the studies call fit from their own run code,
# and only the long-measurement runner (pipeline/real_data.py) asks for checkpoints.
_CHECKPOINT: contextvars.ContextVar[Path | None] = contextvars.ContextVar("fit_checkpoint", default=None)


@contextlib.contextmanager
def resumable(path: Path | None) -> Iterator[None]:
    """Every fit inside writes its state to `path` after each epoch and resumes from it."""
    token = _CHECKPOINT.set(Path(path) if path is not None else None)
    try:
        yield
    finally:
        _CHECKPOINT.reset(token)


def _resume(checkpoint: Path | None, config: TrainConfig, log: bool, model: nn.Module, optimizer, schedule, scaler,
            best: _Best, loader: DataLoader) -> tuple[int, int, list[dict[str, float]], bool]:
    """(first epoch, bad epochs, history, stopped early): a fresh start, or where the checkpoint left off."""
    if checkpoint is None or not checkpoint.is_file():
        return 1, 0, [], False
    first, bad_epochs, history = _restore(checkpoint, model, optimizer, schedule, scaler, best, loader)
    if log:  # the new run shows the whole curve, the epochs before the restart included
        for epoch, metrics in enumerate(history, 1):
            tracking.log_metrics_finite(metrics, step=epoch)
        mlflow.set_tag("resumed_from_epoch", str(first - 1))
    print(f"resumed from {checkpoint} after epoch {first - 1}", file=sys.stderr, flush=True)
    if config.patience and bad_epochs >= config.patience:
        return config.epochs + 1, bad_epochs, history, True  # it had already stopped early
    return first, bad_epochs, history, False


def _save(path: Path, epoch: int, model: nn.Module, optimizer, schedule, scaler, best: _Best, bad_epochs: int,
          history: list[dict[str, float]], loader: DataLoader) -> None:
    state = {"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "schedule": schedule.state_dict() if schedule is not None else None,
             "scaler": scaler.state_dict() if hasattr(scaler, "state_dict") else None,
             "best": (float(best.score), best.epoch, _floats(best.metrics), best.state), "bad_epochs": bad_epochs,
             "history": [_floats(h) for h in history], "rng": (random.getstate(), _numpy_rng(), torch.get_rng_state()),
             "loader_rng": loader.generator.get_state() if getattr(loader, "generator", None) is not None else None}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # atomic: a kill while saving leaves the previous epoch's state


def _floats(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()}


def _numpy_rng() -> tuple:
    """numpy's generator state with its key array as a tensor (what weights_only loading accepts)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)


def _restore(path: Path, model: nn.Module, optimizer, schedule, scaler, best: _Best,
             loader: DataLoader) -> tuple[int, int, list[dict[str, float]]]:
    """Loads a checkpoint into the objects fit made; returns (next epoch, bad epochs, history)."""
    # weights_only: tensors and plain Python values only, so a checkpoint cannot run code when loaded
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if schedule is not None and state["schedule"] is not None:
        schedule.load_state_dict(state["schedule"])
    if state["scaler"] is not None and hasattr(scaler, "load_state_dict"):
        scaler.load_state_dict(state["scaler"])
    best.score, best.epoch, best.metrics, best.state = state["best"]
    random.setstate(state["rng"][0])
    name, keys, *rest = state["rng"][1]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["rng"][2])
    if state["loader_rng"] is not None and getattr(loader, "generator", None) is not None:
        loader.generator.set_state(state["loader_rng"])
    return state["epoch"] + 1, state["bad_epochs"], state["history"]


class _Best:
    """The kept epoch: the best selection score so far (a metric's ties go to the later epoch;
    without validation every epoch is better than the last) and its weights."""

    def __init__(self, select_on: str):
        self.select_on, self.score, self.epoch, self.metrics, self.state = select_on, -float("inf"), 0, {}, None

    def update(self, epoch: int, metrics: dict[str, float], model: nn.Module, validated: bool) -> bool:
        score = selection_score(metrics, self.select_on) if validated else epoch
        if not (score > self.score or (self.select_on != "loss" and score == self.score)):
            return False
        self.score, self.epoch, self.metrics = score, epoch, dict(metrics)
        self.state = copy.deepcopy(model.state_dict())
        return True


class _Steps:
    """Training throughput: images and wall time of each optimisation step (data loading excluded)."""

    def __init__(self):
        self.images, self.seconds = 0, []

    def add(self, n: int, seconds: float) -> None:
        self.images += n
        self.seconds.append(seconds)

    def metrics(self) -> dict[str, float]:
        if not self.seconds:
            return {}
        return {tracking.M_TRAIN_IMAGES_PER_S: self.images / sum(self.seconds),
                tracking.M_TRAIN_STEP_MS_P50: 1000 * statistics.median(self.seconds)}


def _train_epoch(model: nn.Module, loader: DataLoader, loss_fn: nn.Module, optimizer: torch.optim.Optimizer,
                 scaler, place: Placement, config: TrainConfig, epoch: int, steps: _Steps) -> float:
    model.train()
    total, count = 0.0, 0
    # A bar only on a terminal; a log file gets the one line per epoch fit prints.
    bar = tqdm(loader, desc=f"epoch {epoch}/{config.epochs}", leave=False,
               disable=not (config.progress and sys.stderr.isatty()), file=sys.stderr,
               dynamic_ncols=True, mininterval=0.5)
    for inputs, targets in bar:
        inputs, targets = place.inputs(inputs), place.targets(targets)
        t0 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with dev.autocast(place.device, place.precision):
            loss = loss_fn(model(inputs), targets)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        value = loss.item()  # waits for the step: the timing below covers the whole step
        steps.add(len(inputs), time.perf_counter() - t0)
        total += value * len(inputs)
        count += len(inputs)
        bar.set_postfix(loss=f"{total / max(count, 1):.4f}", refresh=False)
    return total / max(count, 1)
