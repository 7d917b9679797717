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

Reproducing the paper's designs (official TinyNAS code read: ``tinynas/strategy``, ``searchers``, ``spaces/
space_k1kxk1.py`` + mutators, ``models/cnnnet.py``, ``budgets``, ``configs/classification/deepmad_R*_FLOPs.py``).
``DesignProblem.paper(name)`` is the official program: budgets on TinyNAS' own ``get_flops`` / ``get_model_size``
(:func:`tinynas_counts`: BN and ReLU counted, classifier excluded), rho <= 0.3, the mutators' constraints (widths
multiples of 8 up to 2048, out <= 4 x input, out/10 <= btn <= out, stage-1 depth <= 3, stem <= 32), objective =
score - 10 exp(std(L of stages 3-5)) (:func:`depth_penalty`). Two solvers: :func:`evolve` (the official
evolutionary search, population 256, two block mutations per child) and :func:`design` (scipy DE + polish).

Measured (100k evolution iterations, ~13 s each; closeness = mean |ln ratio| of out/btn/L per stage,
:func:`structure_distance`; the official initial structure is at 1.09-1.16 from every published one):

| budget | published objective (feasible?) | evolve seed 0 / 1: closeness, kernels equal, objective / published | DE |
|---|---|---|---|
| R18 | 32,085 (flops 1.837e9: 0.95% over its own 1.82e9 budget) | 0.19 / 0.40, 80%, 1.10 / 1.12 | 33,218 |
| R34 | 43,108 (yes, flops at 99.9% of budget) | 0.24 / 0.29, 100%, 1.05 / 1.08 | 43,317 |
| R50 | 48,884 (yes, 99.0%) | 0.28 / 0.17, 80%, 0.99 / 0.97 | 48,184 |

Deviation: the designer reproduces the *procedure* and the structures' character (stage-1 width 104-128 with
L=1, k=5 almost everywhere, btn at the out/10 bound, depths 6-17 growing to the last stages, rho on the 0.3
bound, flops budget exhausted), not the exact published lists: the official search is stochastic (numpy's RNG in
the mutators is never seeded, so even the authors cannot replay a run) and the program has many near-equal
optima (seeds differ from each other as much as from the published lists; two of three published structures
score below what a 100k-iteration run finds). The published R18 cannot be output by any solver of the official
program: it exceeds its own flops budget by 0.95% (its conv-only MACs, 1.811e9, are within it). DE on the
projected integer program finds lower objectives than the evolutionary search in this constrained space.
The MobileNet-like searches (``deepmad_29M_224.py``: flops 4.5e9, model_size 29e6, rho <= 0.5, ``space_k1dwsek1``)
are not reproduced here: their config's initial structure has strides (2, 2, 2, 2, 1) while the published
29M-224 has (1, 2, 2, 2, 2), and the official mutators never change strides, so that config cannot have produced
the published list as given (read; the K1DWSEK1 accounting/mutators were not re-implemented).

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
    "evolve",
    "structure_distance",
    "tinynas_counts",
    "depth_penalty",
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


def _tinynas_k1kxk1(cin: int, cout: int, k: int, s: int, btn: int, first: bool) -> tuple[float, float]:
    """Official TinyNAS ``ResK1KXK1`` (model_size, flops per input pixel): conv weights + 2*C per BN; flops count
    conv MACs + 2*C (BN) + C (ReLU) per output pixel and C_in for the strided shortcut's avg-pool."""
    size = cin * btn + 2 * btn + btn * btn * k * k + 2 * btn + btn * cout + 2 * cout
    fl = (cin * btn + 2 * btn + (btn * btn * k * k + 2 * btn) / s**2 + (btn * cout + 2 * cout) / s**2
          + btn + btn / s**2 + cout / s**2)
    if s == 2:
        fl += cin
    if first or cin != cout:  # projection shortcut (force_resproj on every super-block's first block)
        size += cin * cout + 2 * cout
        fl += (cin * cout + 2 * cout) / s**2 + cout / s**2
    return size, fl


