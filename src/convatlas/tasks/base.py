"""Task adapters: what the engine needs to know about a task, so the trainer never assumes classification.

A model declares its task by name in the registry (``ModelEntry.task``); the engine looks the adapter up with
:func:`get_task`. An adapter says how a batch splits into model inputs and targets, how to compute the loss,
which metrics to accumulate, what ``predict`` writes, and what output shape a model must produce (used by the
generic registry-driven tests). Later issues add adapters (segmentation, image-to-image, sequence, graph, ...)
by subclassing :class:`TaskAdapter` and decorating with :func:`register_task`; the trainer is not edited.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable

import torch
from torch import Tensor

__all__ = ["TaskAdapter", "MetricAccumulator", "register_task", "get_task", "list_tasks"]


class MetricAccumulator(ABC):
    """Accumulates a metric over batches. ``update`` per batch, ``compute`` returns ``{name: float}``.

    Accumulators hold plain sums so they can be all-reduced across DDP ranks: ``state()`` returns a 1-D float64
    tensor of sums, ``load_state`` sets it back (the engine sums ``state()`` over ranks before ``compute``).
    """

    @abstractmethod
    def update(self, outputs: Any, targets: Any) -> None: ...

    @abstractmethod
    def compute(self) -> dict[str, float]: ...

    @abstractmethod
    def state(self) -> Tensor: ...

    @abstractmethod
    def load_state(self, state: Tensor) -> None: ...


class TaskAdapter(ABC):
    """Interface between a task and the engine.

    Attributes:
        name: the task name used in the registry.
        primary_metric: the metric that selects the best checkpoint.
        higher_is_better: direction of ``primary_metric``.
    """

    name: str = ""
    primary_metric: str = "loss"
    higher_is_better: bool = False

    def split_batch(self, batch: Any) -> tuple[tuple, Any]:
        """Split a data-loader batch into (positional model inputs, targets). Default: ``(x, y) -> ((x,), y)``."""
        x, y = batch
        return (x,), y

    def forward(self, model: torch.nn.Module, inputs: tuple) -> Any:
        """Run the model. Override for models that need extra arguments at training time."""
        return model(*inputs)

    @abstractmethod
    def loss(self, outputs: Any, targets: Any) -> Tensor:
        """Scalar training loss."""

    @abstractmethod
    def metrics(self) -> MetricAccumulator:
        """A fresh accumulator for evaluation (must include ``primary_metric`` in ``compute()``)."""

    @abstractmethod
    def predict(self, outputs: Any, labels: list[str] | None = None) -> list[dict[str, Any]]:
        """One JSON-serialisable record per sample (what ``convatlas predict`` prints)."""

    @abstractmethod
    def expected_output_shape(self, inputs: tuple, num_classes: int | None) -> tuple[int, ...] | None:
        """Shape a model's output must have for these inputs (generic tests); None skips the check."""


_TASKS: dict[str, Callable[..., TaskAdapter]] = {}


def register_task(name: str) -> Callable[[type[TaskAdapter]], type[TaskAdapter]]:
    """Class decorator registering a :class:`TaskAdapter` subclass under ``name``."""

    def wrap(cls: type[TaskAdapter]) -> type[TaskAdapter]:
        cls.name = name
        _TASKS[name] = cls
        return cls

    return wrap


def _discover_tasks() -> None:
    import importlib
    import pkgutil

    import convatlas.tasks as pkg

    for info in pkgutil.iter_modules(pkg.__path__, prefix="convatlas.tasks."):
        importlib.import_module(info.name)


def get_task(name: str, **kwargs: Any) -> TaskAdapter:
    """Instantiate the adapter registered under ``name``."""
    if name not in _TASKS:
        _discover_tasks()
    if name not in _TASKS:
        raise KeyError(f"no task adapter named {name!r}; known: {', '.join(sorted(_TASKS))}")
    return _TASKS[name](**kwargs)


def list_tasks() -> list[str]:
    _discover_tasks()
    return sorted(_TASKS)
