"""10-fold face verification protocol (card: tvconv)."""

from __future__ import annotations

import pytest
import torch

from convatlas.analysis.face_verification import best_threshold, verification_accuracy_10fold


def _pairs(n: int, noise: float, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randn(n, 16, generator=g)
    same = torch.arange(n) % 2 == 0
    other = torch.randn(n, 16, generator=g)
    e1 = ids + noise * torch.randn(n, 16, generator=g)
    e2 = torch.where(same[:, None], ids, other) + noise * torch.randn(n, 16, generator=g)
    folds = (torch.arange(n) // 2) % 10  # each fold holds same and different pairs
    return e1, e2, folds, same


def test_separable_pairs_reach_100_and_noise_is_chance() -> None:
    acc, thr = verification_accuracy_10fold(*_pairs(600, 0.05))
    assert acc == 100.0 and 0 < thr < 4
    acc_rand, _ = verification_accuracy_10fold(*_pairs(600, 100.0))
    assert 35 < acc_rand < 65


def test_threshold_is_mean_of_maximising_grid_points() -> None:
    scores = torch.tensor([0.1, 0.2, 1.0, 1.2], dtype=torch.float64)
    same = torch.tensor([True, True, False, False])
    # every grid point in (0.2, 1.0] separates perfectly; the mean of 0.2003..1.0 (step 3e-4) is ~0.6
    assert best_threshold(scores, same) == pytest.approx(0.6, abs=1e-3)


def test_bad_shapes() -> None:
    e = torch.randn(10, 4)
    with pytest.raises(ValueError, match="embeddings"):
        verification_accuracy_10fold(e, torch.randn(10, 5), torch.zeros(10), torch.ones(10))
    with pytest.raises(ValueError, match="folds"):
        verification_accuracy_10fold(e, e, torch.zeros(9), torch.ones(10))
