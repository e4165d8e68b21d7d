"""The pathology losses: the paper's BCE and BCE + soft Dice, both blind to padded pixels."""
import pytest
import torch

from pipeline.real_data import unit_settings
from projects.core.errors import InputError
from projects.pathology.config import PathologyConfig
from projects.pathology.trainer import LOSSES, MaskedBCE, MaskedBCEDice


def _target(mask: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    valid = torch.ones_like(mask) if valid is None else valid
    return torch.stack([mask, valid], dim=1).float()


def _nuclei() -> torch.Tensor:
    mask = torch.zeros(2, 16, 16)
    mask[:, 4:8, 4:8] = 1.0  # a nucleus in each tile: 1/16 of the pixels
    return mask


def test_bce_dice_is_bce_plus_one_minus_the_soft_dice():
    mask = _nuclei()
    logits = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    prob = torch.sigmoid(logits)
    dice = (2 * (prob[:, 0] * mask).sum() + 1) / (prob.sum() + mask.sum() + 1)
    expected = MaskedBCE()(logits, _target(mask)) + 1 - dice
    assert MaskedBCEDice()(logits, _target(mask)).item() == pytest.approx(expected.item(), rel=1e-5)


def test_a_confident_right_answer_costs_almost_nothing_and_a_missed_nucleus_costs_the_dice_term():
    mask = _nuclei()
    right = (mask * 2 - 1).unsqueeze(1) * 20  # logits +-20: probabilities 0 or 1 where they should be
    missed = -20 * torch.ones_like(right)  # all background: BCE is small (1/16 of pixels), Dice is 0
    assert MaskedBCEDice()(right, _target(mask)).item() < 1e-3
    bce, bce_dice = MaskedBCE()(missed, _target(mask)).item(), MaskedBCEDice()(missed, _target(mask)).item()
    # 1 - Dice with the +1 smoothing: 1 - 1 / (nucleus pixels + 1)
    assert bce_dice - bce == pytest.approx(1 - 1 / (mask.sum().item() + 1), rel=1e-5)


def test_padded_pixels_change_neither_loss():
    mask = _nuclei()
    valid = torch.ones_like(mask)
    valid[:, :, 12:] = 0  # a tile's padding: no label
    logits = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    garbage = logits.clone()
    garbage[:, :, :, 12:] = 50.0  # whatever the model says on padding
    for name, loss in LOSSES.items():
        a, b = loss()(logits, _target(mask, valid)), loss()(garbage, _target(mask, valid))
        assert a.item() == pytest.approx(b.item(), rel=1e-6), name


def test_an_unknown_loss_is_refused_by_name():
    with pytest.raises(InputError, match="loss"):
        PathologyConfig.of(loss="focal")


def test_the_papers_loss_leaves_the_keys_of_earlier_records_unchanged():
    # Records written before the setting existed trained with BCE: their unit keys must not move.
    assert "loss" not in unit_settings(PathologyConfig.of())
    assert unit_settings(PathologyConfig.of(loss="bce_dice"))["loss"] == "bce_dice"
