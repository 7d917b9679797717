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


def test_official_conventions_precision_recall_macro():
    """sklearn classification_report semantics (official testing.py): macro F1 over the classes present in truth or
    prediction; precision/recall per class."""
    gt = torch.tensor([0, 0, 1, 1, 2, 2])
    pred = torch.tensor([0, 1, 1, 1, 1, 2])
    s = segmentation_scores(confusion_matrix(pred, gt, 9))
    assert s["precision_per_class"][:3] == pytest.approx([1.0, 2 / 4, 1.0])
    assert s["recall_per_class"][:3] == pytest.approx([1 / 2, 1.0, 1 / 2])
    f1 = [2 / 3, 2 / 3, 2 / 3]
    assert s["f1_per_class"][:3] == pytest.approx(f1)
    assert s["f1_macro"] == pytest.approx(sum(f1) / 3)  # the 6 absent classes are not averaged in
    # official abs_perc_difference: a video without true withdrawal frames scores 0 (not n_pred / 1)
    assert withdrawal_time_error(torch.tensor([2, 3, 0]), torch.tensor([0, 0, 1])) == 0.0
    assert withdrawal_time_error(torch.tensor([2, 3, 2]), torch.tensor([2, -100, 1])) == pytest.approx(100.0)


def test_accumulator_pools_frames_and_averages_withdrawal_per_video():
    from convatlas.tasks.sequence_labelling import SequenceLabellingMetrics, SequenceLabellingTask

    task = SequenceLabellingTask.official_colontcn()
    assert task.withdrawal_classes == tuple(range(2, 9))
    acc = task.metrics()
    # two videos (rows), the second padded; errors 50% (2 vs 4 true withdrawal frames) and 0% (exact)
    gt = torch.tensor([[0, 2, 3, 4, 5, -100], [1, 2, 2, 0, -100, -100]])
    pred = torch.tensor([[0, 2, 3, 0, 1, 7], [1, 2, 2, 0, 5, 5]])
    logits = torch.nn.functional.one_hot(pred, 9).float() * 10
    acc.update(logits[:1], gt[:1])
    acc.update(logits[1:], gt[1:])
    r = acc.compute()
    assert r["withdrawal_error"] == pytest.approx(25.0)
    ref = segmentation_scores(confusion_matrix(pred, gt, 9))  # frames of all videos pooled, as official
    assert r["jaccard_weighted"] == pytest.approx(ref["jaccard_weighted"]) and r["accuracy"] == pytest.approx(7 / 9)
    # state round trip (distributed all-reduce / checkpoints), older states without the withdrawal entries load
    other = SequenceLabellingMetrics(9, range(2, 9))
    other.load_state(acc.state())
    assert other.compute() == r
    old = SequenceLabellingMetrics(9)
    old.load_state(acc.state()[:-2])
    assert "withdrawal_error" not in old.compute()
    with pytest.raises(ValueError, match="K=9"):
        old.load_state(torch.zeros(5))
    with pytest.raises(ValueError, match="withdrawal_classes"):
        SequenceLabellingTask(4, withdrawal_classes=range(2, 9))


def test_class_weights_from_labels_inverse_frequency():
    """``class_weights: compute`` (official EmbeddingsDataset.compute_weights: total / count per present class):
    ours has the same ratios, scaled to mean 1 over the present classes; absent classes get 0; ignored frames skip."""
    from convatlas.tasks.sequence_labelling import class_weights_from_labels

    labels = [torch.tensor([0, 0, 0, 1, -100]), torch.tensor([1, 3, 3, 3, 3, 3])]
    w = class_weights_from_labels(labels, 5)
    counts = torch.tensor([3.0, 2.0, 0.0, 5.0, 0.0])
    official = torch.where(counts > 0, counts.sum() / counts.clamp(min=1), torch.zeros(5))
    torch.testing.assert_close(w, official / official[counts > 0].mean())
    assert w[2] == 0 and w[4] == 0 and w[counts > 0].mean() == pytest.approx(1.0)
