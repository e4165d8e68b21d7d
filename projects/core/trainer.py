"""The run every study's model goes through, written once (the nnU-Net pattern: the trainer
owns `run_training`, a study overrides hooks). What the registry, the dashboards and the
real-data page read from a run is logged here, the same way for every study:

    tags (study, task, arch, split, seed, data and holdout digests, run kind), the config,
    the baselines, the optimizer and schedule from the config's TrainConfig (training.fit),
    best_epoch / epochs_run / train_seconds, test metrics with *_minus_baseline and their
    intervals (resampled by the study's independent unit), weights, sizes, CPU timings and
    image_shape (run_costs), and the candidate model.

A study supplies only what differs: its data (`prepare`), model, loss, loaders and validation,
how it predicts and scores the test set, its baselines, the unit of each input, the inputs the
CPU timing predicts, extra artifacts and the candidate model it logs.

    class MyTrainer(Trainer):
        study = "shapes"
        minus_baseline = {"accuracy": ("majority_accuracy",)}
        def describe(self, config, prepared): return dict(task=..., arch=..., split=..., augment=False)
        ...
    result = MyTrainer().run_training(config, prepared)      # inside an active MLflow run
"""
from __future__ import annotations

import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import mlflow
import torch
from torch import nn
from torch.utils.data import DataLoader

from projects.core import run_costs, tracking
from projects.core.training import Evaluate, EpochHook, FitResult, fit, seed_everything
from projects.core.uncertainty import UnitScores


@dataclass
class TestOutcome:
    """A trained model on the test set: metrics (names without the test_ prefix), the scores
    by independent unit (for the intervals), and what the study's artifacts need."""
    metrics: dict[str, float]
    units: UnitScores | None = None
    details: dict[str, Any] = field(default_factory=dict)
    baselines: dict[str, float] = field(default_factory=dict)  # filled by run_training, for the artifacts


@dataclass
class RunResult:
    """What a caller gets back (entry points, grids, search trials, pipeline/real_data.py):
    test_* and baseline_* metrics of the run; `details` what the study's test hook kept."""
    run_id: str
    metrics: dict[str, float]
    details: dict[str, Any] = field(default_factory=dict)


