"""Input validation with errors that name the model, the expected input and what arrived."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["check_input"]


def check_input(
    model_name: str,
    x: object,
    *,
    ndim: int,
    channels: int | None = None,
    layout: str = "(B, C, H, W)",
    min_size: int | None = None,
    multiple_of: int | None = None,
    check_finite: bool = True,
) -> None:
    """Raise ``ValueError`` unless ``x`` is a floating tensor of rank ``ndim`` with ``channels`` at dim 1.

    Args:
        model_name: named in the message.
        x: the input.
        ndim: expected rank (4 for images).
        channels: expected size of dim 1 (None: any).
        layout: human-readable expected layout for the message.
        min_size: smallest allowed spatial size (each dim after channels).
        multiple_of: spatial sizes must be multiples of this (e.g. total stride).
        check_finite: reject NaN/inf (skipped while tracing/compiling, where it would force a sync).
    """
    if not isinstance(x, Tensor):
        raise ValueError(f"{model_name}: expected a torch.Tensor {layout}, got {type(x).__name__}")
    if x.ndim != ndim:
        raise ValueError(f"{model_name}: expected a {ndim}-D input {layout}, got shape {tuple(x.shape)}")
    if not (x.is_floating_point() or x.is_complex()):
        raise ValueError(f"{model_name}: expected a floating-point input {layout}, got dtype {x.dtype}")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(
            f"{model_name}: expected {channels} input channels {layout}, got shape {tuple(x.shape)}"
        )
    spatial = tuple(x.shape[2:])
    if min_size is not None and any(s < min_size for s in spatial):
        raise ValueError(f"{model_name}: spatial size must be >= {min_size}, got shape {tuple(x.shape)}")
    if multiple_of is not None and any(s % multiple_of for s in spatial):
        raise ValueError(
            f"{model_name}: spatial size must be a multiple of {multiple_of}, got shape {tuple(x.shape)}"
        )
    if check_finite and not _tracing() and x.device.type != "meta" and not _all_finite(x):
        raise ValueError(f"{model_name}: input contains NaN or inf values (shape {tuple(x.shape)})")


def _all_finite(x: Tensor) -> bool:
    """Exact ``isfinite(x).all()`` in one reduction pass: a NaN/inf element makes the sum non-finite; only a sum
    that overflows (huge finite values) falls back to the elementwise check (5 passes)."""
    acc = x.sum(dtype=torch.float32) if x.dtype in (torch.float16, torch.bfloat16) else x.sum()
    return bool(torch.isfinite(acc)) or bool(torch.isfinite(x).all())


def _tracing() -> bool:
    if torch.jit.is_tracing():
        return True
    compiler = getattr(torch, "compiler", None)
    if compiler is not None and hasattr(compiler, "is_compiling") and compiler.is_compiling():
        return True
    try:
        from torch._subclasses.fake_tensor import is_fake  # noqa: F401
    except ImportError:
        return False
    return torch._guards.detect_fake_mode() is not None
