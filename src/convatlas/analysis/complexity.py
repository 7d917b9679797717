"""Params, MACs and activations of any model, counted by dispatching a forward pass (on the meta device).

Conventions (cards: convnext, fast-scaling):
- MACs = FLOPs / 2 as counted by ``torch.utils.flop_counter.FlopCounterMode`` (convolutions, matmuls, linear
  layers, attention); elementwise ops, norms and pooling are not counted. This equals fvcore's "FLOPs" that most
  papers report (ConvNeXt-T at 224: 4.456 G).
- Activations = number of elements output by convolution and matmul/linear ops (fast-scaling's definition).

Counting runs on the meta device by default, so even 350M-parameter models cost no memory or time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["Complexity", "count_params", "measure_complexity", "measure_entry"]

_aten = torch.ops.aten
_ACTIVATION_OPS = {
    _aten.convolution.default,
    _aten.mm.default,
    _aten.addmm.default,
    _aten.bmm.default,
    _aten.baddbmm.default,
    _aten._convolution.default,
}


@dataclass(frozen=True)
class Complexity:
    """Measured figures of one model at one input. ``gmacs`` in 1e9 MACs, ``mactivations`` in 1e6 elements."""

    params: int
    gmacs: float
    mactivations: float
    input_shapes: tuple[tuple[int, ...], ...]


class _ActivationCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        out = func(*args, **(kwargs or {}))
        if func in _ACTIVATION_OPS and isinstance(out, torch.Tensor):
            self.count += out.numel()
        return out


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (each shared tensor counted once)."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


def measure_complexity(
    model: nn.Module,
    inputs: tuple,
    *,
    forward: Callable[[nn.Module, tuple], Any] | None = None,
) -> Complexity:
    """Count params, MACs and activations of ``model(*inputs)`` (inputs may be meta tensors).

    Args:
        model: the module (its parameters may live on the meta device).
        inputs: positional inputs on the same device as the model.
        forward: optional ``fn(model, inputs)`` replacing ``model(*inputs)``.
    """
    was_training = model.training
    model.eval()
    flops = FlopCounterMode(display=False)
    acts = _ActivationCounter()
    try:
        with torch.no_grad(), flops, acts:
            if forward is None:
                model(*inputs)
            else:
                forward(model, inputs)
    finally:
        model.train(was_training)
    shapes = tuple(tuple(t.shape) for t in inputs if isinstance(t, torch.Tensor))
    return Complexity(
        params=count_params(model),
        gmacs=flops.get_total_flops() / 2 / 1e9,
        mactivations=acts.count / 1e6,
        input_shapes=shapes,
    )


def _inputs_for_resolution(entry: Any, resolution: int | tuple[int, ...] | None) -> tuple:
    from convatlas.registry import example_inputs

    if resolution is None:
        return example_inputs(entry, 1, small=False)
    if isinstance(resolution, int):
        c = entry.input_size[0]
        nd = len(entry.input_size) - 1
        return (torch.randn(1, c, *([resolution] * nd)),)
    return (torch.randn(1, *resolution),)


def measure_entry(
    name: str,
    resolution: int | tuple[int, ...] | None = None,
    *,
    device: str = "meta",
    **overrides: Any,
) -> Complexity:
    """Build registered model ``name`` on ``device`` (meta by default) and measure it.

    ``resolution`` defaults to the reported resolution of the entry, else its ``input_size``.
    """
    from convatlas.registry import get_entry

    entry = get_entry(name)
    if resolution is None and entry.reported is not None:
        resolution = entry.reported.resolution
    with torch.device(device):
        model = entry.builder(**overrides)
        inputs = _inputs_for_resolution(entry, resolution)
    return measure_complexity(model, inputs)
