"""Test-time augmentation of tiles (projects/pathology/models/tta.py): the mean probability of
the 8 flips and quarter turns, each view's map turned back, as logits; and the logged model
rebuilt with it."""
import pytest
import torch
from torch import nn

from projects.pathology.config import PathologyConfig
from projects.pathology.models import build_model
from projects.pathology.models.tta import DihedralMean, deployed
from projects.pathology.serving import TumourMaskModel, probability_module
from projects.pathology.trainer import TRAINER


def _tiles(n: int = 2, size: int = 16) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0))


def test_a_network_blind_to_orientation_is_unchanged():
    pointwise = nn.Conv2d(3, 1, 1)  # a 1x1 convolution sees no orientation
    x = _tiles()
    with torch.no_grad():
        assert torch.allclose(DihedralMean(pointwise)(x), pointwise(x), atol=1e-4)


def test_the_output_is_the_logit_of_the_mean_of_the_eight_views_turned_back():
    torch.manual_seed(0)
    net = nn.Conv2d(3, 1, 3, padding=1)  # a 3x3 kernel does see orientation
    x = _tiles()
    views = []
    with torch.no_grad():
        for k in range(4):
            for flip in (False, True):
                v = torch.rot90(x, k, (2, 3))
                v = torch.flip(v, (3,)) if flip else v
                p = torch.sigmoid(net(v))
                p = torch.flip(p, (3,)) if flip else p
                views.append(torch.rot90(p, -k, (2, 3)))
        mean = torch.stack(views).mean(0)
        got = torch.sigmoid(DihedralMean(net)(x))
    assert torch.allclose(got, mean, atol=1e-5)
    assert not torch.allclose(got, torch.sigmoid(net(x)), atol=1e-3)  # the views did differ


def test_the_run_evaluates_times_and_logs_the_deployed_model():
    net = build_model("elunet", 4, 3)
    assert TRAINER.deployed(PathologyConfig.of(), net) is net
    wrapped = TRAINER.deployed(PathologyConfig.of(tta=True), net)
    assert isinstance(wrapped, DihedralMean) and wrapped.network is net


@pytest.mark.parametrize("tta", [False, True])
def test_the_logged_weights_load_into_the_model_the_settings_rebuild(tta):
    settings = {"arch": "elunet", "filters": 4, "depth": 3, "upsample": "bilinear", "tta": tta}
    logged = probability_module(deployed(build_model("elunet", 4, 3), tta))
    rebuilt = TumourMaskModel.build_module(TumourMaskModel(), settings)
    rebuilt.load_state_dict(logged.state_dict())  # strict: the same keys, wrapper or not
    x = _tiles(1, 32)
    with torch.no_grad():
        assert torch.allclose(rebuilt.eval()(x), logged.eval()(x), atol=1e-6)
