"""DeepMAD designer (card: deepmad): score functions, exact counts, the mathematical program."""

from __future__ import annotations

import math
import random
import time

import pytest
import torch

from convatlas.analysis.complexity import measure_complexity
from convatlas.analysis.deepmad_designer import (
    DesignProblem,
    _block_terms,
    baseline_structure,
    deepmad_score,
    design,
    effectiveness,
    structure_macs,
    structure_params,
)
from convatlas.models.classification.deepmad import DEEPMAD_STRUCTURES, DeepMADNet


def test_card_worked_values() -> None:
    (h, logw, layers), = _block_terms({"class": "SuperResK1KXK1", "in": 256, "out": 256, "k": 3, "L": 1, "btn": 64}, 1, 1)
    assert abs(h - 8.0301) < 1e-4 and abs(logw - math.log(9_437_184)) < 1e-9 and layers == 3
    (h0, _, _), = _block_terms({"class": "ConvKXBNRELU", "in": 64, "out": 64, "k": 3}, 1, 1)
    assert abs(h0 - 3.1781) < 1e-4
    one = [{"class": "SuperResK1KXK1", "in": 256, "out": 256, "k": 3, "L": 1, "btn": 64, "s": 1}]
    assert abs(effectiveness(one) - 3 / 9_437_184 ** (1 / 3)) < 1e-6  # rho = 0.0142


def test_score_monotone_in_width_depth_and_last_stage_weight() -> None:
    s = [dict(b) for b in DEEPMAD_STRUCTURES["R18"]]
    base = deepmad_score(s)
    wider = [dict(b) for b in s]
    wider[-1]["out"] *= 2
    deeper = [dict(b) for b in s]
    deeper[3]["L"] += 1
    assert deepmad_score(wider) > base and deepmad_score(deeper) > base
    assert deepmad_score(s, beta=(1, 1, 1, 1, 1)) < base  # the last stage's weight 8 dominates
    with pytest.raises(ValueError, match="stages"):
        deepmad_score(s, beta=(1, 1, 8))


def test_published_resnet_like_structures_sit_on_the_rho_bound() -> None:
    """R18/R34/R50 were searched with rho <= 0.3; our rho reproduces the active bound (0.299..0.300)."""
    for key in ("R18", "R34", "R50"):
        rho = effectiveness(DEEPMAD_STRUCTURES[key])
        assert 0.298 <= rho <= 0.3 + 1e-9, (key, rho)


@pytest.mark.parametrize("key", ["R18", "29M-224"])
def test_analytic_counts_equal_measured(key: str) -> None:
    s = DEEPMAD_STRUCTURES[key]
    with torch.device("meta"):
        c = measure_complexity(DeepMADNet(s), (torch.empty(1, 3, 224, 224),))
    assert c.params == structure_params(s)
    assert round(c.gmacs * 1e9) == structure_macs(s, 224)


def test_fast_evaluation_matches_generic() -> None:
    rng = random.Random(0)
    for blk, head in (("SuperResK1KXK1", None), ("SuperResK1DWSEK1", 512)):
        p = DesignProblem(1e9, 1e7, block=blk, head_conv=head)
        for _ in range(20):
            v = [rng.randint(math.ceil(lo), int(hi)) for lo, hi in p.bounds()]
            a, b = p.evaluate_vector(v), p.evaluate(p.structure(v))
            for k in a:
                assert a[k] == pytest.approx(b[k], rel=1e-9, abs=1e-9), k


def test_designer_respects_budgets_and_beats_baseline() -> None:
    pytest.importorskip("scipy", reason="the designer needs scipy (convatlas[science])")
    prob = DesignProblem(macs_budget=0.3e9, params_budget=3e6, channels=(16, 512), btn=(8, 128), depth=(1, 8))
    t0 = time.perf_counter()
    res = design(prob, maxiter=25, popsize=6)
    elapsed = time.perf_counter() - t0
    assert res.macs <= prob.macs_budget and res.params <= prob.params_budget and res.rho <= prob.rho_max
    btns = [b["btn"] for b in res.structure if "btn" in b]
    assert btns == sorted(btns)
    base = prob.evaluate(baseline_structure(prob))
    assert base["violation"] == 0 and res.score > 1.2 * base["score"], (res.score, base["score"])
    # the result builds and its measured counts equal the designer's
    with torch.device("meta"):
        c = measure_complexity(DeepMADNet(res.structure), (torch.empty(1, 3, 224, 224),))
    assert c.params == res.params and round(c.gmacs * 1e9) == res.macs
    assert elapsed < 60  # seconds on one (possibly contended) CPU core


@pytest.mark.slow
def test_designer_under_paper_r18_budget() -> None:
    """R18 budget (1.82 GMACs, 11.69M, rho 0.3): the program's optimum scores above the published structure."""
    pytest.importorskip("scipy", reason="the designer needs scipy (convatlas[science])")
    prob = DesignProblem.paper("R18")
    res = design(prob)
    published = prob.evaluate(DEEPMAD_STRUCTURES["R18"])
    assert res.score >= published["score"], (res.score, published["score"])
    assert len(res.structure) == 6 and [b.get("s") for b in res.structure] == [2, 2, 2, 2, 1, 2]
    assert res.rho > 0.28  # the effectiveness bound is active, as in the published design
