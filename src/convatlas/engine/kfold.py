"""Dual k-fold cross-validation protocol (card: colontcn, arXiv 2502.03430).

The paper evaluates on REAL-Colon (60 videos from 4 centers/cohorts) with *two* k-fold settings, one of which
assesses "unseen, multi-center data". The official repository ships the split lists (data/dataset/RC_lists/
{4_fold,5_fold}) but the card does not record their content; we implement the protocol as:

- ``"cross_center"`` (k = number of centers, 4 for REAL-Colon): leave-one-center-out; every test fold is an
  entire unseen center.
- ``"mixed"`` (k = 5): every fold holds ~1/k of each center's videos (center-stratified random split), so train
  and test share centers.

:func:`dual_kfold_splits` returns the folds of both settings; :func:`dual_kfold_evaluate` runs a user
``train_and_eval(train_ids, test_ids) -> {metric: float}`` on every fold and aggregates mean/std per setting.
Official split lists can be passed instead of the generated ones (``custom_splits``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

__all__ = ["Fold", "dual_kfold_splits", "dual_kfold_evaluate", "DualKFoldResult"]


@dataclass(frozen=True)
class Fold:
    """One fold: the setting's name, fold index, and the item indices for training and testing."""

    setting: str
    index: int
    train: tuple[int, ...]
    test: tuple[int, ...]


@dataclass
class DualKFoldResult:
    """Per-fold metrics and their mean/std for each setting."""

    folds: list[tuple[Fold, dict[str, float]]] = field(default_factory=list)
    summary: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)

    def table(self) -> str:
        """Markdown table: setting | metric | mean ± std (n folds)."""
        lines = ["| setting | metric | mean ± std |", "|---|---|---|"]
        for setting, metrics in self.summary.items():
            n = sum(1 for f, _ in self.folds if f.setting == setting)
            for name, (mu, sd) in metrics.items():
                lines.append(f"| {setting} (k={n}) | {name} | {mu:.4f} ± {sd:.4f} |")
        return "\n".join(lines)


def dual_kfold_splits(groups: Sequence[int], *, mixed_k: int = 5, seed: int = 0) -> list[Fold]:
    """Folds of both settings for items whose acquisition center is ``groups[i]``.

    Args:
        groups: center id of every item (video).
        mixed_k: number of folds of the center-stratified setting.
        seed: shuffling seed of the stratified setting.

    Returns:
        ``len(set(groups))`` cross-center folds followed by ``mixed_k`` mixed folds; in each setting every item
        is tested exactly once and never appears in its own fold's training set.
    """
    groups = [int(g) for g in groups]
    centers = sorted(set(groups))
    if len(centers) < 2:
        raise ValueError(f"dual_kfold_splits: need >= 2 centers for the cross-center setting, got {centers}")
    if mixed_k < 2 or mixed_k > len(groups):
        raise ValueError(f"dual_kfold_splits: mixed_k must be in [2, {len(groups)}], got {mixed_k}")
    all_ids = list(range(len(groups)))
    folds = []
    for i, c in enumerate(centers):
        test = tuple(j for j in all_ids if groups[j] == c)
        folds.append(Fold("cross_center", i, tuple(j for j in all_ids if groups[j] != c), test))
    g = torch.Generator().manual_seed(seed)
    assign = [0] * len(groups)
    offset = 0
    for c in centers:  # deal each center's shuffled videos round-robin, continuing across centers for balance
        members = [j for j in all_ids if groups[j] == c]
        perm = torch.randperm(len(members), generator=g).tolist()
        for r, p in enumerate(perm):
            assign[members[p]] = (offset + r) % mixed_k
        offset += len(members)
    for f in range(mixed_k):
        test = tuple(j for j in all_ids if assign[j] == f)
        folds.append(Fold("mixed", f, tuple(j for j in all_ids if assign[j] != f), test))
    return folds


def dual_kfold_evaluate(
    groups: Sequence[int],
    train_and_eval: Callable[[tuple[int, ...], tuple[int, ...]], dict[str, float]],
    *,
    mixed_k: int = 5,
    seed: int = 0,
    custom_splits: Sequence[Fold] | None = None,
) -> DualKFoldResult:
    """Run ``train_and_eval(train_ids, test_ids)`` on every fold of both settings and aggregate.

    The callable trains a fresh model on ``train_ids`` and returns test metrics (floats). The summary holds
    ``(mean, sample std)`` of each metric per setting.
    """
    folds = list(custom_splits) if custom_splits is not None else dual_kfold_splits(groups, mixed_k=mixed_k,
                                                                                    seed=seed)
    res = DualKFoldResult()
    for fold in folds:
        res.folds.append((fold, dict(train_and_eval(fold.train, fold.test))))
    for setting in dict.fromkeys(f.setting for f in folds):
        rows = [m for f, m in res.folds if f.setting == setting]
        summary = {}
        for name in rows[0]:
            vals = [float(r[name]) for r in rows]
            mu = sum(vals) / len(vals)
            sd = math.sqrt(sum((v - mu) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
            summary[name] = (mu, sd)
        res.summary[setting] = summary
    return res
