"""Dual k-fold protocol (card colontcn): disjointness, coverage, center holdout, aggregation."""

from __future__ import annotations

import pytest

from convatlas.engine.kfold import dual_kfold_evaluate, dual_kfold_splits


def test_dual_kfold_splits_cover_and_hold_out_centers():
    groups = [i % 4 for i in range(60)]  # REAL-Colon: 60 videos, 4 centers
    folds = dual_kfold_splits(groups, mixed_k=5, seed=0)
    cc = [f for f in folds if f.setting == "cross_center"]
    mx = [f for f in folds if f.setting == "mixed"]
    assert len(cc) == 4 and len(mx) == 5
    for setting in (cc, mx):
        tested = sorted(i for f in setting for i in f.test)
        assert tested == list(range(60))  # every video tested exactly once
        for f in setting:
            assert not set(f.train) & set(f.test)
            assert len(f.train) + len(f.test) == 60
    for f in cc:
        assert len({groups[i] for i in f.test}) == 1
        assert {groups[i] for i in f.test}.isdisjoint({groups[i] for i in f.train})
    for f in mx:  # 12 videos per fold, 3 from each center
        assert len(f.test) == 12
        assert sorted(groups[i] for i in f.test) == sorted([0, 1, 2, 3] * 3)


def test_dual_kfold_evaluate_aggregates():
    groups = [0, 0, 1, 1, 2, 2]
    res = dual_kfold_evaluate(groups, lambda tr, te: {"n_test": float(len(te))}, mixed_k=2)
    assert res.summary["cross_center"]["n_test"] == (2.0, 0.0)
    assert res.summary["mixed"]["n_test"][0] == pytest.approx(3.0)
    assert "cross_center" in res.table()
    with pytest.raises(ValueError, match="centers"):
        dual_kfold_splits([0, 0, 0])
