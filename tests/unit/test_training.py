"""The shared training loop on a tiny real problem: early stopping restores the best
validation weights, a hook can stop training (how search trials are pruned), no
validation keeps the last epoch."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from projects.core.training import TrainConfig, epoch_line, fit, seed_everything


class Stop(Exception):
    pass


def _problem(n: int = 64):
    gen = seed_everything(0)
    x = torch.randn(n, 4, generator=gen)
    y = (x[:, 0] > 0).long()
    return DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True, generator=gen), TensorDataset(x, y)


def _scripted_losses(values):
    """An evaluate() whose val_loss follows `values`, and records the weights at each epoch."""
    seen = []

    def evaluate(model, loader):
        seen.append({k: v.clone() for k, v in model.state_dict().items()})
        return {"loss": values[len(seen) - 1]}

    return evaluate, seen


def test_early_stopping_restores_the_best_validation_weights():
    loader, _ = _problem()
    model = nn.Linear(4, 2)
    evaluate, seen = _scripted_losses([1.0, 0.5, 0.7, 0.8, 0.9, 0.95])
    result = fit(model, loader, loader, nn.CrossEntropyLoss(), TrainConfig(epochs=6, lr=0.05, patience=2,
                                                                          progress=False), evaluate, log=False)
    assert (result.best_epoch, result.epochs_run, result.stopped_early) == (2, 4, True)
    assert [h["val_loss"] for h in result.history] == [1.0, 0.5, 0.7, 0.8]
    for key, value in model.state_dict().items():  # the weights of epoch 2, not of the last epoch
        assert torch.equal(value, seen[1][key])
    assert not torch.equal(model.state_dict()["weight"], seen[3]["weight"])


def test_a_hook_that_raises_stops_training_after_that_epoch():
    loader, _ = _problem()
    epochs = []

    def hook(epoch, metrics):
        epochs.append(epoch)
        assert "train_loss" in metrics and "val_loss" in metrics
        if epoch == 2:
            raise Stop

    evaluate, _ = _scripted_losses([0.9, 0.8, 0.7, 0.6])
    with pytest.raises(Stop):
        fit(nn.Linear(4, 2), loader, loader, nn.CrossEntropyLoss(), TrainConfig(epochs=4, progress=False),
            evaluate, on_epoch=hook, log=False)
    assert epochs == [1, 2]


def test_without_validation_the_last_epoch_is_kept_and_the_loss_falls():
    loader, data = _problem(128)
    model = nn.Linear(4, 2)
    result = fit(model, loader, None, nn.CrossEntropyLoss(), TrainConfig(epochs=8, lr=0.1, progress=False),
                 evaluate=lambda m, l: {}, log=False)
    assert result.best_epoch == 8 and result.epochs_run == 8 and not result.stopped_early
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    with torch.inference_mode():
        accuracy = (model(data.tensors[0]).argmax(1) == data.tensors[1]).float().mean().item()
    assert accuracy > 0.9


def test_mixed_precision_and_channels_last_train_and_hand_back_an_fp32_cpu_model():
    loader, data = _problem(128)
    model = nn.Sequential(nn.Unflatten(1, (4, 1, 1)), nn.Conv2d(4, 8, 1), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2))
    config = TrainConfig(epochs=6, lr=0.05, precision="bf16", channels_last=True, progress=False)
    result = fit(model, loader, None, nn.CrossEntropyLoss(), config, evaluate=lambda m, b: {}, log=False)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in model.parameters())
    assert model[1].weight.is_contiguous()  # back to the default layout: saved and exported as usual


def test_the_kind_of_cpu_comes_from_its_bf16_instructions():
    from projects.core.device import cpu_kind_from_flags

    assert cpu_kind_from_flags("flags : fpu avx2 avx512f avx512_vnni") == "cpu"
    assert cpu_kind_from_flags("flags : avx512f avx512_bf16 avx512_vnni") == "cpu-bf16"
    assert cpu_kind_from_flags("flags : avx512_bf16 amx_tile amx_bf16 amx_int8") == "cpu-amx"
    assert cpu_kind_from_flags("flags : avx512_bf16x") == "cpu"  # a whole flag, not a prefix


def test_devices_and_precisions_are_checked_with_one_line():
    from projects.core import device
    from projects.core.errors import InputError

    cpu = torch.device("cpu")
    assert device.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert device.resolve_precision("fp32", "unet", cpu) == "fp32"
    kind = device.device_kind(cpu)
    assert device.resolve_precision("auto", "unet", cpu) == ("fp32" if kind == "cpu" else "bf16")
    # measured per kind of CPU: with bf16 instructions (AVX512-BF16 or AMX) bf16 trained the classifier ~2x faster
    assert device.resolve_precision("auto", "timm", cpu) == ("fp32" if kind == "cpu" else "bf16")
    # the table is keyed by device kind too: on CUDA the classifier family measured fastest in fp32
    assert device.resolve_precision("auto", "timm", torch.device("cuda")) == "fp32"
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="^device: cuda:1 was asked for, but this machine has no CUDA GPU"):
            device.check_device("cuda:1")
    with pytest.raises(InputError, match="unknown device 'tpu'"):
        device.check_device("tpu")
    with pytest.raises(InputError, match="fp16 mixed precision is for GPUs"):
        device.resolve_precision("fp16", "unet", cpu)
    with pytest.raises(InputError, match="precision"):
        TrainConfig(precision="fp8")


def test_selection_on_a_validation_metric_keeps_its_best_epoch_ties_to_the_later():
    loader, _ = _problem()
    scores = [0.5, 0.7, 0.6, 0.7, 0.65]
    seen = []

    def evaluate(model, batches):
        seen.append({k: v.clone() for k, v in model.state_dict().items()})
        return {"loss": 0.1 * len(seen), "balanced_accuracy": scores[len(seen) - 1]}  # loss alone would keep epoch 1

    model = nn.Linear(4, 2)
    config = TrainConfig(epochs=5, lr=0.05, select_on="balanced_accuracy", lr_schedule="cosine", progress=False)
    result = fit(model, loader, loader, nn.CrossEntropyLoss(), config, evaluate, log=False)
    assert result.best_epoch == 4 and result.best_metrics["val_balanced_accuracy"] == 0.7
    assert all(torch.equal(v, seen[3][k]) for k, v in model.state_dict().items())
    with pytest.raises(Exception, match="select_on: 'f1_macro' is not a validation metric of this study"):
        fit(nn.Linear(4, 2), loader, loader, nn.CrossEntropyLoss(), TrainConfig(epochs=1, select_on="f1_macro",
                                                                               progress=False),
            lambda model, batches: {"loss": 0.1, "balanced_accuracy": 0.5}, log=False)


def test_balanced_sampling_draws_every_class_about_equally():
    import numpy as np

    from projects.core.training import balanced_sampler

    labels = np.array([0] * 90 + [1] * 9 + [2] * 1)
    drawn = labels[list(balanced_sampler(labels, torch.Generator().manual_seed(0)))]
    for _ in range(29):
        drawn = np.concatenate([drawn, labels[list(balanced_sampler(labels, torch.Generator().manual_seed(_ + 1)))]])
    shares = np.bincount(drawn, minlength=3) / len(drawn)
    assert np.allclose(shares, 1 / 3, atol=0.05), shares  # against 0.90 / 0.09 / 0.01 in the data


def test_the_epoch_line_of_a_long_run_says_what_the_epoch_took_and_the_most_time_left():
    line = epoch_line(3, 40, {"train_loss": 0.51234, "val_loss": 0.448}, seconds=124.4)
    assert line == "epoch 3/40  train_loss=0.5123  val_loss=0.4480  (124 s; at most 77 min left)"
    assert epoch_line(40, 40, {}, seconds=124.4).endswith("(124 s; at most 0 min left)")
