"""Dual k-fold cross-validation protocol (card: colontcn, arXiv 2502.03430).

The paper evaluates on REAL-Colon (60 videos, 4 centers/cohorts x 15, ids ``CCC-VVV``) with *two* k-fold settings.
The official split lists (cosmoimd/temporal_segmentation ``data/dataset/RC_lists/{4_fold,5_fold}``, with the
train/valid/test assignment of ``ymls/training/colontcn_4fold/*.yml``) ship verbatim as package data
(``convatlas/data/real_colon_splits.json``); :func:`real_colon_folds` returns them. Protocol:

- ``"cross_center"`` (official 4-fold, unseen centers): fold f (1..4) trains on two centers, validates on a third
  and tests on the fourth: test center ``5 - f``, validation center ``4 - f`` (cyclic: fold 4 validates on
  center 4), training = the other two (official ymls: fold1 train {1, 2} valid 3 test 4, fold2 train {1, 4}
  valid 2 test 3, fold3 train {3, 4} valid 1 test 2, fold4 train {2, 3} valid 4 test 1).
- ``"mixed"`` (official 5-fold): every center's 15 videos are taken in a fixed (shuffled) cyclic order; fold f
  (0-based) tests on positions ``3f .. 3f+2`` of every center, validates on position ``3f+3`` and trains on the
  other 11 (44 / 4 / 12 videos per fold). The per-center orders recovered from the official lists are
  :data:`REAL_COLON_5FOLD_ORDER`.

:func:`dual_kfold_splits` implements both rules for any grouping: with ``valid=True`` and ``mixed_order`` it
reproduces the official lists (``tests/engine/test_colontcn_kfold.py``); without them it keeps the simpler
default (leave-one-center-out without a validation fold; seeded center-stratified round-robin for the mixed
setting). :func:`dual_kfold_evaluate` runs a user ``train_and_eval(train_ids, test_ids) -> {metric: float}`` on
every fold and aggregates mean/std per setting.

Official-list caveat (checked against the indexed repository, Nov 2026): ``5_fold/fold1_*.txt`` is only stored in
its earlier, unshuffled version (test = videos 001-003 of every center, valid = 004), while folds 2-5 were
re-drawn from the shuffled per-center order; as shipped, videos 001-003 and 004-003 are tested in both fold 1 and
fold 2 and 001-009 and 004-014 are never tested. ``real_colon_folds("5_fold")`` returns the lists as found
(``fold1="repository"``); ``fold1="cyclic"`` returns fold 1 of the cyclic rule (test 001-009/001/002, 002-001..003,
003-001..003, 004-001/014/002; valid 001-010, 002-004, 003-004, 004-003), the only fold 1 consistent with folds
2-5 (every video tested exactly once); that is also what ``dual_kfold_splits`` produces.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Callable, Literal, Mapping, Sequence

import torch

__all__ = [
    "Fold",
    "dual_kfold_splits",
    "dual_kfold_evaluate",
    "DualKFoldResult",
    "real_colon_video_ids",
    "real_colon_folds",
    "real_colon_split_lists",
    "REAL_COLON_5FOLD_ORDER",
]

# Per-center cyclic video order of the official 5-fold split (recovered from RC_lists/5_fold/fold{2..5}_*.txt:
# fold f tests positions 3f..3f+2 and validates on position 3f+3 of every center).
REAL_COLON_5FOLD_ORDER: dict[int, tuple[int, ...]] = {
    1: (9, 1, 2, 10, 3, 4, 13, 14, 5, 11, 15, 6, 7, 8, 12),
    2: (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
    3: (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
    4: (1, 14, 2, 3, 13, 4, 5, 6, 7, 8, 9, 10, 11, 12, 15),
}


@dataclass(frozen=True)
class Fold:
    """One fold: the setting's name, fold index, and the item indices for training, testing and (official
    protocol) validation / checkpoint selection."""

    setting: str
    index: int
    train: tuple[int, ...]
    test: tuple[int, ...]
    valid: tuple[int, ...] = ()


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


def dual_kfold_splits(
    groups: Sequence[int],
    *,
    mixed_k: int = 5,
    seed: int = 0,
    valid: bool = False,
    mixed_order: Mapping[int, Sequence[int]] | None = None,
) -> list[Fold]:
    """Folds of both settings for items whose acquisition center is ``groups[i]``.

    Args:
        groups: center id of every item (video).
        mixed_k: number of folds of the center-stratified setting.
        seed: shuffling seed of the stratified setting (when ``mixed_order`` is not given).
        valid: official protocol: hold out a validation center (cross-center: test center ``k-1-f``, validation
            center ``k-2-f`` mod k in sorted center order) and, in the mixed setting, the item following each
            center's test block in its cyclic order (see module notes).
        mixed_order: per-center item order for the mixed setting, ``{center: [positions within the center]}``
            (0-based rank of the item among that center's items in ``groups`` order); e.g. the official
            REAL-Colon order is ``{c: [v - 1 for v in REAL_COLON_5FOLD_ORDER[c]]}`` with centers 1..4.
            Default: a seeded permutation.

    Returns:
        ``len(set(groups))`` cross-center folds followed by ``mixed_k`` mixed folds; in each setting every item
        is tested exactly once and train / valid / test of a fold are disjoint.
    """
    groups = [int(g) for g in groups]
    centers = sorted(set(groups))
    k = len(centers)
    if k < 2 + int(valid):
        raise ValueError(f"dual_kfold_splits: need >= {2 + int(valid)} centers for the cross-center setting, "
                         f"got {centers}")
    if mixed_k < 2 or mixed_k > len(groups):
        raise ValueError(f"dual_kfold_splits: mixed_k must be in [2, {len(groups)}], got {mixed_k}")
    all_ids = list(range(len(groups)))
    members = {c: [j for j in all_ids if groups[j] == c] for c in centers}
    folds = []
    for i in range(k):
        if valid:
            c_test, c_val = centers[k - 1 - i], centers[(k - 2 - i) % k]
        else:
            c_test, c_val = centers[i], None
        test = tuple(members[c_test])
        val = tuple(members[c_val]) if c_val is not None else ()
        train = tuple(j for j in all_ids if groups[j] not in (c_test, c_val))
        folds.append(Fold("cross_center", i, train, test, val))
    g = torch.Generator().manual_seed(seed)
    if valid or mixed_order is not None:
        test_of: dict[int, int] = {}
        val_of: dict[int, set[int]] = {f: set() for f in range(mixed_k)}
        for c in centers:
            mem = members[c]
            if mixed_order is not None:
                order = [int(p) for p in mixed_order[c]]
                if sorted(order) != list(range(len(mem))):
                    raise ValueError(f"dual_kfold_splits: mixed_order[{c}] must permute range({len(mem)}), got {order}")
            else:
                order = torch.randperm(len(mem), generator=g).tolist()
            n = len(mem)
            if n < mixed_k + int(valid):
                raise ValueError(f"dual_kfold_splits: center {c} has {n} items, fewer than the {mixed_k} folds"
                                 + (" + 1 validation item" if valid else ""))
            bounds = [f * n // mixed_k for f in range(mixed_k + 1)]
            for f in range(mixed_k):
                for p in order[bounds[f] : bounds[f + 1]]:
                    test_of[mem[p]] = f
                if valid:
                    val_of[f].add(mem[order[bounds[f + 1] % n]])
        for f in range(mixed_k):
            test = tuple(j for j in all_ids if test_of[j] == f)
            val = tuple(sorted(val_of[f]))
            train = tuple(j for j in all_ids if test_of[j] != f and j not in val_of[f])
            folds.append(Fold("mixed", f, train, test, val))
        return folds
    assign = [0] * len(groups)
    offset = 0
    for c in centers:  # deal each center's shuffled videos round-robin, continuing across centers for balance
        mem = members[c]
        perm = torch.randperm(len(mem), generator=g).tolist()
        for r, p in enumerate(perm):
            assign[mem[p]] = (offset + r) % mixed_k
        offset += len(mem)
    for f in range(mixed_k):
        test = tuple(j for j in all_ids if assign[j] == f)
        folds.append(Fold("mixed", f, tuple(j for j in all_ids if assign[j] != f), test))
    return folds


@lru_cache(maxsize=1)
def _split_data() -> dict:
    return json.loads(resources.files("convatlas.data").joinpath("real_colon_splits.json").read_text())


def real_colon_video_ids() -> list[str]:
    """The 60 REAL-Colon video ids ``CCC-VVV`` (center CCC = 001..004, video VVV = 001..015), sorted."""
    return [f"{c:03d}-{v:03d}" for c in range(1, 5) for v in range(1, 16)]


def real_colon_split_lists(setting: Literal["4_fold", "5_fold"]) -> dict[str, list[str]]:
    """The official list files of one setting, verbatim: ``{"1": [...], ...}`` (4_fold: one list per center) or
    ``{"fold1_train": [...], "fold1_valid": [...], "fold1_test": [...], ...}`` (5_fold)."""
    if setting not in ("4_fold", "5_fold"):
        raise ValueError(f"real_colon_split_lists: setting must be '4_fold' or '5_fold', got {setting!r}")
    return {k: list(v) for k, v in _split_data()[setting].items()}


def real_colon_folds(
    setting: Literal["4_fold", "5_fold"], fold1: Literal["repository", "cyclic"] = "repository"
) -> list[dict[str, list[str]]]:
    """Official REAL-Colon folds: a list (fold 1 first) of ``{"train": ids, "valid": ids, "test": ids}``.

    4_fold: the cross-center assignment of the official training ymls. 5_fold: the list files;
    ``fold1="cyclic"`` replaces the stale fold-1 files by the fold consistent with folds 2-5 (module notes).
    Map ids to indices of :func:`real_colon_video_ids` to compare with :func:`dual_kfold_splits`.
    """
    lists = real_colon_split_lists(setting)
    if setting == "4_fold":
        proto = _split_data()["4_fold_protocol"]
        return [
            {"train": [v for c in p["train"] for v in lists[c]], "valid": list(lists[p["valid"]]),
             "test": list(lists[p["test"]])}
            for p in (proto[f"fold{f}"] for f in range(1, 5))
        ]
    if fold1 not in ("repository", "cyclic"):
        raise ValueError(f"real_colon_folds: fold1 must be 'repository' or 'cyclic', got {fold1!r}")
    folds = [{s: list(lists[f"fold{f}_{s}"]) for s in ("train", "valid", "test")} for f in range(1, 6)]
    if fold1 == "cyclic":
        ids = real_colon_video_ids()
        groups = [int(v[:3]) for v in ids]
        order = {c: [v - 1 for v in REAL_COLON_5FOLD_ORDER[c]] for c in range(1, 5)}
        f0 = [f for f in dual_kfold_splits(groups, valid=True, mixed_order=order) if f.setting == "mixed"][0]
        folds[0] = {"train": [ids[i] for i in f0.train], "valid": [ids[i] for i in f0.valid],
                    "test": [ids[i] for i in f0.test]}
    return folds


def dual_kfold_evaluate(
    groups: Sequence[int],
    train_and_eval: Callable[[tuple[int, ...], tuple[int, ...]], dict[str, float]],
    *,
    mixed_k: int = 5,
    seed: int = 0,
    custom_splits: Sequence[Fold] | None = None,
    with_valid: bool = False,
) -> DualKFoldResult:
    """Run ``train_and_eval(train_ids, test_ids)`` on every fold of both settings and aggregate.

    The callable trains a fresh model on ``train_ids`` and returns test metrics (floats). With ``with_valid=True``
    it is called as ``train_and_eval(train_ids, test_ids, valid_ids)`` (the official protocol selects the
    checkpoint on each fold's validation videos; empty where a split has none). The summary holds
    ``(mean, sample std)`` of each metric per setting.
    """
    folds = list(custom_splits) if custom_splits is not None else dual_kfold_splits(groups, mixed_k=mixed_k,
                                                                                    seed=seed)
    res = DualKFoldResult()
    for fold in folds:
        args = (fold.train, fold.test, fold.valid) if with_valid else (fold.train, fold.test)
        res.folds.append((fold, dict(train_and_eval(*args))))
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
