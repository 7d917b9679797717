"""Shared checks for the inceptionnext / metaformer / hornet test files (not collected by pytest).

Import with ``sys.path.insert(0, str(Path(__file__).parent))``.
"""

from __future__ import annotations

import copy
from typing import Callable

import pytest
import torch
from torch import nn

from convatlas.analysis.complexity import measure_entry
from convatlas.registry import get_entry


def check_reported(name: str) -> None:
    """Params exact (or within tolerance) and MACs within tolerance of the registered figures (meta device)."""
    r = get_entry(name).reported
    assert r is not None, f"{name}: no reported figures"
    c = measure_entry(name)
    if r.params is not None:
        if r.params_exact:
            assert c.params == r.params, f"{name}: params {c.params:,} != {r.params:,}"
        else:
            rel = abs(c.params - r.params) / r.params
            assert rel <= r.params_tol, f"{name}: params {c.params:,} vs {r.params:,} ({rel:.2%})"
    if r.gmacs is not None:
        rel = abs(c.gmacs - r.gmacs) / r.gmacs
        assert rel <= r.macs_tol, f"{name}: GMACs {c.gmacs:.4f} vs {r.gmacs} ({rel:.2%})"


def check_contract(model: nn.Module, x: torch.Tensor, num_classes: int) -> None:
    """forward / forward_features / forward_head(pre_logits) / feature_info / forward_stages / reset / remove_head."""
    model.eval()
    with torch.no_grad():
        y = model(x)
        assert y.shape == (x.shape[0], num_classes)
        f = model.forward_features(x)
        assert f.shape[1] == model.num_features
        torch.testing.assert_close(model.forward_head(f), y)
        p = model.forward_head(f, pre_logits=True)
        assert p.shape == (x.shape[0], getattr(model, "head_hidden_size", model.num_features))
        maps = model.forward_stages(x)
        assert len(maps) == len(model.feature_info)
        for m, info in zip(maps, model.feature_info):
            assert m.shape[1] == info["num_chs"], (m.shape, info)
            assert x.shape[-1] // m.shape[-1] == info["reduction"], (m.shape, info)
        torch.testing.assert_close(maps[-1], f)
        first = model.forward_stages(x, max_index=0)
        assert len(first) == 1
        torch.testing.assert_close(first[0], maps[0])
        m2 = copy.deepcopy(model)
        m2.reset_classifier(3)
        assert m2(x).shape == (x.shape[0], 3) and m2.num_classes == 3
        m2.reset_classifier(0)
        assert m2(x).shape == p.shape
        m2.remove_head()
        assert m2.forward_stages(x)[-1].shape == maps[-1].shape


def check_grad_checkpointing(model: nn.Module, x: torch.Tensor) -> None:
    """Same loss and gradients with activation checkpointing on."""
    torch.manual_seed(0)
    model = copy.deepcopy(model).train()
    for m in model.modules():  # BatchNorm batch statistics would differ between the two passes' running stats only
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
    model(x).sum().backward()
    g1 = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(x).sum().backward()
    for k, p in model.named_parameters():
        if k in g1:
            torch.testing.assert_close(p.grad, g1[k], rtol=1e-4, atol=1e-6)


def check_bad_inputs(model: nn.Module, x: torch.Tensor, name: str) -> None:
    for bad, what in (
        (x[0], "4-D"),
        (torch.cat([x, x], 1), "channels"),
        (x.long(), "floating"),
    ):
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
        yp = copy.deepcopy(model).bfloat16()(x.bfloat16())  # pure bf16 model (timm's --model-dtype)
        assert yp.dtype == torch.bfloat16 and (yp.float() - ref).abs().max() < 0.1 * ref.abs().max() + 0.05
        m_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
        ycl = m_cl(x.contiguous(memory_format=torch.channels_last))
        torch.testing.assert_close(ycl, ref, atol=1e-4, rtol=1e-3)


def train_digits(model: nn.Module, *, size: int = 32, epochs: int = 6, lr: float = 4e-3, batch: int = 64,
                 weight_decay: float = 0.05, seed: int = 0) -> float:
    """AdamW + one-cycle on the embedded digits (1400 train); returns val accuracy on the 397 held-out images.

    Runs single-threaded (these tiny models are faster so, and it avoids thread oversubscription on CI).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(model, size, epochs, lr, batch, weight_decay, seed)
    finally:
        torch.set_num_threads(threads)


def _train(model: nn.Module, size: int, epochs: int, lr: float, batch: int, weight_decay: float, seed: int) -> float:
    from convatlas.data.digits import load_digits_dataset

    torch.manual_seed(seed)
    xtr, ytr = load_digits_dataset("train", size=size).tensors
    xva, yva = load_digits_dataset("val", size=size).tensors
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay)
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
        pred = torch.cat([model(xva[i : i + 200]).argmax(1) for i in range(0, len(xva), 200)])
    return (pred == yva).float().mean().item()


def check_fast_inference_matches(model: nn.Module, x: torch.Tensor) -> None:
    """The in-place / folded inference path (eval + no grad) equals the module-by-module path (eval + grad)."""
    model = copy.deepcopy(model)
    with torch.no_grad():
        for n, p in model.named_parameters():  # O(1) layer/res scales so every branch shows in the output
            if n.endswith(("gamma", "gamma1", "gamma2")) or (n.endswith(".scale") and p.numel() > 1):
                p.uniform_(0.5, 1.5)
        model.train()
        model(x)  # non-trivial BatchNorm running statistics
    model.eval()
    slow = model(x).detach()
    with torch.no_grad():
        fast = model(x)
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-5)
