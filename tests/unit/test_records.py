"""Long measurements as records (projects/core/records.py) and training that resumes from its
last epoch (projects/core/training.resumable): a killed unit loses at most one epoch on the
same machine, and a finished unit is never trained again."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from projects.core.records import Budget, Record, RecordStore, unit_key
from projects.core.training import TrainConfig, fit, resumable, seed_everything


def test_a_unit_is_named_by_its_settings_and_data_not_by_order_machine_or_commit():
    a = unit_key({"arch": "unet", "depth": 4}, "d1")
    assert a == unit_key({"depth": 4, "arch": "unet"}, "d1")
    assert a != unit_key({"arch": "unet", "depth": 5}, "d1")
    assert a != unit_key({"arch": "unet", "depth": 4}, "d2")  # other data: another unit


def test_records_round_trip_with_missing_numbers_as_null(tmp_path):
    store = RecordStore(tmp_path / "block")
    rec = Record(block="block", unit="u", key="k1", settings={"lr": 1e-4}, data_digest="d",
                 metrics={"test_jaccard": 0.5, "test_jaccard_ci95_low": float("nan")},
                 history={"val_jaccard": [0.1, float("inf"), 0.3]}, commit="abc")
    path = store.write(rec)
    raw = json.loads(path.read_text())  # strict JSON: no NaN tokens
    assert raw["metrics"]["test_jaccard_ci95_low"] is None and raw["history"]["val_jaccard"][1] is None
    back = store.get("k1")
    assert back.metrics["test_jaccard"] == 0.5 and back.settings == {"lr": 1e-4} and back.commit == "abc"
    assert store.get("missing") is None
    assert [r.key for r in store] == ["k1"]
    assert not [p for p in (tmp_path / "block").iterdir() if p.suffix != ".json"]  # no temp files left


def test_budget_stops_only_when_set_and_spent():
    assert not Budget(0).spent() and not Budget(None).spent()
    assert not Budget(60).spent()
    spent = Budget(1)
    spent.start -= 61  # a minute and a second ago
    assert spent.spent()


def _problem():
    gen = seed_everything(0)
    x = torch.randn(96, 4, generator=gen)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    train = DataLoader(TensorDataset(x[:64], y[:64]), batch_size=16, shuffle=True, generator=gen)
    val = DataLoader(TensorDataset(x[64:], y[64:]), batch_size=32)
    return train, val


def _evaluate(model, batches):
    loss_fn, total, n = nn.CrossEntropyLoss(reduction="sum"), 0.0, 0
    for x, y in batches:
        total += float(loss_fn(model(x), y))
        n += len(x)
    return {"loss": total / n}


class Killed(Exception):
    pass


def _train(checkpoint, kill_after: int | None = None, seen: list | None = None):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    train, val = _problem()
    config = TrainConfig(epochs=5, lr=0.05, patience=0, lr_schedule="cosine", progress=False, precision="fp32")

    def hook(epoch, metrics):
        if seen is not None:
            seen.append(epoch)
        if kill_after is not None and epoch == kill_after:
            raise Killed

    with resumable(checkpoint):
        result = fit(model, train, val, nn.CrossEntropyLoss(), config, _evaluate, on_epoch=hook, log=False)
    return model, result


def test_a_killed_training_resumes_from_its_last_epoch_and_ends_as_if_never_killed(tmp_path):
    whole, whole_result = _train(None)
    checkpoint = tmp_path / "unit.pt"
    with pytest.raises(Killed):
        _train(checkpoint, kill_after=3)  # killed after epoch 3's checkpoint was written
    assert checkpoint.is_file()
    trained = []
    resumed, result = _train(checkpoint, seen=trained)
    assert trained == [4, 5]  # only the epochs after the kill
    assert result.epochs_run == 5 and len(result.history) == 5
    assert [h["val_loss"] for h in result.history] == pytest.approx([h["val_loss"] for h in whole_result.history])
    assert result.best_epoch == whole_result.best_epoch
    for key, value in whole.state_dict().items():  # same data order, same schedule, same weights
        assert torch.allclose(value, resumed.state_dict()[key], atol=1e-6), key


def test_a_checkpoint_of_a_run_that_had_stopped_early_trains_no_more(tmp_path):
    checkpoint = tmp_path / "unit.pt"
    torch.manual_seed(1)
    model = nn.Linear(4, 2)
    train, val = _problem()
    losses = iter([1.0, 2.0, 3.0, 4.0, 5.0])
    config = TrainConfig(epochs=5, lr=0.05, patience=2, progress=False, precision="fp32")
    with resumable(checkpoint):
        first = fit(model, train, val, nn.CrossEntropyLoss(), config, lambda m, b: {"loss": next(losses)}, log=False)
    assert first.stopped_early and first.epochs_run == 3
    with resumable(checkpoint):
        again = fit(model, train, val, nn.CrossEntropyLoss(), config,
                    lambda m, b: pytest.fail("trained again"), log=False)
    assert again.stopped_early and again.epochs_run == 3 and again.best_epoch == 1
    assert math.isclose(again.history[0]["val_loss"], 1.0) and np.isfinite(again.train_seconds)


def test_a_record_names_the_kind_of_cpu_beside_its_model_name():
    """Two machines both called "AMD EPYC" here train 3x apart (with and without AVX-512 BF16):
    the record keeps the kind that set the automatic precision."""
    from projects.core import device, records

    got = records.machine(load_at_start=0.5)
    assert got["cpu_kind"] == device.cpu_kind() and got["cpu_kind"] in ("cpu", "cpu-bf16", "cpu-amx")
    assert got["load_1min_start"] == 0.5 and got["cores"] >= 1
