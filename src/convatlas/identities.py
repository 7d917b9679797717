"""Paper identities and non-model components, registered where they are implemented.

An *identity* is an executable statement from a paper or its card (re-parameterised equals multi-branch, FFT
convolution equals direct convolution, a block with layer-scale 0 is the identity, ...). ``convatlas verify``
runs every identity of a paper and the paper is "verified" only when all pass.

A *component* is a layer, operator or procedure that implements (part of) a paper but is not a registered model
(e.g. a drop-in convolution layer); registering it moves the paper from "planned" to "implemented".

Example::

    @register_identity("convnext", "layer-scale 0 makes every block the identity")
    def _block_identity() -> str:
        ...
        assert err < 1e-6, f"max abs error {err:.2e}"
        return f"max abs error {err:.2e}"
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["Identity", "register_identity", "register_component", "identities_for", "components_for"]


@dataclass(frozen=True)
class Identity:
    """One executable check: ``fn()`` returns a one-line measured result and raises AssertionError on failure."""

    paper: str
    name: str
    fn: Callable[[], str | None]


_IDENTITIES: dict[str, list[Identity]] = {}
_COMPONENTS: dict[str, dict[str, Any]] = {}


def register_identity(paper: str, name: str) -> Callable[[Callable[[], str | None]], Callable[[], str | None]]:
    """Decorator: register ``fn`` as an identity check of ``paper`` (an atlas slug). Keep it under ~5 s on CPU."""

    def wrap(fn: Callable[[], str | None]) -> Callable[[], str | None]:
        checks = _IDENTITIES.setdefault(paper, [])
        if not any(c.name == name for c in checks):
            checks.append(Identity(paper, name, fn))
        return fn

    return wrap


def register_component(paper: str, obj: Any = None, *, name: str | None = None) -> Any:
    """Record ``obj`` (class or function) as implementing part of ``paper``. Usable as a decorator."""

    def wrap(o: Any) -> Any:
        _COMPONENTS.setdefault(paper, {})[name or getattr(o, "__qualname__", repr(o))] = o
        return o

    return wrap(obj) if obj is not None else wrap


def identities_for(paper: str) -> list[Identity]:
    from convatlas.registry import _discover

    _discover()
    return list(_IDENTITIES.get(paper, []))


def components_for(paper: str) -> dict[str, Any]:
    from convatlas.registry import _discover

    _discover()
    return dict(_COMPONENTS.get(paper, {}))
