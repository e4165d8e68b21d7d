"""Every optimisation setting of TrainConfig reaches the optimizer, in core and in each study:
the optimizer is made in one place (training.make_optimizer) from the run's config, each
study trains through the trainer template (projects/core/trainer.py), and the optimizer it
trained with is the one whose state the size-with-optimizer metric saves.
(pathology used to build its own Adam from lr alone: --weight-decay never reached it.)"""
from __future__ import annotations

import mlflow
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from projects.core.training import TrainConfig, fit, make_optimizer

SETTINGS = {"lr": 3e-3, "weight_decay": 0.05}


def _group(optimizer: torch.optim.Optimizer) -> dict:
    (group,) = optimizer.param_groups
    return group


def test_make_optimizer_takes_lr_weight_decay_and_the_schedule_from_the_config():
    model = nn.Linear(3, 2)
    optimizer, schedule = make_optimizer(model, TrainConfig(**SETTINGS, epochs=4, lr_schedule="cosine"))
    assert {k: _group(optimizer)[k] for k in SETTINGS} == SETTINGS
    assert isinstance(schedule, torch.optim.lr_scheduler.CosineAnnealingLR) and schedule.T_max == 4
    assert make_optimizer(model, TrainConfig())[1] is None  # constant: no schedule


def test_fit_trains_with_the_configs_optimizer_and_returns_it():
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    data = TensorDataset(torch.randn(16, 4), torch.randint(0, 2, (16,)))
    result = fit(model, DataLoader(data, batch_size=8), None, nn.CrossEntropyLoss(),
                 TrainConfig(**SETTINGS, epochs=2, device="cpu", precision="fp32", progress=False),
                 lambda m, b: {"loss": 0.0}, log=False)
    group = _group(result.optimizer)
    assert {k: group[k] for k in SETTINGS} == SETTINGS
    assert all(p in {id(q) for q in model.parameters()} for p in map(id, group["params"]))
    assert result.optimizer.state  # it stepped: its moments are what the size metric saves


def test_pathology_trains_with_weight_decay_and_lr_from_its_config():
    from projects.pathology import trainer
    from projects.pathology.config import PathologyConfig

    config = PathologyConfig(arch="unet", filters=2, depth=2, tile_size=64, embedded_images=6, embedded_size=128,
                             epochs=1, patience=0, device="cpu", precision="fp32", progress=False, **SETTINGS)
    prepared = trainer.prepare_data(config)
    with mlflow.start_run():
        _, trained = trainer.TRAINER.train(config, prepared)
    assert {k: _group(trained.optimizer)[k] for k in SETTINGS} == SETTINGS


def test_mammography_trains_with_weight_decay_and_lr_from_its_config():
    from projects.mammography import trainer
    from projects.mammography.config import MammographyConfig

    config = MammographyConfig(arch="resnet10t", image_size=32, embedded_size=64, batch_size=16, epochs=1,
                               device="cpu", precision="fp32", progress=False, **SETTINGS)
    prepared = trainer.prepare_data(config)
    with mlflow.start_run():
        _, trained = trainer.TRAINER.train(config, prepared)
    assert {k: _group(trained.optimizer)[k] for k in SETTINGS} == SETTINGS