class Trainer:
    """Template of one training run; subclasses override the hooks below."""
    study: ClassVar[str] = ""
    # test metric -> the baselines it must beat: test_<metric>_minus_baseline is the margin over
    # the best of them (what the registry's baseline gate and the dashboards read).
    minus_baseline: ClassVar[Mapping[str, tuple[str, ...]]] = {}
    # Log model_size_mb_with_optimizer (the optimizer's state saved beside the weights).
    size_with_optimizer: ClassVar[bool] = False
    # The line printed on stderr when a run ends: str.format of `config`, `test` and `base`
    # (the test and baseline metrics, without prefixes), e.g. "{config.arch}: {test[accuracy]:.3f}".
    summary: ClassVar[str] = ""

    # --- hooks ---------------------------------------------------------------------------------
    def prepare(self, config) -> Any:
        """The run's inputs (split, tiles, films); an object with `.digest` and `.holdout_digest`."""
        raise NotImplementedError

    def describe(self, config, prepared) -> dict[str, Any]:
        """task, arch, split and augment of the run (its standard tags)."""
        raise NotImplementedError

    def extra_tags(self, config, prepared) -> dict[str, str]:
        return {}

    def log_inputs(self, config, prepared) -> None:
        """Counts, the split and its datasets (the Inputs tab); may refuse empty splits."""

    def baselines(self, config, prepared) -> dict[str, float]:
        """What the model must beat on the test set (names without the baseline_ prefix)."""
        raise NotImplementedError

    def build_model(self, config, prepared) -> nn.Module:
        raise NotImplementedError

    def untrained_model(self, config, prepared) -> nn.Module:
        """The architecture the CPU timing loads the saved weights into (as a deployment would)."""
        return self.build_model(config, prepared)

    def loss(self, config, prepared) -> nn.Module:
        raise NotImplementedError

    def loaders(self, config, prepared, generator: torch.Generator) -> tuple[DataLoader, DataLoader | None]:
        """Training and validation loaders (the validation one may be None)."""
        raise NotImplementedError

    def evaluator(self, config, prepared) -> Evaluate:
        """Validation metrics of each epoch (training.fit's `evaluate`)."""
        raise NotImplementedError

    def family(self, config) -> str:
        """The model family the `auto` precision is chosen by (projects/core/device.py)."""
        return "conv"

    def epoch_hook(self, config, prepared, model: nn.Module) -> EpochHook | None:
        """Something to do after every epoch (e.g. log an image), before a search's pruning."""
        return None

    def deployed(self, config, model: nn.Module) -> nn.Module:
        """The trained model as it is evaluated, timed and logged (e.g. with test-time augmentation)."""
        return model

    def test(self, config, prepared, model: nn.Module) -> TestOutcome:
        raise NotImplementedError

    def timed_inputs(self, config, prepared, outcome: TestOutcome) -> torch.Tensor:
        """The (N, C, H, W) inputs of the CPU timing; their shape is logged as image_shape."""
        raise NotImplementedError

    def log_artifacts(self, config, prepared, outcome: TestOutcome, folder: Path) -> None:
        """The study's own artifacts (confusion matrix, overlays...)."""

    def log_candidate(self, config, prepared, model: nn.Module, outcome: TestOutcome) -> None:
        """The candidate model the registry may promote (called when config.log_model is on)."""
        raise NotImplementedError

    # --- the run -----------------------------------------------------------------------------------
    def run_training(self, config, prepared=None, run_kind: str = tracking.RUN_KIND_SINGLE,
                     on_epoch: EpochHook | None = None) -> RunResult:
        """Train and evaluate inside the active MLflow run (the caller starts and ends it)."""
        prepared = prepared if prepared is not None else self.prepare(config)
        active = mlflow.active_run()
        if active is None:
            raise RuntimeError(f"{self.study}: run_training needs an active MLflow run")
        mlflow.set_tags(tracking.standard_tags(study=self.study, seed=config.seed, dataset_digest=prepared.digest,
                                               run_kind=run_kind, **self.describe(config, prepared))
                        | self.extra_tags(config, prepared)
                        | {tracking.TAG_HOLDOUT_DIGEST: getattr(prepared, "holdout_digest", "none")})
        tracking.log_config(config)
        self.log_inputs(config, prepared)
        # Baselines first: what the result must beat, logged even if training dies.
        base = self.baselines(config, prepared)
        tracking.log_metrics_finite({tracking.baseline_metric(k): v for k, v in base.items()})
        model, trained = self.train(config, prepared, on_epoch)
        model = self.deployed(config, model)
        outcome = self.test(config, prepared, model)
        outcome.baselines = base
        test = dict(outcome.metrics) | margins(outcome.metrics, base, self.minus_baseline)
        tracking.log_metrics_finite({tracking.test_metric(k): v for k, v in test.items()})
        if outcome.units is not None:
            tracking.log_intervals(outcome.units)
        # onnx_timing and log_model are settings a study may declare; without them it times
        # eager PyTorch only and always logs its candidate.
        with tempfile.TemporaryDirectory() as tmp:
            self.log_artifacts(config, prepared, outcome, Path(tmp))
            run_costs.log_costs(model, lambda: self.deployed(config, self.untrained_model(config, prepared)),
                                self.timed_inputs(config, prepared, outcome), config.batch_size, Path(tmp),
                                onnx=getattr(config, "onnx_timing", False),
                                optimizer=trained.optimizer if self.size_with_optimizer else None)
        if getattr(config, "log_model", True):
            self.log_candidate(config, prepared, model, outcome)
        if self.summary:
            print(f"[{self.study}] " + self.summary.format(config=config, test=outcome.metrics, base=base),
                  file=sys.stderr)
        return RunResult(active.info.run_id, {tracking.test_metric(k): v for k, v in test.items()}
                         | {tracking.baseline_metric(k): v for k, v in base.items()}, outcome.details)

    def train(self, config, prepared, on_epoch: EpochHook | None = None) -> tuple[nn.Module, FitResult]:
        """The model trained by training.fit with the optimizer its config describes."""
        generator = seed_everything(config.seed)
        model = self.build_model(config, prepared)
        train_loader, val_loader = self.loaders(config, prepared, generator)
        hook = _chain(self.epoch_hook(config, prepared, model), on_epoch)
        result = fit(model, train_loader, val_loader, self.loss(config, prepared), config.train,
                     self.evaluator(config, prepared), on_epoch=hook, family=self.family(config))
        mlflow.log_metrics({"best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
                            "train_seconds": result.train_seconds})
        return model, result


def margins(test: Mapping[str, float], base: Mapping[str, float],
            pairs: Mapping[str, tuple[str, ...]]) -> dict[str, float]:
    """<metric>_minus_baseline: the test metric minus the best of the baselines it must beat."""
    return {f"{metric}_minus_baseline": test[metric] - max(base[b] for b in against)
            for metric, against in pairs.items() if metric in test}


def _chain(first: EpochHook | None, then: EpochHook | None) -> EpochHook | None:
    if first is None or then is None:
        return first or then

    def both(epoch: int, metrics: dict[str, float]) -> None:
        first(epoch, metrics)
        then(epoch, metrics)  # a search trial's pruning: after the study's own epoch work

    return both

