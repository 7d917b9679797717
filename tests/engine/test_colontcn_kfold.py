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


def test_dual_kfold_evaluate_passes_validation_ids_when_asked():
    groups = [c for c in range(4) for _ in range(4)]
    seen = []

    def train_and_eval(tr, te, va):
        seen.append((set(tr), set(te), set(va)))
        return {"n_valid": float(len(va))}

    res = dual_kfold_evaluate(groups, train_and_eval, mixed_k=3, with_valid=True,
                              custom_splits=dual_kfold_splits(groups, mixed_k=3, valid=True))
    assert len(seen) == 4 + 3
    assert all(va and not (va & tr) and not (va & te) for tr, te, va in seen)
    assert res.summary["cross_center"]["n_valid"] == (4.0, 0.0)
    with pytest.raises(TypeError):  # without the flag the callable gets two arguments
        dual_kfold_evaluate(groups, train_and_eval, mixed_k=3)


def test_dual_kfold_reproduces_official_real_colon_lists():
    """The official RC_lists (package data) are reproduced by the generic rule: 4-fold exactly, 5-fold folds 2-5
    exactly and fold 1 in its cyclic (consistent) form; the stale repository fold 1 overlaps fold 2."""
    from convatlas.engine.kfold import REAL_COLON_5FOLD_ORDER, real_colon_folds, real_colon_video_ids

    ids = real_colon_video_ids()
    groups = [int(v[:3]) for v in ids]
    order = {c: [v - 1 for v in REAL_COLON_5FOLD_ORDER[c]] for c in range(1, 5)}
    folds = dual_kfold_splits(groups, valid=True, mixed_order=order)
    named = {s: [f for f in folds if f.setting == s] for s in ("cross_center", "mixed")}

    def as_ids(f):
        return {s: sorted(ids[i] for i in getattr(f, s)) for s in ("train", "valid", "test")}

    official4 = real_colon_folds("4_fold")
    assert [as_ids(f) for f in named["cross_center"]] == [{s: sorted(o[s]) for s in o} for o in official4]
    assert [len(f["train"]) for f in official4] == [30] * 4 and official4[0]["test"][0] == "004-001"
    for fl in ("repository", "cyclic"):
        official5 = real_colon_folds("5_fold", fold1=fl)
        ours = [as_ids(f) for f in named["mixed"]]
        theirs = [{s: sorted(o[s]) for s in o} for o in official5]
        assert ours[1:] == theirs[1:]
        assert (ours[0] == theirs[0]) == (fl == "cyclic")
        for o in official5:  # every fold is a 44 / 4 / 12 partition of the 60 videos
            assert sorted(o["train"] + o["valid"] + o["test"]) == ids and len(o["test"]) == 12
        tested = sorted(v for o in official5 for v in o["test"])
        assert (tested == ids) == (fl == "cyclic")
    repo = real_colon_folds("5_fold")
    assert set(repo[0]["test"]) & set(repo[1]["test"]) == {"001-003", "004-003"}
    with pytest.raises(ValueError, match="setting"):
        real_colon_folds("3_fold")
