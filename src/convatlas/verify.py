"""Recompute every paper's figures and run its identities: the engine behind ``convatlas verify``.

For each paper (atlas slug):

1. every registered non-test variant is built on the **meta device** and measured with
   :func:`convatlas.analysis.complexity.measure_entry` at its reported resolution; params are compared exactly
   (``Reported.params_exact``) or within ``params_tol``, GMACs within ``macs_tol``, activations (if reported)
   within ``macs_tol``. A variant without any reported figure counts as "no reference": printed, not a failure;
2. every identity registered with :func:`convatlas.identities.register_identity` is run; an identity that raises
   (AssertionError or anything else) is a failure carrying its message.

Re-parameterisable models whose paper reports the fused inference form register with
``tags=("reported_deploy",)``: they are measured after ``model.reparameterize()`` (still on the meta device).

Results are plain dataclasses (``to_dict()`` for JSON) and are cached per process, so the atlas table and the CLI
never measure twice. Call :func:`clear_cache` after changing the registry (tests do).

Example::

    from convatlas.verify import verify_papers
    (res,) = verify_papers(["convnext"])
    res.ok, res.counts()      # True, {"passed": 29, "failed": 0, "no_reference": 0}
"""

from __future__ import annotations

import sys
import time
import types
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable

__all__ = [
    "CheckResult",
    "VariantResult",
    "PaperResult",
    "verify_variant",
    "verify_identity",
    "verify_paper",
    "verify_papers",
    "clear_cache",
    "rel_error",
]


def rel_error(measured: float, reported: float) -> float:
    """``(measured - reported) / reported`` (signed); inf when reported is 0 and measured is not."""
    if reported == 0:
        return 0.0 if measured == 0 else float("inf")
    return (measured - reported) / reported


