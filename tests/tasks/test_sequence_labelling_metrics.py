"""Sequence-labelling metrics (card colontcn worked example) and TMSE loss."""

from __future__ import annotations

import pytest
import torch

from convatlas.tasks.sequence_labelling import (
    confusion_matrix,
    count_segments,
    segmentation_scores,
    tmse_loss,
    withdrawal_time_error,
)


def test_card_worked_example():
    s = segmentation_scores(confusion_matrix(torch.tensor([0, 1, 1, 1]), torch.tensor([0, 0, 1, 1]), 9))
    assert s["jaccard_per_class"][:2] == pytest.approx([0.5, 2 / 3])
    assert s["jaccard_weighted"] == pytest.approx(0.5833, abs=1e-4)
    assert s["jaccard_mean_official"] == pytest.approx(0.1296, abs=1e-4)
    assert s["accuracy"] == 0.75
    assert s["f1_per_class"][:2] == pytest.approx([2 / 3, 0.8])


def test_withdrawal_and_segments_and_tmse():
    gt = torch.tensor([0, 0, 1, 2, 2, 3, 3, 8])
    pred = torch.tensor([0, 1, 1, 1, 2, 3, 3, 8])
    assert withdrawal_time_error(pred, gt) == pytest.approx(20.0)  # 4 vs 5 withdrawal frames
    assert count_segments(gt) == 5
    flat = torch.zeros(2, 10, 4)
    assert tmse_loss(flat) == 0
    noisy = torch.randn(2, 10, 4) * 100
    assert tmse_loss(noisy) <= 16.0 + 1e-5  # truncated at threshold**2