def _tinynas_k1dwsek1(cin: int, cout: int, k: int, s: int, btn: int) -> tuple[float, float]:
    """Official TinyNAS ``ResK1DWSEK1`` (model_size, flops per input pixel): 1x1 / DW kxk / 1x1 ConvKXBN (weights
    / groups + 2*C per BN; flops conv MACs / groups + 2*C per output pixel), the SE's two ConvKXBN in the size but
    not in the flops (the official code says so), one activation per output element of each conv, C_in for the
    avg-pool of a strided identity shortcut (only when in == out: this block has no projection)."""
    rd = _se_rd(btn)
    size = (cin * btn + 2 * btn) + (btn * k * k + 2 * btn) + (btn * rd + 2 * rd + rd * btn + 2 * btn) \
        + (btn * cout + 2 * cout)
    fl = cin * btn + 2 * btn + (btn * k * k + 2 * btn) / s**2 + (btn * cout + 2 * cout) / s**2 \
        + btn + btn / s**2 + cout / s**2
    if cin == cout and s == 2:
        fl += cin
    return size, fl


def tinynas_counts(structure: Sequence[dict[str, Any]], image_size: int = 224) -> tuple[float, float]:
    """(model_size, flops) exactly as the official TinyNAS ``CnnNet.get_model_size`` / ``get_flops`` count them:
    BN affine parameters and BN/ReLU/avg-pool operations included, the classifier excluded (the search budgets
    of DeepMAD-R18/R34/R50 and 29M/50M/89M refer to these figures). ConvKX, ``SuperResK1KXK1`` (ResNet-like) and
    ``SuperResK1DWSEK1`` (MobileNet-like; the ConvKXBN group division is as in the official 3D ConvKXBN, the 2D
    ``get_flops`` was not in the indexed files) blocks."""
    size, flops, r = 0.0, 0.0, float(image_size)
    for b in structure:
        s = b.get("s", 1)
        if b["class"] == "ConvKXBNRELU":
            size += b["in"] * b["out"] * b["k"] ** 2 + 2 * b["out"]
            flops += (b["in"] * b["out"] * b["k"] ** 2 + 3 * b["out"]) / s**2 * r * r
        elif b["class"] in ("SuperResK1KXK1", "SuperResK1DWSEK1"):
            cur = 1.0
            for cin, cout, k, st, btn, first in _inner_blocks(b):
                if b["class"] == "SuperResK1KXK1":
                    sz, fl = _tinynas_k1kxk1(cin, cout, k, st, btn, first)
                else:
                    sz, fl = _tinynas_k1dwsek1(cin, cout, k, st, btn)
                size += sz
                flops += fl * cur * cur * r * r
                cur /= st
        else:
            raise ValueError(f"tinynas_counts: block class {b['class']!r} is not supported")
        r /= s
    return size, flops


def depth_penalty(structure: Sequence[dict[str, Any]], ratio: float = 10.0) -> float:
    """Official ``depth_penalty_ratio`` term: ``ratio * exp(std(L))`` over the super-blocks' depths L, where the
    official code drops the first *two* stages for a ResNet-like space (its comment says one: the list is sliced
    twice), i.e. stages 3-5 of the published templates."""
    depths = [int(b["L"]) for b in structure if "L" in b]
    if len(structure) > 1 and structure[1]["class"] == "SuperResK1KXK1":
        depths = depths[2:]
    return ratio * math.exp(float(np.std(depths))) if depths and ratio else 0.0


