"""Pathology model families: Table V parameter counts, shapes, the factory's errors."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import projects  # noqa: F401  (torchvision shim before smp/timm)
from projects.core.errors import InputError
from projects.pathology.models import (
    ARCHS,
    ELUNet,
    UNet,
    build_model,
    build_smp,
    count_params,
    count_params_keras,
    min_input_multiple,
)
from projects.pathology.models.paper import TABLE_V, UNTRAINABLE, param_count_table

UNET_CELLS = [c for c in TABLE_V if c.arch == "unet"]
ELUNET_CLOSED_FORM = {4: (2457, 266, 1), 5: (10062, 529, 1), 6: (40635, 1056, 1)}
UNET_CLOSED_FORM = {4: (1878, 96, 5), 5: (7574, 152, 5)}


def on_meta(arch: str, filters: int, depth: int) -> nn.Module:
    """Shapes only, no storage: counting a 31M-parameter model in milliseconds."""
    with torch.device("meta"):
        return build_model(arch, filters, depth)


def poly(coeffs: tuple[int, int, int], n: int) -> int:
    a, b, c = coeffs
    return a * n * n + b * n + c


@pytest.mark.parametrize("cell", UNET_CELLS, ids=lambda c: f"unet-{c.filters}-{c.depth}")
def test_unet_matches_table_v_exactly(cell):
    model = on_meta("unet", cell.filters, cell.depth)
    assert count_params_keras(model) == count_params(model) == cell.params  # no batch norm
    assert count_params(model) == poly(UNET_CLOSED_FORM[cell.depth], cell.filters)


def test_elunet_4_5_matches_table_v_exactly():
    assert count_params_keras(on_meta("elunet", 4, 5)) == 163_109


@pytest.mark.parametrize("depth", [4, 5, 6])
@pytest.mark.parametrize("filters", [4, 8, 16])
def test_elunet_closed_forms(filters, depth):
    model = on_meta("elunet", filters, depth)
    assert count_params_keras(model) == poly(ELUNET_CLOSED_FORM[depth], filters)


def test_keras_count_adds_two_moving_statistics_per_bn_channel():
    model = on_meta("elunet", 4, 4)
    bn_channels = sum(m.num_features for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert bn_channels > 0
    assert count_params_keras(model) - count_params(model) == 2 * bn_channels


def test_count_params_counts_trainable_only():
    model = on_meta("unet", 4, 4)
    total = count_params(model)
    for p in model.head.parameters():
        p.requires_grad_(False)
    assert count_params(model) == total - sum(p.numel() for p in model.head.parameters())
    assert count_params_keras(model) == total  # Keras' total includes frozen weights


@pytest.mark.parametrize(
    "model",
    [UNet(4, 4), ELUNet(4, 4), ELUNet(4, 4, upsample="nearest")],
    ids=["unet", "elunet-bilinear", "elunet-nearest"],
)
def test_forward_returns_logits_of_input_size(model):
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 1, 64, 64)
    assert torch.isfinite(out).all()
    # Logits: the paper's sigmoid is the caller's job.
    assert not any(isinstance(m, nn.Sigmoid) for m in model.modules())


def test_smp_builds_offline_and_returns_logits(monkeypatch):
    import segmentation_models_pytorch as smp

    def no_download(*args, **kwargs):
        raise AssertionError("smp tried to download weights")

    monkeypatch.setattr(smp.encoders, "hf_hub_download", no_download)
    model = build_model("smp:Unet:resnet18", filters=8, depth=3)
    assert len(model.decoder.blocks) == 3  # encoder_depth and decoder_channels followed depth
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 1, 64, 64)
    assert min_input_multiple("smp:Unet:resnet18", 3) == 8
    # Architecture names are case-insensitive, like smp.create_model.
    assert type(build_smp("smp:unetplusplus:resnet18", 3)).__name__ == "UnetPlusPlus"


@pytest.mark.parametrize(
    "arch, filters, depth, expected",
    [
        ("resnet", 8, 5, "unknown arch"),
        ("unet", 8, 1, "depth must be"),
        ("elunet", 8, 8, "depth must be"),
        ("unet", 0, 4, "filters must be"),
        ("smp:Unet", 8, 4, "expected 'smp:<Architecture>:<encoder>'"),
        ("smp:Unnet:resnet18", 8, 4, "valid: Unet, UnetPlusPlus"),
        ("smp:Unet:resnet19", 8, 4, "valid: tu-<any timm model>, resnet18"),
        ("smp:Unet:resnet18", 8, 6, "depth 6"),
    ],
)
def test_build_model_rejects_bad_input_readably(arch, filters, depth, expected):
    with pytest.raises(InputError) as info:
        build_model(arch, filters, depth)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


def test_bad_upsample_is_input_error():
    with pytest.raises(InputError, match="upsample"):
        build_model("elunet", 4, 4, upsample="bicubic")


def test_tile_not_divisible_by_min_input_multiple_is_detectable():
    assert ARCHS == ("unet", "elunet")
    assert min_input_multiple("unet", 5) == 16
    assert min_input_multiple("elunet", 4) == 8
    assert 256 % min_input_multiple("elunet", 6) == 0  # the paper's tiles fit every depth
    assert 100 % min_input_multiple("unet", 4) != 0
    with pytest.raises(InputError, match="not divisible by 8"):
        UNet(4, 4)(torch.randn(1, 3, 100, 100))


def test_table_v_data_and_param_count_table():
    assert len(TABLE_V) == 13
    assert sum(c.arch == "unet" for c in TABLE_V) == 4
    assert sum(c.arch == "elunet" for c in TABLE_V) == 9
    assert set(UNTRAINABLE) == {("unet", 32, 6), ("unet", 64, 6), ("unet", 128, 4), ("unet", 128, 5), ("unet", 128, 6)}
    rows = param_count_table()
    assert [(r["arch"], r["filters"], r["depth"]) for r in rows] == [(c.arch, c.filters, c.depth) for c in TABLE_V]
    matched = {(r["arch"], r["filters"], r["depth"]) for r in rows if r["match"]}
    assert matched == {(c.arch, c.filters, c.depth) for c in UNET_CELLS} | {("elunet", 4, 5)}
    for r in rows:
        assert r["diff"] == r["params_ours"] - r["params_paper"]
