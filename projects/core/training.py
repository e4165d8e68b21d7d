"""The one training loop both studies use: epochs, early stopping that restores the best
weights, per-epoch metrics logged to the active MLflow run, a progress bar, and a hook
that search trials use for pruning.
"""
from __future__ import annotations

import copy
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from projects.core import tracking
from projects.core.config import Section, setting


@dataclass
class TrainConfig(Section):
    """The training settings every study shares (a study's config subclasses them to set its
    paper's defaults and add its own)."""
    epochs: int = setting(10, "training epochs", min=1)
    batch_size: int = setting(32, "batch size", min=1)
    lr: float = setting(1e-4, "Adam learning rate", positive=True)
    weight_decay: float = setting(0.0, "Adam weight decay", min=0)
    # Early stopping on validation loss; 0 disables it (every epoch runs, the best is kept).
    patience: int = setting(0, "early stopping: epochs without a better val_loss; 0 = off", min=0)
    seed: int = setting(0, "seed of the split, the initialisation and the data order")
    progress: bool = setting(True, "progress bar and one line per epoch", cli_flag=False)


@dataclass
class FitResult:
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    train_seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    best_metrics: dict[str, float] = field(default_factory=dict)


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


# (model, loader) -> metrics with at least "loss"; names without the val_ prefix.
Evaluate = Callable[[nn.Module, DataLoader], dict[str, float]]
# Called after each epoch with (epoch, logged metrics); may raise to stop (pruning).
EpochHook = Callable[[int, dict[str, float]], None]


def fit(model: nn.Module, train_loader: DataLoader, val_loader: DataLoader | None,
        loss_fn: nn.Module, config: TrainConfig, evaluate: Evaluate,
        on_epoch: EpochHook | None = None, log: bool = True,
        optimizer: torch.optim.Optimizer | None = None) -> FitResult:
    """Train `model` in place; on return it holds the weights of the best validation epoch.

    With no validation loader the last epoch's weights are kept.
    """
    optimizer = optimizer or torch.optim.Adam(model.parameters(), lr=config.lr,
                                              weight_decay=config.weight_decay)
    best_loss, best_state, best_epoch, best_metrics = float("inf"), None, 0, {}
    history: list[dict[str, float]] = []
    bad_epochs, stopped_early = 0, False
    start = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        model.train()
        total, count = 0.0, 0
        # A bar only on a terminal; a log file gets the one line per epoch printed below.
        bar = tqdm(train_loader, desc=f"epoch {epoch}/{config.epochs}", leave=False,
                   disable=not (config.progress and sys.stderr.isatty()), file=sys.stderr,
                   dynamic_ncols=True, mininterval=0.5)
        for inputs, targets in bar:
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(inputs), targets)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(inputs)
            count += len(inputs)
            bar.set_postfix(loss=f"{total / max(count, 1):.4f}", refresh=False)
        metrics = {tracking.M_TRAIN_LOSS: total / max(count, 1)}
        if val_loader is not None:
            val = evaluate(model, val_loader)
            metrics.update({tracking.val_metric(k): v for k, v in val.items()})
        history.append(metrics)
        if log:
            tracking.log_metrics_finite(metrics, step=epoch)
        if config.progress:
            shown = "  ".join(f"{k}={v:.4f}" for k, v in metrics.items())
            print(f"epoch {epoch}/{config.epochs}  {shown}", file=sys.stderr, flush=True)
        val_loss = metrics.get(tracking.M_VAL_LOSS, -epoch)  # no val: the latest is "best"
        if val_loss < best_loss:
            best_loss, best_epoch, best_metrics = val_loss, epoch, dict(metrics)
            best_state = copy.deepcopy(model.state_dict())
            bad_epochs = 0
        else:
            bad_epochs += 1
        if on_epoch is not None:
            on_epoch(epoch, metrics)
        if config.patience and bad_epochs >= config.patience:
            stopped_early = True
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    return FitResult(best_epoch=best_epoch, epochs_run=len(history), stopped_early=stopped_early,
                     train_seconds=time.perf_counter() - start, history=history,
                     best_metrics=best_metrics)