def smart_round(x: float, base: int = 8) -> int:
    """TinyNAS ``smart_round``: nearest multiple of ``base``, at least ``base``."""
    return max(base, round(x / base) * base)


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
        space: ``"free"`` (the box above, budgets on this library's params incl. classifier and conv/linear MACs)
            or ``"tinynas"``: the official ``space_k1kxk1`` search space and accounting (see :meth:`paper`):
            budgets on :func:`tinynas_counts` (BN included, classifier excluded), channels multiples of 8 up to
            2048, ``out_j <= 4 out_{j-1}``, ``smart_round(out/10) <= btn <= out``, stage-1 depth <= 3, stem width
            (searched, 8..``max_stem``) <= stage-1 width, objective = score - :func:`depth_penalty`.
        depth_penalty_ratio: the official ``depth_penalty_ratio`` (10; ``"tinynas"`` space only).
        max_stem: largest stem width in the ``"tinynas"`` space (official ``the_maximum_stem_channel`` 32).
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
    space: str = "free"
    depth_penalty_ratio: float = 10.0
    max_stem: int = 32

    @classmethod
    def paper(cls, name: str, **overrides: Any) -> "DesignProblem":
        """The paper's search problems (official ``configs/classification/deepmad_R{18,34,50}_FLOPs.py``):
        budgets ``"R18"`` (flops 1.82e9, model_size 11.69e6), ``"R34"`` (3.68e9, 21.80e6), ``"R50"`` (4.13e9,
        25.55e6), efficient_score 0.3, score beta (1,1,1,1,8), alpha1 = alpha2 = 1, depth_penalty_ratio 10, the
        ``space_k1kxk1`` constraints and TinyNAS accounting (``space="tinynas"``)."""
        budgets = {"R18": (1.82e9, 11.69e6), "R34": (3.68e9, 21.80e6), "R50": (4.13e9, 25.55e6)}
        if name not in budgets:
            raise ValueError(f"DesignProblem.paper: unknown budget {name!r}; expected one of {sorted(budgets)}")
        macs, params = budgets[name]
        kw: dict[str, Any] = dict(space="tinynas", monotone_btn=False, channels=(8, 2048), btn=(8, 2048),
                                  depth=(1, 24))
        return cls(macs_budget=macs, params_budget=params, **{**kw, **overrides})

    def _decode(self, x: Sequence[float], project: bool = True) -> tuple[int, list[tuple[int, int, int, int]]]:
        """Vector -> (stem width, [(out, btn, L, k)] per stage). In the ``"tinynas"`` space the space constraints
        are enforced by projection (as the official mutators clamp): ``out_j <= 4 out_{j-1}``, ``btn`` clamped to
        ``[smart_round(out/10), out]``, ``stem <= min(max_stem, out_1)``; stage-1 depth <= 3 is a bound."""
        stages, prev = [], None
        for j in range(len(self.strides)):
            c, b, L, ki = (int(round(v)) for v in x[4 * j : 4 * j + 4])
            c, b = 8 * c, 8 * b
            if self.space == "tinynas" and project:
                c = max(8, min(c, 4 * prev)) if prev is not None else c
                b = min(max(b, smart_round(c / 10)), c)
            stages.append((c, b, L, self.kernels[ki]))
            prev = c
        if self.space == "tinynas" and not project:
            stem = 8 * int(round(x[4 * len(self.strides)]))
        elif self.space == "tinynas":
            stem = max(8, min(8 * int(round(x[4 * len(self.strides)])), self.max_stem, stages[0][0]))
        else:
            stem = self.stem
        return stem, stages

    def structure(self, x: Sequence[int]) -> list[dict[str, Any]]:
        """Decode a vector (per stage: channels/8, btn/8, depth, kernel index [+ stem/8]) into a structure list."""
        stem, stages = self._decode(x)
        s: list[dict[str, Any]] = [{"class": "ConvKXBNRELU", "in": 3, "out": stem, "k": 3, "s": 2}]
        cin = stem
        for (c, b, L, k), st in zip(stages, self.strides):
            s.append({"class": self.block, "in": cin, "out": c, "s": st, "k": k, "L": L, "btn": b})
            cin = c
        if self.head_conv:
            s.append({"class": "ConvKXBNRELU", "in": cin, "out": self.head_conv, "k": 1, "s": 1})
        return s

    def bounds(self) -> list[tuple[float, float]]:
        per = [(self.channels[0] / 8, self.channels[1] / 8), (self.btn[0] / 8, self.btn[1] / 8),
               (float(self.depth[0]), float(self.depth[1])), (0.0, float(len(self.kernels) - 1))]
        if self.space != "tinynas":
            return per * len(self.strides)
        first = list(per)
        first[2] = (float(self.depth[0]), float(min(3, self.depth[1])))  # official: stage 1 has L <= 3
        return first + per * (len(self.strides) - 1) + [(1.0, self.max_stem / 8)]

    def evaluate_vector(self, x: Sequence[int]) -> dict[str, float]:
        """Same figures as ``evaluate(structure(x))``, computed per super-block in closed form (fast path)."""
        if self.space == "tinynas":
            return self._evaluate_vector_tinynas(x)
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
        return {"score": score, "objective": score, "rho": rho, "params": params, "macs": macs,
                "violation": self._violation(macs, params, rho, [int(round(v)) for v in x[1::4]])}

    def _evaluate_vector_tinynas(self, x: Sequence[int], project: bool = True) -> dict[str, float]:
        """Closed-form ``evaluate(structure(x))`` in the ``"tinynas"`` space (official counts, depth penalty);
        ``project=False`` evaluates the vector as is (the evolutionary search keeps its own constraints)."""
        log = math.log
        stem, stages = self._decode(x, project)
        r_in = float(self.image_size)
        size = 27 * stem + 2 * stem
        flops = (27 * stem + 3 * stem) / 4 * r_in * r_in
        r_in /= 2
        r = _conv_out(self.image_size, 3, 2)
        cin, cum_h, cum_logw, n_lay = stem, 0.5 * log(27), log(27), 1
        ends: list[tuple[float, float, int, int, int]] = []
        prev_end = (cum_h, cum_logw, n_lay, cin, r)
        for (c, b, L, k), st in zip(stages, self.strides):
            if st == 2:
                ends.append(prev_end)
            sz1, fl1 = _tinynas_k1kxk1(cin, c, k, st, b, True)
            szr, flr = _tinynas_k1kxk1(c, c, k, 1, b, False)
            size += sz1 + (L - 1) * szr
            flops += fl1 * r_in * r_in + (L - 1) * flr * (r_in / st) ** 2
            hb = 0.5 * log(b * k * k) + 0.5 * log(b)
            cum_h += 0.5 * log(cin) + hb + (L - 1) * (0.5 * log(c) + hb)
            cum_logw += log(cin * b * k * k * b) + (L - 1) * log(c * b * k * k * b)
            n_lay += 3 * L
            r, r_in, cin = _conv_out(r, k, st), r_in / st, c
            prev_end = (cum_h, cum_logw, n_lay, cin, r)
        ends.append(prev_end)
        if len(ends) != len(self.beta):
            raise ValueError(f"template has {len(ends)} stages but beta has {len(self.beta)} weights")
        score = sum(w * log(cc * rr * rr) * h for w, (h, _, _, cc, rr) in zip(self.beta, ends))
        rho = max(lay / math.exp(lw / lay) for _, lw, lay, _, _ in ends)
        depths = [L for _, _, L, _ in stages][2:]
        pen = self.depth_penalty_ratio * math.exp(float(np.std(depths))) if self.depth_penalty_ratio else 0.0
        return {"score": score, "objective": score - pen, "rho": rho, "params": size, "macs": flops,
                "violation": self._violation(flops, size, rho, [])}

    def _violation(self, macs: float, params: float, rho: float, btns: Sequence[int]) -> float:
        v = max(0.0, macs / self.macs_budget - 1) + max(0.0, params / self.params_budget - 1)
        v += max(0.0, rho / self.rho_max - 1)
        if self.monotone_btn:
            v += sum(max(0, a - b) for a, b in zip(btns, btns[1:])) / 8.0
        return v

    def _space_violation(self, structure: Sequence[dict[str, Any]]) -> float:
        """Official ``space_k1kxk1`` mutator constraints, as a non-negative violation (0: inside the space)."""
        v = 0.0
        stem, blocks = structure[0], [b for b in structure if b["class"] == self.block]
        v += max(0, stem["out"] - self.max_stem) / 8 + max(0, stem["out"] - blocks[0]["out"]) / 8
        for j, b in enumerate(blocks):
            v += max(0, smart_round(b["out"] / 10) - b["btn"]) / 8 + max(0, b["btn"] - b["out"]) / 8
            if j:
                v += max(0, b["out"] - 4 * blocks[j - 1]["out"]) / 8
        v += max(0, int(blocks[0]["L"]) - 3)
        return v

    def evaluate(self, structure: Sequence[dict[str, Any]]) -> dict[str, float]:
        """Score, objective (score minus the depth penalty in the ``"tinynas"`` space), rho, params, MACs and the
        relative budget/space violation (<= 0 means feasible). In the ``"tinynas"`` space ``params``/``macs`` are
        the official model_size/flops (:func:`tinynas_counts`)."""
        if self.space == "tinynas":
            size, flops = tinynas_counts(structure, self.image_size)
            rho = effectiveness(structure, self.image_size)
            score = deepmad_score(structure, self.image_size, self.beta)
            viol = self._violation(flops, size, rho, []) + self._space_violation(structure)
            return {"score": score, "objective": score - depth_penalty(structure, self.depth_penalty_ratio),
                    "rho": rho, "params": size, "macs": flops, "violation": viol}
        params = structure_params(structure, self.num_classes)
        macs = structure_macs(structure, self.image_size, self.num_classes)
        rho = effectiveness(structure, self.image_size)
        score = deepmad_score(structure, self.image_size, self.beta)
        return {
            "score": score,
            "objective": score,
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


#: initial structure of the official DeepMAD-R18/R34/R50 searches (``structure_info`` of deepmad_R*_FLOPs.py)
TINYNAS_INIT_K1KXK1: list[dict[str, Any]] = [
    {"class": "ConvKXBNRELU", "in": 3, "out": 32, "s": 2, "k": 3},
    {"class": "SuperResK1KXK1", "in": 32, "out": 256, "s": 2, "k": 3, "L": 1, "btn": 64},
    {"class": "SuperResK1KXK1", "in": 256, "out": 512, "s": 2, "k": 3, "L": 1, "btn": 128},
    {"class": "SuperResK1KXK1", "in": 512, "out": 768, "s": 2, "k": 3, "L": 1, "btn": 256},
    {"class": "SuperResK1KXK1", "in": 768, "out": 1024, "s": 1, "k": 3, "L": 1, "btn": 256},
    {"class": "SuperResK1KXK1", "in": 1024, "out": 2048, "s": 2, "k": 3, "L": 1, "btn": 512},
]


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
        return x + ([problem.max_stem // 8] if problem.space == "tinynas" else [])

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
    return x + ([structure[0]["out"] // 8] if problem.space == "tinynas" else [])


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
        val = -ev["objective"] if ev["violation"] <= 0 else 1e7 * (1.0 + ev["violation"])
        cache[key] = val
        return val

    def objective_batch(xs: np.ndarray) -> np.ndarray:  # xs: (n_vars, n_candidates)
        return np.array([objective(xs[:, i]) for i in range(xs.shape[1])])

    bounds = problem.bounds()
    lo_hi = [(int(math.ceil(a)), int(math.floor(b))) for a, b in bounds]
    n = len(bounds)
    try:
        x0 = np.asarray(_structure_vector(problem, baseline_structure(problem)), dtype=float)
        x0 = np.clip(x0, [math.ceil(a) for a, _ in bounds], [math.floor(b) for _, b in bounds])
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
    if problem.space == "tinynas" and problem.strides == (2, 2, 2, 1, 2) and problem.block == "SuperResK1KXK1":
        starts.append(np.asarray(_structure_vector(problem, TINYNAS_INIT_K1KXK1), dtype=float))
    best, best_val = min((local_search(st) for st in starts), key=lambda t: t[1])
    structure = problem.structure(best)
    ev = problem.evaluate(structure)
    if ev["violation"] > 0:
        raise RuntimeError(f"DeepMAD designer found no feasible structure (violation {ev['violation']:.3g}); "
                           "loosen the budgets or widen the bounds")
    return DesignResult(structure=structure, score=ev["score"], rho=ev["rho"], params=int(ev["params"]),
                        macs=int(ev["macs"]), seconds=time.perf_counter() - t0, evaluations=n_eval,
                        info={"scipy_message": str(res.message), "vector": best, "objective": ev["objective"],
                              "measured_params": structure_params(structure, problem.num_classes),
                              "measured_macs": structure_macs(structure, problem.image_size, problem.num_classes)})


def evolve(problem: DesignProblem, *, iterations: int = 100_000, popu_size: int = 256, seed: int = 0,
           init: Sequence[dict[str, Any]] | None = None) -> DesignResult:
    """The official TinyNAS evolutionary search (``tinynas/searchers`` + ``space_k1kxk1`` mutators) in the
    ``"tinynas"`` space: a population (``popu_size``, filled with ``init``, default the configs' initial
    structure) keeps the best feasible networks by objective; each iteration mutates a random member twice, each
    time one random block: the stem's width (x {1.5, 1.25, 0.8, 0.6, 0.5}, <= 32, <= next width) or a super-block's
    ``out`` (same factors, <= 2048, <= 4 x its input; raised to next_out/4), ``btn`` (same factors, <= out),
    ``k`` (3 <-> 5) or ``L`` (+-1, +-2; stage 1 <= 3), then ``btn >= out/10``; widths are ``smart_round``-ed. The
    paper runs 500,000 iterations; numpy's unseeded RNG in the official mutators makes its runs irreproducible,
    so this re-implementation (seeded) reproduces the procedure, not a particular run.
    """
    if problem.space != "tinynas" or problem.block != "SuperResK1KXK1":
        raise ValueError("evolve: only the official 'tinynas' ResNet-like space (SuperResK1KXK1) is supported")
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    start = list(init or TINYNAS_INIT_K1KXK1)
    n_st = len(problem.strides)
    # state: stem, then per stage [out, btn, L, k] (actual values, not /8)
    state0 = [start[0]["out"]] + [v for b in start[1:] for v in (b["out"], b["btn"], int(b["L"]), b["k"])]
    scales, dl = (1.5, 1.25, 0.8, 0.6, 0.5), (-2, -1, 1, 2)

    def vec(st: list[int]) -> list[float]:
        x: list[float] = []
        for j in range(n_st):
            out, btn, L, k = st[1 + 4 * j : 5 + 4 * j]
            x += [out / 8, btn / 8, L, problem.kernels.index(k)]
        return x + [st[0] / 8]

    def score(st: list[int]) -> dict[str, float]:
        return problem._evaluate_vector_tinynas(vec(st), project=False)

    def mutate_once(st: list[int]) -> list[int]:
        st = list(st)
        blk = int(rng.integers(0, n_st + 1))
        if blk == 0:
            st[0] = min(smart_round(float(rng.choice(scales)) * st[0]), 2048, problem.max_stem, st[1])
            return st
        i = 1 + 4 * (blk - 1)
        out, btn, L, k = st[i : i + 4]
        cin = st[0] if blk == 1 else st[i - 4]
        method = ("out", "k", "btn", "L")[int(rng.integers(0, 4))]
        if method == "out":
            new = min(smart_round(float(rng.choice(scales)) * out), 2048, 4 * cin)
            if blk < n_st and new < smart_round(st[i + 4] / 4):
                new = smart_round(st[i + 4] / 4)
            out = new
        elif method == "k":
            k = 5 if k == 3 else 3
        elif method == "btn":
            btn = min(out, min(smart_round(float(rng.choice(scales)) * btn), 2048))
        else:
            L = max(1, L + int(rng.choice(dl)))
            if blk == 1:
                L = min(3, L)
        if btn < out / 10:
            btn = smart_round(out / 10)
        st[i : i + 4] = [out, btn, L, k]
        return st

    ev0 = score(state0)
    if ev0["violation"] > 0:
        raise RuntimeError("evolve: the initial structure violates the budgets")
    popu: list[tuple[float, list[int]]] = [(ev0["objective"], state0)] * popu_size
    for _ in range(iterations):
        parent = popu[int(rng.integers(0, len(popu)))][1]
        child = mutate_once(mutate_once(parent))
        ev = score(child)
        if ev["violation"] <= 0 and ev["objective"] > popu[-1][0]:
            popu.append((ev["objective"], child))
            popu.sort(key=lambda t: -t[0])
            popu = popu[:popu_size]
    best = popu[0][1]
    structure = _structure_from_state(problem, best)
    ev = problem.evaluate(structure)
    return DesignResult(structure=structure, score=ev["score"], rho=ev["rho"], params=int(ev["params"]),
                        macs=int(ev["macs"]), seconds=time.perf_counter() - t0, evaluations=iterations,
                        info={"objective": ev["objective"], "method": "official evolutionary search"})


def _structure_from_state(problem: DesignProblem, st: Sequence[int]) -> list[dict[str, Any]]:
    s: list[dict[str, Any]] = [{"class": "ConvKXBNRELU", "in": 3, "out": int(st[0]), "k": 3, "s": 2}]
    cin = int(st[0])
    for j, stride in enumerate(problem.strides):
        out, btn, L, k = (int(v) for v in st[1 + 4 * j : 5 + 4 * j])
        s.append({"class": problem.block, "in": cin, "out": out, "s": stride, "k": k, "L": L, "btn": btn})
        cin = out
    return s


def structure_distance(a: Sequence[dict[str, Any]], b: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Closeness of two structures with the same template: mean over super-blocks of |ln(x_a / x_b)| for the
    output width, bottleneck width and depth (``out``/``btn``/``L``, and their mean ``all``), the fraction of equal
    kernel sizes (``k``) and the stem width ratio (``stem``)."""
    sa, sb = [x for x in a if "btn" in x], [x for x in b if "btn" in x]
    if len(sa) != len(sb):
        raise ValueError(f"structure_distance: {len(sa)} vs {len(sb)} super-blocks")
    d = {key: float(np.mean([abs(math.log(x[key] / y[key])) for x, y in zip(sa, sb)])) for key in ("out", "btn", "L")}
    d["all"] = (d["out"] + d["btn"] + d["L"]) / 3
    d["k"] = float(np.mean([x["k"] == y["k"] for x, y in zip(sa, sb)]))
    d["stem"] = a[0]["out"] / b[0]["out"]
    return d


register_component("deepmad", evolve)
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
