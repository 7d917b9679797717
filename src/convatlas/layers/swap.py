"""Swap a drop-in convolution layer into any model (cards: tvconv, fdconv).

``swap_convs(model, factory, rule, example_input)`` walks the model, and every ``nn.Conv2d`` for which
``rule(name, conv, out_shape)`` is true is replaced by ``factory(conv, out_shape)``. ``out_shape`` is the conv's
output shape (B, C, h, w) recorded with forward hooks on ``example_input`` (needed by layers tied to a
resolution, like TVConv; may run on the meta device); without an example input it is ``None``.

Named layers (``"tvconv"``, ``"fdconv"``) and replacement rules (``"depthwise3x3"``, ``"fdconv_paper"``,
``"fdconv_all"``, ...) are available by name, and :func:`create_swapped` builds any registered model and swaps::

    model = create_swapped("resnet50", layer="fdconv", rule="fdconv_paper", kernel_num=64)
    n = swap_convs(mnv2, "tvconv", "depthwise3x3", example_input=torch.randn(1, 3, 96, 96))
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor, nn

__all__ = ["swap_convs", "create_swapped", "RULES", "LAYERS", "conv_output_shapes"]

Rule = Callable[[str, nn.Conv2d, "tuple[int, ...] | None"], bool]
Factory = Callable[[nn.Conv2d, "tuple[int, ...] | None"], nn.Module]


def _depthwise(conv: nn.Conv2d) -> bool:
    return conv.groups == conv.in_channels == conv.out_channels and conv.groups > 1


def _fdconv_eligible(conv: nn.Conv2d) -> bool:
    # Official FDConv falls back to a plain conv when min(C_in, C_out) <= 16 or k not in {1, 3}.
    return conv.kernel_size in ((1, 1), (3, 3)) and min(conv.in_channels, conv.out_channels) > 16 and conv.groups == 1


def _fdconv_paper(name: str, conv: nn.Conv2d, shape: Any) -> bool:
    """The replacement set of the official ``ResNet_FDConv`` (FDConv_detection/mmdet_custom/resnet.py).

    Its blocks build conv1/conv2/conv3 with ``conv_cfg=FDConv`` while the shortcut ("downsample") convs are built
    with ``cfg=None`` (plain convs); the 7x7 stem falls back to a plain conv (C_in = 3). So: every eligible
    conv except the downsample convs. On ResNet-50 with kernel_num 64 this adds 3,647,120 parameters, the
    paper's "+3.6M"; replacing every eligible conv (``"fdconv_all"``) adds 4,046,424.
    """
    return _fdconv_eligible(conv) and "downsample" not in name


RULES: dict[str, Rule] = {
    "all": lambda name, conv, shape: True,
    "depthwise": lambda name, conv, shape: _depthwise(conv),
    "depthwise3x3": lambda name, conv, shape: _depthwise(conv) and conv.kernel_size == (3, 3),
    "fdconv_all": lambda name, conv, shape: _fdconv_eligible(conv),
    "fdconv_paper": _fdconv_paper,
    "conv3x3": lambda name, conv, shape: conv.kernel_size == (3, 3) and conv.groups == 1,
}


def _tvconv_factory(conv: nn.Conv2d, shape: tuple[int, ...] | None, **kw: Any) -> nn.Module:
    from convatlas.layers.tvconv import TVConv

    if shape is None:
        raise ValueError("swap to TVConv needs example_input (TVConv is tied to its output resolution)")
    return TVConv.from_conv(conv, (shape[-2], shape[-1]), **kw)


def _fdconv_factory(conv: nn.Conv2d, shape: tuple[int, ...] | None, **kw: Any) -> nn.Module:
    from convatlas.layers.fdconv import FDConv

    return FDConv.from_conv(conv, **kw)


LAYERS: dict[str, Callable[..., nn.Module]] = {"tvconv": _tvconv_factory, "fdconv": _fdconv_factory}


def conv_output_shapes(model: nn.Module, example_input: Tensor | tuple) -> dict[str, tuple[int, ...]]:
    """Output shape of every ``nn.Conv2d`` in ``model`` for one forward pass on ``example_input``."""
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Conv2d):
            hooks.append(mod.register_forward_hook(lambda m, i, o, n=name: shapes.__setitem__(n, tuple(o.shape))))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            args = example_input if isinstance(example_input, tuple) else (example_input,)
            model(*args)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return shapes


def swap_convs(
    model: nn.Module,
    layer: str | Factory,
    rule: str | Rule = "all",
    example_input: Tensor | tuple | None = None,
    **layer_kwargs: Any,
) -> list[str]:
    """Replace matching ``nn.Conv2d`` modules of ``model`` in place; return the replaced module names.

    Args:
        model: any module.
        layer: ``"tvconv"``, ``"fdconv"`` or ``factory(conv, out_shape) -> nn.Module``.
        rule: a name from :data:`RULES` or ``rule(name, conv, out_shape) -> bool``.
        example_input: input used to record each conv's output shape (required by TVConv).
        **layer_kwargs: passed to the named layer's constructor (e.g. ``kernel_num=64``).
    """
    rule_fn = RULES[rule] if isinstance(rule, str) else rule
    if isinstance(layer, str):
        if layer not in LAYERS:
            raise ValueError(f"unknown layer {layer!r}; choose from {sorted(LAYERS)} or pass a factory")
        base = LAYERS[layer]

        def factory(conv: nn.Conv2d, shape: tuple[int, ...] | None) -> nn.Module:
            return base(conv, shape, **layer_kwargs)
    else:
        factory = layer
    shapes = conv_output_shapes(model, example_input) if example_input is not None else {}
    targets = [
        (name, mod)
        for name, mod in model.named_modules()
        if type(mod) is nn.Conv2d and rule_fn(name, mod, shapes.get(name))
    ]
    for name, conv in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        new = factory(conv, shapes.get(name))
        new.to(device=conv.weight.device, dtype=conv.weight.dtype)
        setattr(parent, child, new)
    return [n for n, _ in targets]


def create_swapped(
    name: str,
    *,
    layer: str | Factory,
    rule: str | Rule = "all",
    example_input: Tensor | None = None,
    layer_kwargs: dict[str, Any] | None = None,
    **model_kwargs: Any,
) -> nn.Module:
    """Build registered model ``name`` and swap ``layer`` into it; ``model.swapped`` lists the replaced convs.

    For layers tied to a resolution, ``example_input`` defaults to a zero tensor of the entry's ``input_size``.
    """
    from convatlas.registry import create_model, get_entry

    model = create_model(name, **model_kwargs)
    if example_input is None and layer == "tvconv":
        example_input = torch.zeros(1, *get_entry(name).input_size)
    model.swapped = swap_convs(model, layer, rule, example_input, **(layer_kwargs or {}))
    return model
