"""10-fold face-verification accuracy (LFW / AgeDB-30 / CALFW / CFP-FF protocol) used by TVConv (card: tvconv).

Procedure of the official ``face_recognition/utils/utils.py`` (``evaluation_10_fold``, FaceX-Zoo lineage): for each
fold i, the mean embedding of the nine other folds (both images of every pair) is subtracted from all embeddings,
embeddings are L2-normalised, the score of a pair is the squared L2 distance, the threshold that maximises accuracy
on the nine other folds is chosen from the grid ``k * 3 / T`` (k = -T..T, T = 10000; the mean of all maximising grid
points), and accuracy is measured on fold i. The result is the mean over folds (in %) and the mean threshold.

Difference from the official loop: there the centring is applied cumulatively to the already-centred, normalised
embeddings of the previous fold (the arrays are overwritten); here every fold centres the original embeddings,
which is what the procedure describes. The two agree whenever the embeddings are already centred.

Shapes: emb1, emb2 (N, D); folds (N,) ints in [0, 10); same (N,) bool (True = same identity).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["verification_accuracy_10fold", "best_threshold"]


def _accuracy_at(scores: Tensor, same: Tensor, thresholds: Tensor) -> Tensor:
    """Accuracy of 'same iff score < t' for every t in ``thresholds`` (vectorised with sorted scores)."""
    pos = torch.sort(scores[same]).values
    neg = torch.sort(scores[~same]).values
    n_pos_below = torch.searchsorted(pos, thresholds, side="left")  # pos scores < t
    n_neg_above = neg.numel() - torch.searchsorted(neg, thresholds, side="right")  # neg scores > t
    return (n_pos_below + n_neg_above).double() / scores.numel()


def best_threshold(scores: Tensor, same: Tensor, steps: int = 10000) -> float:
    """Mean of the grid thresholds ``k * 3 / steps`` (k = -steps..steps) with the highest accuracy."""
    grid = torch.arange(-steps, steps + 1, dtype=torch.float64) * 3.0 / steps
    acc = _accuracy_at(scores.double(), same, grid)
    return float(grid[acc == acc.max()].mean())


def verification_accuracy_10fold(emb1: Tensor, emb2: Tensor, folds: Tensor, same: Tensor,
                                 steps: int = 10000) -> tuple[float, float]:
    """Mean 10-fold verification accuracy in % and mean threshold (squared L2 distance of centred unit vectors)."""
    if emb1.shape != emb2.shape or emb1.ndim != 2:
        raise ValueError(f"verification_accuracy_10fold: expected two (N, D) embeddings, got {tuple(emb1.shape)} "
                         f"and {tuple(emb2.shape)}")
    n = emb1.shape[0]
    if folds.shape != (n,) or same.shape != (n,):
        raise ValueError(f"verification_accuracy_10fold: folds and same must be ({n},), got {tuple(folds.shape)} "
                         f"and {tuple(same.shape)}")
    e1, e2 = F.normalize(emb1.double(), dim=1), F.normalize(emb2.double(), dim=1)  # official l2_norm first
    same = same.bool()
    accs, thrs = [], []
    for i in range(10):
        val, test = folds != i, folds == i
        mu = torch.cat([e1[val], e2[val]]).mean(0, keepdim=True)
        a, b = F.normalize(e1 - mu, dim=1), F.normalize(e2 - mu, dim=1)
        scores = (a - b).square().sum(1)
        thr = best_threshold(scores[val], same[val], steps)
        accs.append(float(_accuracy_at(scores[test], same[test], torch.tensor([thr], dtype=torch.float64))[0]))
        thrs.append(thr)
    return 100.0 * sum(accs) / 10, sum(thrs) / 10
