"""Model registry: name -> builder, with the paper it implements and the paper's reported figures.

Every model file registers one function per variant with :func:`register_model`. The registry is filled by
importing every module under ``convatlas.models`` (done lazily, on first look-up), so a new model file needs no
edit anywhere else.

Example::

    @register_model(paper="convnext", reported=Reported(params=28_589_128, gmacs=4.456, resolution=224))
    def convnext_tiny(**kwargs) -> ConvNeXt:
        return ConvNeXt(depths=(3, 3, 9, 3), dims=(96, 192, 384, 768), **kwargs)
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import pkgutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

__all__ = [
    "Reported",
    "ModelEntry",
    "register_model",
    "create_model",
    "list_models",
    "get_entry",
    "UnknownModelError",
    "example_inputs",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Reported:
    """Figures a paper (or the reference library) reports for one variant.

    Attributes:
        params: parameter count. ``params_exact=True`` means it is an exact count from a reference
            implementation (must match to the unit); otherwise it is the paper's rounded figure (1% tolerance).
        gmacs: multiply-accumulates in units of 1e9 at ``resolution`` (most papers' "FLOPs" are MACs).
        resolution: the input size the MACs refer to: an int (square image side), or a tuple giving the full
            per-sample input shape without batch (e.g. ``(1, 96, 96, 96)`` for a 3D volume, ``(1024,)`` for a
            sequence length).
        params_tol / macs_tol: relative tolerances used by ``convatlas verify``.
        metrics: the paper's task figures (e.g. ``{"imagenet_top1": 82.1}``), printed, not recomputed.
        source: where the figures come from (paper table, timm measurement, ...).
        activations: millions of elements output by conv/linear layers (fast-scaling definition), if reported.
    """

    params: int | None = None
    gmacs: float | None = None
    resolution: int | tuple[int, ...] | None = None
    params_exact: bool = False
    params_tol: float = 0.01
    macs_tol: float = 0.03
    activations: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    source: str = ""


@dataclass(frozen=True)
class ModelEntry:
    """Everything the library knows about one registered variant.

    Attributes:
        name: registry name, e.g. ``convnext_tiny``.
        builder: ``builder(**kwargs) -> nn.Module``.
        paper: atlas slug of the paper this variant implements.
        task: task name (``classification``, ``segmentation2d``, ``segmentation3d``, ``image2image``,
            ``sequence_classification``, ``sequence_labelling``, ``language_model``, ``audio``, ``graph``,
            ``generative``, ...); the engine looks up a task adapter by this name.
        input_size: per-sample input shape without batch, e.g. ``(3, 224, 224)``.
        test_input_size: a small input shape the generic tests use (defaults to a reduced ``input_size``).
        num_classes: default number of outputs for classification-like tasks (None where meaningless).
        mean / std: input normalisation.
        reported: the paper's figures for this variant.
        test_only: tiny variants used by the generic tests, hidden from ``list_models`` by default.
        example_inputs: optional ``fn(batch_size, small) -> tuple`` of positional inputs, for models whose
            input is not one tensor of ``input_size`` (graphs, token ids, multi-modal inputs).
        family: model family (module name), for grouping in tables.
        reference: how the variant maps to a reference library, e.g. ``"timm:convnext_tiny"``.
        tags: free-form flags (``"reparam"``, ``"features_only"``, ...).
    """

    name: str
    builder: Callable[..., nn.Module]
    paper: str
    task: str = "classification"
    input_size: tuple[int, ...] = (3, 224, 224)
    test_input_size: tuple[int, ...] | None = None
    num_classes: int | None = 1000
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    reported: Reported | None = None
    test_only: bool = False
    example_inputs: Callable[[int, bool], tuple] | None = None
    family: str = ""
    reference: str | None = None
    tags: tuple[str, ...] = ()

    def pretrained_cfg(self) -> dict[str, Any]:
        """timm-style metadata dict attached to built models as ``model.pretrained_cfg``."""
        return {
            "architecture": self.name,
            "paper": self.paper,
            "task": self.task,
            "input_size": self.input_size,
            "num_classes": self.num_classes,
            "mean": self.mean,
            "std": self.std,
            "reported": self.reported,
            "reference": self.reference,
        }


class UnknownModelError(KeyError):
    """Raised for a model name that is not registered; the message suggests close matches."""

    def __str__(self) -> str:  # KeyError quotes its argument; we want a plain sentence.
        return str(self.args[0])


_REGISTRY: dict[str, ModelEntry] = {}
_DISCOVERED = False
_DISCOVERY_PACKAGES = (
    "convatlas.ops",
    "convatlas.layers",
    "convatlas.models",
    "convatlas.methods",
    "convatlas.compress",
    "convatlas.analysis",
)


def register_model(
    fn: Callable[..., nn.Module] | None = None,
    *,
    paper: str,
    name: str | None = None,
    **entry_fields: Any,
) -> Callable:
    """Decorator registering a variant builder. Keyword arguments fill :class:`ModelEntry`.

    Usable as ``@register_model(paper="convnext", reported=Reported(...))``.
    """

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        model_name = name or builder.__name__
        if model_name in _REGISTRY and _REGISTRY[model_name].builder is not builder:
            raise ValueError(f"model {model_name!r} is registered twice")
        family = entry_fields.pop("family", None) or builder.__module__.rsplit(".", 1)[-1]
        _REGISTRY[model_name] = ModelEntry(
            name=model_name, builder=builder, paper=paper, family=family, **entry_fields
        )
        return builder

    return wrap(fn) if fn is not None else wrap


def _discover() -> None:
    """Import every module below the model packages so their ``@register_model`` calls run."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    for pkg_name in _DISCOVERY_PACKAGES:
        pkg = importlib.import_module(pkg_name)
        for info in pkgutil.walk_packages(pkg.__path__, prefix=pkg_name + "."):
            importlib.import_module(info.name)


def _all_entries() -> dict[str, ModelEntry]:
    _discover()
    return _REGISTRY


def get_entry(name: str) -> ModelEntry:
    """Return the :class:`ModelEntry` of ``name``; raise :class:`UnknownModelError` with suggestions."""
    entries = _all_entries()
    if name in entries:
        return entries[name]
    close = difflib.get_close_matches(name, list(entries), n=5, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see `convatlas list`"
    raise UnknownModelError(f"unknown model {name!r}{hint}")


def list_models(
    pattern: str | None = None,
    *,
    paper: str | None = None,
    task: str | None = None,
    include_test: bool = False,
) -> list[str]:
    """Sorted registered names matching a glob ``pattern`` (e.g. ``"convnext*"``), paper slug and task."""
    names = []
    for n, e in _all_entries().items():
        if e.test_only and not include_test:
            continue
        if pattern and not fnmatch.fnmatch(n, pattern):
            continue
        if paper and e.paper != paper:
            continue
        if task and e.task != task:
            continue
        names.append(n)
    return sorted(names)


def create_model(
    name: str,
    *,
    pretrained: bool | str | Path = False,
    num_classes: int | None = None,
    in_chans: int | None = None,
    **overrides: Any,
) -> nn.Module:
    """Build a registered model.

    Args:
        name: registry name (see :func:`list_models`).
        pretrained: ``False``, or a local checkpoint path (``.safetensors``; ``.pth``/``.pt`` are loaded with
            ``weights_only=True``). Official and timm key layouts are converted where the family provides a
            converter. There is no network download; ``True`` raises.
        num_classes: classifier outputs (classification-like tasks).
        in_chans: input channels.
        **overrides: architecture keyword arguments passed to the family's constructor
            (e.g. ``drop_path_rate=0.1``). ``features_only=True`` (with optional ``out_indices``) returns a
            :class:`~convatlas.models.backbone.FeatureExtractor` giving per-stage maps.

    Returns:
        The model, with ``model.pretrained_cfg`` (paper, input size, normalisation, reported figures).
    """
    entry = get_entry(name)
    kwargs = dict(overrides)
    features_only = bool(kwargs.pop("features_only", False))
    out_indices = kwargs.pop("out_indices", None)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if in_chans is not None:
        kwargs["in_chans"] = in_chans
    model = entry.builder(**kwargs)
    cfg = entry.pretrained_cfg()
    if num_classes is not None:
        cfg["num_classes"] = num_classes
    if in_chans is not None:
        cfg["input_size"] = (in_chans, *entry.input_size[1:])
    model.pretrained_cfg = cfg
    model.default_cfg = cfg  # timm's older name
    if pretrained is True:
        raise ValueError(
            f"{name}: pretrained=True would need a download, which convatlas never does; "
            "pass a local .safetensors or .pth path instead"
        )
    if pretrained:
        from convatlas.engine.checkpoint import load_weights

        load_weights(model, pretrained, model_name=name)
    if features_only:
        from convatlas.models.backbone import FeatureExtractor

        if not hasattr(model, "forward_stages"):
            raise ValueError(f"{name}: features_only=True needs a backbone with forward_stages/feature_info")
        model = FeatureExtractor(model, out_indices)
    elif out_indices is not None:
        raise ValueError(f"{name}: out_indices only applies with features_only=True")
    return model


def example_inputs(entry: ModelEntry | str, batch_size: int = 2, *, small: bool = True) -> tuple:
    """Random positional inputs for a model: ``(tensor of (B, *input_size),)`` unless the entry says otherwise.

    ``small=True`` uses ``test_input_size`` (or the full ``input_size`` if none is declared).
    """
    if isinstance(entry, str):
        entry = get_entry(entry)
    if entry.example_inputs is not None:
        return tuple(entry.example_inputs(batch_size, small))
    size = entry.test_input_size if (small and entry.test_input_size) else entry.input_size
    return (torch.randn(batch_size, *size),)


def with_reported(entry: ModelEntry, **changes: Any) -> ModelEntry:
    """Copy of ``entry`` with some fields replaced (used by tests)."""
    return replace(entry, **changes)