@dataclass
class CheckResult:
    """One comparison or identity.

    Attributes:
        kind: ``"params"``, ``"gmacs"``, ``"activations"``, ``"build"`` (measuring failed) or ``"identity"``.
        name: variant name (figures) or identity description.
        ok: True pass, False failure, None no reference figure to compare with.
        measured / reported / rel_err / tol: the numbers (figures only).
        exact: params compared to the unit.
        message: identity result line, or the error of a failing check.
        seconds: wall time of the check (identities, builds).
    """

    kind: str
    name: str
    ok: bool | None
    measured: float | None = None
    reported: float | None = None
    rel_err: float | None = None
    tol: float | None = None
    exact: bool = False
    message: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class VariantResult:
    """Figures of one registered variant: measured at ``resolution`` and compared with its ``Reported``."""

    name: str
    resolution: Any
    checks: list[CheckResult] = field(default_factory=list)
    params: int | None = None
    gmacs: float | None = None
    mactivations: float | None = None
    source: str = ""

    @property
    def ok(self) -> bool:
        """No failing check (a variant with no reference is ok)."""
        return all(c.ok is not False for c in self.checks)

    @property
    def has_reference(self) -> bool:
        return any(c.ok is not None for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        d["has_reference"] = self.has_reference
        return d


@dataclass
class PaperResult:
    """Everything ``verify`` found for one paper."""

    slug: str
    variants: list[VariantResult] = field(default_factory=list)
    identities: list[CheckResult] = field(default_factory=list)
    components: list[str] = field(default_factory=list)
    registered: bool = False
    seconds: float = 0.0

    def checks(self) -> list[CheckResult]:
        return [c for v in self.variants for c in v.checks] + list(self.identities)

    def counts(self) -> dict[str, int]:
        """``passed`` / ``failed`` checks and ``no_reference`` variants."""
        cs = self.checks()
        return {
            "passed": sum(c.ok is True for c in cs),
            "failed": sum(c.ok is False for c in cs),
            "no_reference": sum(not v.has_reference for v in self.variants),
        }

    @property
    def failures(self) -> list[CheckResult]:
        return [c for c in self.checks() if c.ok is False]

    @property
    def ok(self) -> bool:
        """At least one check ran and none failed (the condition for status "verified")."""
        c = self.counts()
        return c["passed"] > 0 and c["failed"] == 0

    @property
    def status(self) -> str:
        from convatlas.atlas import paper_status

        return paper_status(self.slug, result=self)

    def to_dict(self) -> dict[str, Any]:
        return {
            "slug": self.slug,
            "status": self.status,
            "ok": self.ok,
            "registered": self.registered,
            "components": list(self.components),
            "counts": self.counts(),
            "seconds": round(self.seconds, 3),
            "variants": [v.to_dict() for v in self.variants],
            "identities": [c.to_dict() for c in self.identities],
        }


_VARIANT_CACHE: dict[tuple, VariantResult] = {}
_IDENTITY_CACHE: dict[tuple, CheckResult] = {}


def clear_cache() -> None:
    """Forget cached measurements and identity results (after registering or changing entries)."""
    _VARIANT_CACHE.clear()
    _IDENTITY_CACHE.clear()


def _one_line(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()
    text = msg[0] if msg else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _compare(kind: str, name: str, measured: float, reported: float | None, tol: float, exact: bool = False
             ) -> CheckResult:
    if reported is None:
        return CheckResult(kind, name, None, measured=measured)
    err = rel_error(measured, reported)
    ok = (measured == reported) if exact else abs(err) <= tol
    return CheckResult(kind, name, ok, measured=measured, reported=reported, rel_err=err,
                       tol=0.0 if exact else tol, exact=exact)


DEPLOY_TAG = "reported_deploy"


def _measure(entry: Any, resolution: Any) -> Any:
    """Measure the deployed form: build on meta, ``model.reparameterize()``, then count (DEPLOY_TAG entries)."""
    import torch

    from convatlas.analysis.complexity import _inputs_for_resolution, measure_complexity

    with torch.device("meta"):
        model = entry.builder()
        if not hasattr(model, "reparameterize"):
            raise TypeError(f"{entry.name} is tagged {DEPLOY_TAG!r} but has no reparameterize()")
        model.eval()
        model.reparameterize()
        inputs = _inputs_for_resolution(entry, resolution)
    return measure_complexity(model, inputs)


def verify_variant(name: str, *, use_cache: bool = True) -> VariantResult:
    """Measure registered variant ``name`` on the meta device and compare with its reported figures."""
    from convatlas.analysis.complexity import measure_entry
    from convatlas.registry import get_entry

    entry = get_entry(name)
    rep = entry.reported
    key = (name, id(entry.builder), id(rep))
    if use_cache and key in _VARIANT_CACHE:
        return _VARIANT_CACHE[key]
    resolution = rep.resolution if rep is not None else None
    res = VariantResult(name=name, resolution=resolution if resolution is not None else tuple(entry.input_size),
                        source=rep.source if rep is not None else "")
    t0 = time.perf_counter()
    try:
        c = _measure(entry, resolution) if DEPLOY_TAG in entry.tags else measure_entry(name, resolution)
    except Exception as exc:  # a model that cannot even be measured is a failure, reported in one line
        res.checks.append(CheckResult("build", name, False, message=_one_line(exc),
                                      seconds=time.perf_counter() - t0))
        _VARIANT_CACHE[key] = res
        return res
    res.params, res.gmacs, res.mactivations = c.params, c.gmacs, c.mactivations
    if rep is not None:
        res.checks.append(_compare("params", name, c.params, rep.params, rep.params_tol, rep.params_exact))
        res.checks.append(_compare("gmacs", name, c.gmacs, rep.gmacs, rep.macs_tol))
        if rep.activations is not None:
            res.checks.append(_compare("activations", name, c.mactivations, rep.activations, rep.macs_tol))
    else:
        res.checks.append(CheckResult("params", name, None, measured=c.params))
        res.checks.append(CheckResult("gmacs", name, None, measured=c.gmacs))
    res.checks[0].seconds = time.perf_counter() - t0
    _VARIANT_CACHE[key] = res
    return res


def verify_identity(identity: Any, *, use_cache: bool = True) -> CheckResult:
    """Run one :class:`~convatlas.identities.Identity`; exceptions become a failed check with their message."""
    key = (identity.paper, identity.name, id(identity.fn))
    if use_cache and key in _IDENTITY_CACHE:
        return _IDENTITY_CACHE[key]
    t0 = time.perf_counter()
    try:
        out = identity.fn()
        res = CheckResult("identity", identity.name, True, message="" if out is None else str(out).strip())
    except AssertionError as exc:
        res = CheckResult("identity", identity.name, False, message=str(exc).strip() or "assertion failed")
    except Exception as exc:
        res = CheckResult("identity", identity.name, False, message=_one_line(exc))
    res.seconds = time.perf_counter() - t0
    _IDENTITY_CACHE[key] = res
    return res


def verify_paper(
    slug: str,
    *,
    identities: bool = True,
    use_cache: bool = True,
    on_check: Callable[[str], None] | None = None,
) -> PaperResult:
    """Verify one paper: every non-test variant's figures, then every identity (see module docstring).

    Args:
        slug: atlas slug (UnknownPaperError, a ValueError, for others).
        identities: also run the identities (default True).
        use_cache: reuse results computed earlier in this process.
        on_check: called with a short label before each check (progress bars).
    """
    from convatlas.atlas import components, get_paper, is_registered, registered_models
    from convatlas.identities import identities_for

    get_paper(slug)
    t0 = time.perf_counter()
    res = PaperResult(slug=slug, registered=is_registered(slug), components=components(slug))
    for name in registered_models(slug):
        if on_check:
            on_check(name)
        res.variants.append(verify_variant(name, use_cache=use_cache))
    if identities:
        for ident in identities_for(slug):
            if on_check:
                on_check(f"{slug}: {ident.name}")
            res.identities.append(verify_identity(ident, use_cache=use_cache))
    res.seconds = time.perf_counter() - t0
    return res


def verify_papers(
    slugs: Iterable[str] | None = None,
    *,
    identities: bool = True,
    use_cache: bool = True,
    progress: bool = False,
) -> list[PaperResult]:
    """Verify several papers (all 76 when ``slugs`` is None); returns one :class:`PaperResult` each, in order.

    ``progress=True`` shows a tqdm bar (on stderr) over all variants and identities.
    """
    from convatlas.atlas import PAPERS, get_paper, registered_models
    from convatlas.identities import identities_for

    papers = [p.slug for p in PAPERS] if slugs is None else [get_paper(s).slug for s in slugs]
    if not progress:
        return [verify_paper(s, identities=identities, use_cache=use_cache) for s in papers]
    from tqdm.auto import tqdm

    total = sum(len(registered_models(s)) + (len(identities_for(s)) if identities else 0) for s in papers)
    out = []
    with tqdm(total=total, desc="verify", unit="check", leave=False, dynamic_ncols=True, disable=None) as bar:
        def tick(label: str) -> None:
            bar.set_postfix_str(label[:40], refresh=False)
            bar.update(1)

        for s in papers:
            out.append(verify_paper(s, identities=identities, use_cache=use_cache, on_check=tick))
    return out


class _CallableModule(types.ModuleType):
    """``convatlas.verify`` is both this module and the public function ``convatlas.verify(*slugs)``.

    Importing ``convatlas.verify`` replaces the package attribute of the same name with the module, so the
    module itself is made callable with the same signature as the function in ``convatlas/__init__.py``.
    """

    def __call__(self, *slugs: str, **kwargs: Any) -> list[PaperResult]:
        return verify_papers(list(slugs) or None, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
