"""DeepMAD's mathematical architecture designer (card: deepmad): maximise network entropy under budgets, on a CPU.

A CNN is scored from its structure alone (no data, no forward pass):

- per-layer entropy ``h = 1/2 log(c_in^a1 * k^(2 a2))`` (a1 = a2 = 1); a ``ConvKX`` contributes
  ``1/2 log(c_in k^2)``, a ResK1KXK1 bottleneck ``1/2 log(c_in) + 1/2 log(btn k^2) + 1/2 log(btn)``;
- stages end before every stride-2 block (official ``get_stage_idx``); stage ``i`` with output channels ``C_i`` and
  feature size ``R_i`` scores ``log(C_i R_i^2) * S_i`` where ``S_i`` sums the block terms over the *first n_i blocks of
  the whole network* (cumulative, as the official code); total ``sum_i beta_i * score_i``, beta = (1, 1, 1, 1, 8);
- effectiveness ``rho = max_i L_i / exp(sum_{first n_i blocks} log w_b / L_i)`` with ``L_i`` the cumulative layer
  count (1 per ConvKX, 3 per residual block) and ``w_b`` the product of a block's conv widths (``c_in btn k^2 btn``);
  the designs require ``rho <= 0.3``.

The program ``max score  s.t.  MACs <= B_macs, params <= B_params, rho <= rho0`` over per-stage widths, bottleneck
widths, depths and kernel sizes (integers) is solved with :func:`scipy.optimize.differential_evolution` (integrality
constraints, fixed seed) followed by an integer coordinate polish; it takes a few seconds on one CPU core.
The official toolbox instead runs an evolutionary search (population 256, 500,000 sampled networks) over the same
objective; both are heuristics for the same program, so the found structures need not coincide.

Assumption (card unconfirmed): for the MobileNet-like ResK1DWSEK1 block the depthwise conv sees one input channel
per group, so its terms are ``1/2 log(c_in) + 1/2 log(k^2) + 1/2 log(btn)`` and its width ``c_in k^2 btn``.

Reproduction of the paper's designs (``design(DesignProblem.paper(name))``, defaults, seed 0, ~5 s each; template
stem 3x3 s2 + five K1KXK1 stages with strides 2,2,2,1,2 as in the published files; (out, btn, L, k) per stage):

| budget | published structure (score, rho) | designed here (score, rho) |
|---|---|---|
| R18 | 96/40/1/5, 384/40/6/5, 384/64/9/5, 1024/104/10/3, 672/104/12/5 (32,120; 0.299) | 328/24/2/5, 96/48/1/5, 480/72/15/5, 664/72/15/5, 1800/104/4/3 (34,262; 0.296) |
| R34 | 128/24/1/5, 512/48/10/5, 896/88/13/5, 1024/104/11/5, 616/128/14/5 (43,143; 0.300) | 336/32/3/5, 704/56/9/5, 688/80/10/5, 680/112/11/3, 2048/112/13/5 (44,673; 0.294) |
| R50 | 128/40/1/5, 512/48/11/5, 872/88/12/5, 1024/104/13/5, 1232/120/15/5 (48,919; 0.300) | 144/32/1/5, 608/64/10/5, 680/80/13/5, 1080/88/13/5, 2048/96/15/5 (50,879; 0.300) |

Deviation: the program's solutions score *higher* than the published structures under the same objective and
budgets (the published ones come from a 500k-sample evolutionary search and sit on the rho <= 0.3 bound, which our
rho reproduces: 0.299/0.300/0.300), so the optimum is not the published structure; R50's design matches the
published depth profile (1,10,13,13,15 vs 1,11,12,13,15), k=5 and increasing bottlenecks, while R18/R34 differ in the
width split. The objective favours very wide stage outputs with narrow bottlenecks (up to the 2048 bound).

Params and MACs are computed analytically for exactly the network :class:`~convatlas.models.classification.deepmad.
DeepMADNet` builds (conv weights + BN affine, conv/linear MACs); tests check them against the measured counts.
scipy is imported lazily (``pip install convatlas[science]``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from convatlas.identities import register_component, register_identity

__all__ = [
    "deepmad_score",
    "effectiveness",
    "structure_params",
    "structure_macs",
    "DesignProblem",
    "DesignResult",
    "design",
    "baseline_structure",
]


def _conv_out(r: int, k: int, s: int) -> int:
    return (r + 2 * ((k - 1) // 2) - k) // s + 1


def _se_rd(btn: int) -> int:
    return max(1, round(btn * 0.25) // 8) * 8


def _inner_blocks(b: dict[str, Any]) -> list[tuple[int, int, int, int, int, bool]]:
    """Expand a block dict into inner blocks ``(c_in, c_out, k, s, btn, first)``."""
    if b["class"] == "ConvKXBNRELU":
        return [(b["in"], b["out"], b["k"], b.get("s", 1), 0, True)]
    return [(b["in"] if j == 0 else b["out"], b["out"], b["k"], b.get("s", 1) if j == 0 else 1, b["btn"], j == 0)
            for j in range(int(b["L"]))]


def structure_params(structure: Sequence[dict[str, Any]], num_classes: int = 1000) -> int:
    """Exact parameter count (weights + BN affine + classifier) of the :class:`DeepMADNet` built from ``structure``."""
    total = 0
    for b in structure:
        for cin, cout, k, s, btn, first in _inner_blocks(b):
            if b["class"] == "ConvKXBNRELU":
                total += cin * cout * k * k + 2 * cout
            elif b["class"] == "SuperResK1KXK1":
                total += cin * btn + btn * btn * k * k + btn * cout + 2 * (2 * btn + cout)
                if first or cin != cout:
                    total += cin * cout + 2 * cout
            else:
                rd = _se_rd(btn)
                total += cin * btn + btn * k * k + btn * cout + 2 * (2 * btn + cout)
                total += btn * rd + rd * btn + 2 * (rd + btn)
    c = structure[-1]["out"]
    return total + c * num_classes + num_classes


def structure_macs(structure: Sequence[dict[str, Any]], image_size: int = 224, num_classes: int = 1000) -> int:
    """Exact conv/linear multiply-accumulates of the :class:`DeepMADNet` at ``image_size`` (square)."""
    r = image_size
    total = 0
    for b in structure:
        for cin, cout, k, s, btn, first in _inner_blocks(b):
            ro = _conv_out(r, k, s)
            if b["class"] == "ConvKXBNRELU":
                total += cin * cout * k * k * ro * ro
            elif b["class"] == "SuperResK1KXK1":
                total += cin * btn * r * r + btn * btn * k * k * ro * ro + btn * cout * ro * ro
                if first or cin != cout:
                    total += cin * cout * ro * ro
            else:
                rd = _se_rd(btn)
                total += cin * btn * r * r + btn * k * k * ro * ro + 2 * btn * rd + btn * cout * ro * ro
            r = ro
    return total + structure[-1]["out"] * num_classes


def _block_terms(b: dict[str, Any], alpha1: float, alpha2: float) -> list[tuple[float, float, int]]:
    """Per inner block: (entropy term, log width, layer count)."""
    out = []
    for cin, cout, k, s, btn, first in _inner_blocks(b):
        if b["class"] == "ConvKXBNRELU":
            h = 0.5 * (alpha1 * math.log(cin) + alpha2 * 2 * math.log(k))
            out.append((h, math.log(cin * k * k), 1))
        elif b["class"] == "SuperResK1KXK1":
            h = 0.5 * alpha1 * math.log(cin) + 0.5 * (alpha1 * math.log(btn) + alpha2 * 2 * math.log(k)) \
                + 0.5 * alpha1 * math.log(btn)
            out.append((h, math.log(cin * btn * k * k * btn), 3))
        else:
            h = 0.5 * alpha1 * math.log(cin) + 0.5 * alpha2 * 2 * math.log(k) + 0.5 * alpha1 * math.log(btn)
            out.append((h, math.log(cin * k * k * btn), 3))
    return out


def _stages(structure: Sequence[dict[str, Any]], image_size: int) -> list[tuple[int, int, int, int]]:
    """Per stage: (cumulative inner-block count, cumulative layer count, channels, feature size)."""
    ends = sorted({i - 1 for i, b in enumerate(structure) if b.get("s", 1) == 2 and i > 0} | {len(structure) - 1})
    stages, nblk, nlay, r = [], 0, 0, image_size
    for i, b in enumerate(structure):
        for cin, cout, k, s, btn, first in _inner_blocks(b):
            r = _conv_out(r, k, s)
            nblk += 1
            nlay += 1 if b["class"] == "ConvKXBNRELU" else 3
        if i in ends:
            stages.append((nblk, nlay, b["out"], r))
    return stages


def deepmad_score(structure: Sequence[dict[str, Any]], image_size: int = 224,
                  beta: Sequence[float] = (1, 1, 1, 1, 8), alpha1: float = 1.0, alpha2: float = 1.0) -> float:
    """DeepMAD entropy score (official ``ComputeDeepMadScore``); needs ``len(beta)`` stages."""
    terms = [t for b in structure for t in _block_terms(b, alpha1, alpha2)]
    cum = np.cumsum([t[0] for t in terms])
    stages = _stages(structure, image_size)
    if len(stages) != len(beta):
        raise ValueError(f"deepmad_score: structure has {len(stages)} stages but beta has {len(beta)} weights")
    return float(sum(w * math.log(c * r * r) * cum[n - 1] for w, (n, _, c, r) in zip(beta, stages)))


def effectiveness(structure: Sequence[dict[str, Any]], image_size: int = 224) -> float:
    """DeepMAD effectiveness rho = max over stages of L_i / exp(sum log w / L_i) (official ``get_efficient_score``)."""
    terms = [t for b in structure for t in _block_terms(b, 1.0, 1.0)]
    cum_logw = np.cumsum([t[1] for t in terms])
    return float(max(lay / math.exp(cum_logw[n - 1] / lay) for n, lay, _, _ in _stages(structure, image_size)))


@dataclass
class DesignProblem:
    """The program's data: budgets, template and variable bounds.

    Args:
        macs_budget / params_budget: upper bounds (MACs at ``image_size``; params incl. BN and classifier).
        rho_max: effectiveness bound rho0.
        image_size: input side.
        block: ``"SuperResK1KXK1"`` (ResNet-like) or ``"SuperResK1DWSEK1"`` (MobileNet-like).
        strides: stride of each super-block after the stem (the published templates: R-like (2,2,2,1,2)).
        stem: stem ConvKX width (3x3 s2).
        head_conv: width of a final 1x1 ConvKX (MobileNet-like designs), or None.
        kernels: allowed kernel sizes.
        channels / btn / depth: inclusive bounds of stage widths (multiples of 8), bottleneck widths (multiples of
            8) and blocks per stage.
        beta: stage weights of the score.
        num_classes: classifier size (counted in the budgets).
        monotone_btn: require non-decreasing bottleneck widths across stages (true of every published DeepMAD
            structure; shrinks the space the solver has to search).
    """

    macs_budget: float
    params_budget: float
    rho_max: float = 0.3
    image_size: int = 224
    block: str = "SuperResK1KXK1"
    strides: tuple[int, ...] = (2, 2, 2, 1, 2)
    stem: int = 32
    head_conv: int | None = None
    kernels: tuple[int, ...] = (3, 5)
    channels: tuple[int, int] = (16, 2048)
    btn: tuple[int, int] = (8, 512)
    depth: tuple[int, int] = (1, 16)
    beta: tuple[float, ...] = (1, 1, 1, 1, 8)
    num_classes: int = 1000
    monotone_btn: bool = True

    @classmethod
    def paper(cls, name: str, **overrides: Any) -> "DesignProblem":
        """The paper's budgets: ``"R18"`` (1.82 GMACs, 11.69M), ``"R34"`` (3.68G, 21.80M), ``"R50"`` (4.13G, 25.55M)."""
        budgets = {"R18": (1.82e9, 11.69e6), "R34": (3.68e9, 21.80e6), "R50": (4.13e9, 25.55e6)}
        if name not in budgets:
            raise ValueError(f"DesignProblem.paper: unknown budget {name!r}; expected one of {sorted(budgets)}")
        macs, params = budgets[name]
        return cls(macs_budget=macs, params_budget=params, **overrides)

    def structure(self, x: Sequence[int]) -> list[dict[str, Any]]:
        """Decode a vector (per stage: channels/8, btn/8, depth, kernel index) into a structure list."""
        s: list[dict[str, Any]] = [{"class": "ConvKXBNRELU", "in": 3, "out": self.stem, "k": 3, "s": 2}]
        cin = self.stem
        for j, st in enumerate(self.strides):
            c, b, L, ki = (int(round(v)) for v in x[4 * j : 4 * j + 4])
            s.append({"class": self.block, "in": cin, "out": 8 * c, "s": st, "k": self.kernels[ki], "L": L, "btn": 8 * b})
            cin = 8 * c
        if self.head_conv:
            s.append({"class": "ConvKXBNRELU", "in": cin, "out": self.head_conv, "k": 1, "s": 1})
        return s

    def bounds(self) -> list[tuple[float, float]]:
        per = [(self.channels[0] / 8, self.channels[1] / 8), (self.btn[0] / 8, self.btn[1] / 8),
               (float(self.depth[0]), float(self.depth[1])), (0.0, float(len(self.kernels) - 1))]
        return per * len(self.strides)

    def evaluate_vector(self, x: Sequence[int]) -> dict[str, float]:
        """Same figures as ``evaluate(structure(x))``, computed per super-block in closed form (fast path)."""
        k1kx = self.block == "SuperResK1KXK1"
        log = math.log
        r = _conv_out(self.image_size, 3, 2)
        cin = self.stem
        params = 27 * cin + 2 * cin
        macs = 27 * cin * r * r
        cum_h, cum_logw, n_lay = 0.5 * log(27), log(27), 1
        stage_ends: list[tuple[float, float, int, int, int]] = []   # (cum_h, cum_logw, layers, C, R)
        prev_end = (cum_h, cum_logw, n_lay, cin, r)
        for j, st in enumerate(self.strides):
            c, b, L, ki = (int(round(v)) for v in x[4 * j : 4 * j + 4])
            c, b, k = 8 * c, 8 * b, self.kernels[ki]
            if st == 2:
                stage_ends.append(prev_end)
            ro = _conv_out(r, k, st)
            if k1kx:
                params += L * (b * b * k * k + b * c + 4 * b + 2 * c) + cin * b + (L - 1) * c * b + cin * c + 2 * c
                macs += (cin * b * r * r + b * b * k * k * ro * ro + b * c * ro * ro + cin * c * ro * ro
                         + (L - 1) * (c * b + b * b * k * k + b * c) * ro * ro)
                hb = 0.5 * log(b * k * k) + 0.5 * log(b)
                cum_h += 0.5 * log(cin) + hb + (L - 1) * (0.5 * log(c) + hb)
                cum_logw += log(cin * b * k * k * b) + (L - 1) * log(c * b * k * k * b)
            else:
                rd = _se_rd(b)
                per = b * k * k + b * c + 4 * b + 2 * c + 2 * b * rd + 2 * (rd + b)
                params += L * per + cin * b + (L - 1) * c * b
                macs += (cin * b * r * r + (b * k * k + b * c) * ro * ro + 2 * b * rd
                         + (L - 1) * ((c * b + b * k * k + b * c) * ro * ro + 2 * b * rd))
                hb = 0.5 * log(k * k) + 0.5 * log(b)
                cum_h += 0.5 * log(cin) + hb + (L - 1) * (0.5 * log(c) + hb)
                cum_logw += log(cin * k * k * b) + (L - 1) * log(c * k * k * b)
            n_lay += 3 * L
            r, cin = ro, c
            prev_end = (cum_h, cum_logw, n_lay, cin, r)
        if self.head_conv:
            params += cin * self.head_conv + 2 * self.head_conv
            macs += cin * self.head_conv * r * r
            cum_h += 0.5 * log(cin)
            cum_logw += log(cin)
            n_lay += 1
            cin = self.head_conv
            prev_end = (cum_h, cum_logw, n_lay, cin, r)
        stage_ends.append(prev_end)
        params += cin * self.num_classes + self.num_classes
        macs += cin * self.num_classes
        if len(stage_ends) != len(self.beta):
            raise ValueError(f"template has {len(stage_ends)} stages but beta has {len(self.beta)} weights")
        score = sum(w * log(cc * rr * rr) * h for w, (h, _, _, cc, rr) in zip(self.beta, stage_ends))
        rho = max(lay / math.exp(lw / lay) for _, lw, lay, _, _ in stage_ends)
        return {"score": score, "rho": rho, "params": params, "macs": macs,
                "violation": self._violation(macs, params, rho, [int(round(v)) for v in x[1::4]])}

    def _violation(self, macs: float, params: float, rho: float, btns: Sequence[int]) -> float:
        v = max(0.0, macs / self.macs_budget - 1) + max(0.0, params / self.params_budget - 1)
        v += max(0.0, rho / self.rho_max - 1)
        if self.monotone_btn:
            v += sum(max(0, a - b) for a, b in zip(btns, btns[1:])) / 8.0
        return v

    def evaluate(self, structure: Sequence[dict[str, Any]]) -> dict[str, float]:
        """Score, rho, params, MACs and the relative budget violations (<= 0 means feasible)."""
        params = structure_params(structure, self.num_classes)
        macs = structure_macs(structure, self.image_size, self.num_classes)
        rho = effectiveness(structure, self.image_size)
        return {
            "score": deepmad_score(structure, self.image_size, self.beta),
            "rho": rho,
            "params": params,
            "macs": macs,
            "violation": self._violation(macs, params, rho, [b["btn"] // 8 for b in structure if "btn" in b]),
        }


@dataclass
class DesignResult:
    """The designed structure and its figures (``seconds``: solver wall time)."""

    structure: list[dict[str, Any]]
    score: float
    rho: float
    params: int
    macs: int
    seconds: float
    evaluations: int
    info: dict[str, Any] = field(default_factory=dict)


def baseline_structure(problem: DesignProblem) -> list[dict[str, Any]]:
    """A hand-designed reference for ``problem``: uniform depth d in every stage, bottleneck = out/4, widths doubling
    per strided stage (ResNet-style), the width scale bisected to fill the budgets; the best-scoring feasible d wins.
    """
    def make(f: float, d: int) -> list[int]:
        x, w = [], 16.0
        for st in problem.strides:
            w = w * 2 if st == 2 else w
            b = max(problem.btn[0] // 8, min(problem.btn[1] // 8, int(round(w * f / 8))))
            c = max(problem.channels[0] // 8, min(problem.channels[1] // 8, 4 * b))
            x += [c, b, d, 0]
        return x

    best: tuple[float, list[int]] | None = None
    for d in range(problem.depth[0], problem.depth[1] + 1):
        lo, hi = 0.01, 16.0
        for _ in range(30):
            mid = (lo + hi) / 2
            ev = problem.evaluate_vector(make(mid, d))
            if ev["macs"] <= problem.macs_budget and ev["params"] <= problem.params_budget:
                lo = mid
            else:
                hi = mid
        ev = problem.evaluate_vector(make(lo, d))
        if ev["violation"] <= 0 and (best is None or ev["score"] > best[0]):
            best = (ev["score"], make(lo, d))
    if best is None:
        raise RuntimeError("baseline_structure: no feasible uniform design for these budgets")
    return problem.structure(best[1])


def _structure_vector(problem: DesignProblem, structure: Sequence[dict[str, Any]]) -> list[int]:
    """Inverse of ``problem.structure`` for structures following the problem's template."""
    x: list[int] = []
    for b in structure:
        if b["class"] == problem.block:
            x += [b["out"] // 8, b["btn"] // 8, int(b["L"]), problem.kernels.index(b["k"])]
    return x


def design(problem: DesignProblem, *, seed: int = 0, maxiter: int = 100, popsize: int = 10,
           polish_rounds: int = 20) -> DesignResult:
    """Solve the DeepMAD program for ``problem`` with scipy's differential evolution (integer variables) + polish.

    Returns the best feasible structure found (budgets and rho respected exactly).
    """
    try:
        from scipy.optimize import differential_evolution
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("the DeepMAD designer needs scipy: pip install 'convatlas[science]'") from e

    t0 = time.perf_counter()
    n_eval = 0
    cache: dict[tuple[int, ...], float] = {}

    def objective(x: np.ndarray) -> float:
        nonlocal n_eval
        key = tuple(int(round(v)) for v in x)
        if key in cache:
            return cache[key]
        n_eval += 1
        ev = problem.evaluate_vector(key)
        # Feasibility first: any infeasible point is worse than every feasible one (scores are positive).
        val = -ev["score"] if ev["violation"] <= 0 else 1e7 * (1.0 + ev["violation"])
        cache[key] = val
        return val

    def objective_batch(xs: np.ndarray) -> np.ndarray:  # xs: (n_vars, n_candidates)
        return np.array([objective(xs[:, i]) for i in range(xs.shape[1])])

    bounds = problem.bounds()
    lo_hi = [(int(math.ceil(a)), int(math.floor(b))) for a, b in bounds]
    n = len(bounds)
    try:
        x0 = np.asarray(_structure_vector(problem, baseline_structure(problem)), dtype=float)
    except RuntimeError:
        x0 = None
    res = differential_evolution(objective_batch, bounds, integrality=np.ones(n, dtype=bool), seed=seed,
                                 maxiter=maxiter, popsize=popsize, tol=1e-8, polish=False, init="sobol", x0=x0,
                                 mutation=(0.5, 1.0), recombination=0.7, vectorized=True, updating="deferred")

    # Integer local search: single-coordinate steps and pairwise trades (one variable up, another down), which
    # move along the active budget constraints; repeated while the objective improves.
    moves = [((i, d),) for i in range(n) for d in (-4, -2, -1, 1, 2, 4)]
    moves += [((i, d), (j, -e)) for i in range(n) for j in range(n) if i != j for d, e in ((1, 1), (1, 2), (2, 1))]

    def local_search(start: Sequence[int]) -> tuple[list[int], float]:
        best = [min(max(int(round(v)), lo), hi) for v, (lo, hi) in zip(start, lo_hi)]
        best_val = objective(np.asarray(best, dtype=float))
        for _ in range(polish_rounds):
            improved = False
            for mv in moves:
                cand = list(best)
                for i, d in mv:
                    cand[i] = min(max(cand[i] + d, lo_hi[i][0]), lo_hi[i][1])
                v = objective(np.asarray(cand, dtype=float))
                if v < best_val - 1e-9:
                    best, best_val, improved = cand, v, True
            if not improved:
                break
        return best, best_val

    starts = [res.x] + ([x0] if x0 is not None else [])
    best, best_val = min((local_search(st) for st in starts), key=lambda t: t[1])
    structure = problem.structure(best)
    ev = problem.evaluate(structure)
    if ev["violation"] > 0:
        raise RuntimeError(f"DeepMAD designer found no feasible structure (violation {ev['violation']:.3g}); "
                           "loosen the budgets or widen the bounds")
    return DesignResult(structure=structure, score=ev["score"], rho=ev["rho"], params=int(ev["params"]),
                        macs=int(ev["macs"]), seconds=time.perf_counter() - t0, evaluations=n_eval,
                        info={"scipy_message": str(res.message), "vector": best})


register_component("deepmad", design)


@register_identity("deepmad", "designer: budgets and rho respected, score beats the scaled ResNet-style baseline")
def _identity_designer() -> str:
    prob = DesignProblem(macs_budget=0.2e9, params_budget=2e6, image_size=224, channels=(16, 512), btn=(8, 128),
                         depth=(1, 8))
    res = design(prob, maxiter=15, popsize=6)
    base = prob.evaluate(baseline_structure(prob))
    assert res.macs <= prob.macs_budget and res.params <= prob.params_budget and res.rho <= prob.rho_max
    assert res.score > base["score"], f"designed {res.score:.1f} <= baseline {base['score']:.1f}"
    return f"score {res.score:.1f} vs baseline {base['score']:.1f}; {res.seconds:.1f}s, {res.evaluations} evals"
