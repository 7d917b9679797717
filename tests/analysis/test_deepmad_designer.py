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


# ---- the official program (DesignProblem.paper: TinyNAS accounting, space constraints, depth penalty) ----------
# TinyNAS get_model_size / get_flops of the published structures (BN + ReLU counted, classifier excluded).
TINYNAS_COUNTS = {"R18": (11_153_088, 1_837_323_208), "R34": (21_073_160, 3_675_274_792),
                  "R50": (24_208_144, 4_087_263_656)}


@pytest.mark.parametrize("key", sorted(TINYNAS_COUNTS))
def test_published_structures_under_the_official_program(key: str) -> None:
    from convatlas.analysis.deepmad_designer import _structure_vector, depth_penalty, tinynas_counts

    pub = DEEPMAD_STRUCTURES[key]
    size, flops = tinynas_counts(pub)
    assert (round(size), round(flops)) == TINYNAS_COUNTS[key]
    prob = DesignProblem.paper(key)
    ev = prob.evaluate(pub)
    assert prob._space_violation(pub) == 0 and ev["rho"] <= 0.3
    depths = [b["L"] for b in pub if "L" in b][2:]  # the official code drops the first *two* stages
    assert depth_penalty(pub) == pytest.approx(10 * math.exp(float(torch.tensor(depths, dtype=torch.float64).std(
        unbiased=False))))
    assert ev["objective"] == pytest.approx(ev["score"] - depth_penalty(pub))
    if key == "R18":  # documented deviation: the published R18 exceeds its own flops budget by 0.95%
        assert 0.009 < flops / 1.82e9 - 1 < 0.01 and ev["violation"] > 0
    else:
        assert ev["violation"] == 0
    # the closed-form vector path and the decode projection leave the published structure unchanged
    v = _structure_vector(prob, pub)
    assert prob.structure(v) == [dict(b) for b in pub]
    assert prob.evaluate_vector(v)["objective"] == pytest.approx(ev["objective"], rel=1e-12)


@pytest.mark.parametrize("key,res,budgets", [("29M-224", 224, (29e6, 4.5e9)), ("29M-288", 288, (29e6, 4.5e9)),
                                              ("50M", 224, (50e6, 8.7e9)), ("89M", 224, (89e6, 15.4e9))])
def test_mobilenet_like_readme_figures_are_search_budgets(key: str, res: int, budgets: tuple) -> None:
    """The README's 29M/4.5G, 50M/8.7G, 89M/15.4G are the searches' budgets (deepmad_29M_224.py etc.): under TinyNAS
    accounting the published networks use 98.5-99.1 % of the flops budget (29M-288 *at 288 px*) and 92-97 % of the
    size budget (classifier excluded); a conv/linear counter gives ~3 % fewer MACs (BN/activations not counted)."""
    from convatlas.analysis.deepmad_designer import tinynas_counts

    size, flops = tinynas_counts(DEEPMAD_STRUCTURES[key], res)
    assert 0.98 < flops / budgets[1] <= 1.0 and 0.92 < size / budgets[0] <= 1.0, (size, flops)
    if key == "29M-288":  # the same network at 224 would be far below its budget: the 4.5G is at 288
        assert tinynas_counts(DEEPMAD_STRUCTURES[key], 224)[1] < 0.7 * budgets[1]


def test_official_fast_path_matches_generic() -> None:
    rng = random.Random(1)
    p = DesignProblem.paper("R34")
    for _ in range(30):
        v = [rng.randint(math.ceil(lo), int(hi)) for lo, hi in p.bounds()]
        a, b = p.evaluate_vector(v), p.evaluate(p.structure(v))
        for k in a:
            assert a[k] == pytest.approx(b[k], rel=1e-9, abs=1e-9), k
        assert p._space_violation(p.structure(v)) == 0  # the decode projects onto the official space


def test_evolve_respects_budgets_and_space() -> None:
    from convatlas.analysis.deepmad_designer import TINYNAS_INIT_K1KXK1, evolve

    prob = DesignProblem.paper("R18")
    res = evolve(prob, iterations=3000, popu_size=32, seed=0)
    ev = prob.evaluate(res.structure)
    assert ev["violation"] == 0 and res.macs <= 1.82e9 and res.params <= 11.69e6 and res.rho <= 0.3
    assert prob._space_violation(res.structure) == 0
    assert res.info["objective"] > prob.evaluate(TINYNAS_INIT_K1KXK1)["objective"]
    with pytest.raises(ValueError, match="tinynas"):
        evolve(DesignProblem(1e9, 1e7), iterations=1)


@pytest.mark.slow
def test_evolution_reproduces_published_r34_closely() -> None:
    """Official program + evolutionary search (100k iterations, seed 0; ~13 s) vs the published DeepMAD-R34.

    Measured: closeness (mean |ln ratio| of out/btn/L) 0.24 (the official initial structure: 1.15), kernels
    5x5 in every stage as published, objective 1.046 x the published one, flops 99.8% of the budget, rho 0.296.
    Thresholds: closeness <= 0.35, >= 80% equal kernels, objective within [0.95, 1.15] x published."""
    from convatlas.analysis.deepmad_designer import TINYNAS_INIT_K1KXK1, evolve, structure_distance

    prob = DesignProblem.paper("R34")
    pub = DEEPMAD_STRUCTURES["R34"]
    res = evolve(prob, iterations=100_000, seed=0)
    d = structure_distance(res.structure, pub)
    assert d["all"] <= 0.35 and d["k"] >= 0.8, d
    assert structure_distance(TINYNAS_INIT_K1KXK1, pub)["all"] > 1.0
    ratio = res.info["objective"] / prob.evaluate(pub)["objective"]
    assert 0.95 <= ratio <= 1.15, ratio
    assert res.macs <= 3.68e9 and res.params <= 21.80e6 and 0.28 <= res.rho <= 0.3
