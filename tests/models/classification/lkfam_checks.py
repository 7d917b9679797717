"""Shared checks for the unireplknet / lsnet / deepmad test files (not collected by pytest).

Import with ``sys.path.insert(0, str(Path(__file__).parent))``.
"""

from __future__ import annotations

import copy
from typing import Any, Callable

import pytest
import torch
from torch import nn

from convatlas.analysis.complexity import measure_entry
from convatlas.registry import get_entry


def check_reported(name: str, **overrides: Any) -> tuple[int, float]:
    """Params within tol (exact if params_exact) and MACs within macs_tol of Reported, measured on meta."""
    r = get_entry(name).reported
    assert r is not None, name
    c = measure_entry(name, **overrides)
    if r.params is not None:
        rel = abs(c.params - r.params) / r.params
        assert (c.params == r.params) if r.params_exact else rel <= r.params_tol, (name, c.params, r.params, rel)
    if r.gmacs is not None:
        rel = abs(c.gmacs - r.gmacs) / r.gmacs
        assert rel <= r.macs_tol, (name, c.gmacs, r.gmacs, rel)
    return c.params, c.gmacs


def check_contract(model: nn.Module, x: torch.Tensor, num_classes: int) -> None:
    """forward / forward_features / forward_head(pre_logits) / feature_info / forward_stages / reset / remove_head."""
    model.eval()
    with torch.no_grad():
        y = model(x)
        assert y.shape == (x.shape[0], num_classes)
        f = model.forward_features(x)
        torch.testing.assert_close(model.forward_head(f), y)
        assert model.forward_head(f, pre_logits=True).shape == (x.shape[0], model.num_features)
        maps = model.forward_stages(x)
        assert len(maps) == len(model.feature_info)
        for m, info in zip(maps, model.feature_info):
            assert m.shape[1] == info["num_chs"], (m.shape, info)
            assert -(-x.shape[-1] // info["reduction"]) == m.shape[-1], (m.shape, info)
        first = model.forward_stages(x, max_index=0)
        assert len(first) == 1
        torch.testing.assert_close(first[0], maps[0])
        m2 = copy.deepcopy(model)
        m2.reset_classifier(3)
        assert m2(x).shape == (x.shape[0], 3) and m2.num_classes == 3
        m2.remove_head()
        assert m2.forward_stages(x)[-1].shape == maps[-1].shape


def check_grad_checkpointing(model: nn.Module, x: torch.Tensor) -> None:
    """Same loss and gradients with activation checkpointing on (eval-mode BN, so both runs are deterministic)."""
    model.eval()
    loss = model(x).float().sum()
    loss.backward()
    g0 = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad()
    model.set_grad_checkpointing(True)
    loss2 = model(x.requires_grad_(True)).float().sum()
    loss2.backward()
    g1 = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    model.set_grad_checkpointing(False)
    torch.testing.assert_close(loss2, loss)
    assert len(g0) == len(g1)
    for a, b in zip(g0, g1):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def check_bad_inputs(model: nn.Module, x: torch.Tensor) -> None:
    name = type(model).__name__
    for bad in (x[0], torch.cat([x, x], 1), x.long()):
        with pytest.raises(ValueError, match=name):
            model(bad)
    nan = x.clone()
    nan[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        model(nan)


def check_state_dict_roundtrip(model: nn.Module, builder: Callable[[], nn.Module], x: torch.Tensor) -> None:
    model.eval()
    other = builder().eval()
    other.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(model(x), other(x))


def check_bf16_and_channels_last(model: nn.Module, x: torch.Tensor) -> None:
    model.eval()
    with torch.no_grad():
        ref = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            yb = model(x)
        assert torch.isfinite(yb.float()).all()
        assert (yb.float() - ref).abs().max() < 0.1 * ref.abs().max() + 0.05
        m_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
        ycl = m_cl(x.contiguous(memory_format=torch.channels_last))
        torch.testing.assert_close(ycl, ref, atol=1e-4, rtol=1e-3)


def digits_tensors(size: int, channels: int = 3) -> tuple[torch.Tensor, ...]:
    from convatlas.data.digits import load_digits_dataset

    tr = load_digits_dataset("train", size=size, channels=channels)
    va = load_digits_dataset("val", size=size, channels=channels)
    return (*tr.tensors, *va.tensors)


def train_digits(model: nn.Module, *, size: int = 32, epochs: int = 6, lr: float = 3e-3, batch: int = 64,
                 weight_decay: float = 0.05, seed: int = 0) -> tuple[float, torch.Tensor]:
    """AdamW + one-cycle on the embedded digits (1400 train); returns (val accuracy on 397 images, val logits).

    Runs single-threaded: tiny models gain nothing from threads, and on a shared 2-core machine two threads
    spin-wait each other (measured 15-50x slower under load).
    """
    from convatlas.analysis.bench import num_threads

    with num_threads(1):
        return _train_digits(model, size, epochs, lr, batch, weight_decay, seed)


def _train_digits(model: nn.Module, size: int, epochs: int, lr: float, batch: int, weight_decay: float,
                  seed: int) -> tuple[float, torch.Tensor]:
    torch.manual_seed(seed)
    xtr, ytr, xva, yva = digits_tensors(size)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * ((len(xtr) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.2)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(xtr), generator=g)
        for i in range(0, len(xtr), batch):
            idx = perm[i : i + batch]
            loss = nn.functional.cross_entropy(model(xtr[idx]), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(xva[i : i + 200]) for i in range(0, len(xva), 200)])
    return (logits.argmax(1) == yva).float().mean().item(), logits
