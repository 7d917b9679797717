"""Shared checks for every classification-backbone test file (not collected by pytest).

One check API for all families: reported figures, the backbone contract, activation checkpointing, bad inputs,
state-dict round trip, bf16 / channels_last, the folded inference path and the digits learning check.
Import with ``sys.path.insert(0, str(Path(__file__).parent))`` so it works under any pytest import mode.
"""

from __future__ import annotations

import copy
from typing import Any, Callable

import pytest
import torch
from torch import nn

from convatlas.analysis.complexity import measure_entry
from convatlas.registry import create_model, get_entry


def check_reported(name: str, **overrides: Any) -> tuple[int, float]:
    """Params exact (``params_exact``) or within ``params_tol``, MACs within ``macs_tol`` of the registered
    figures, measured on the meta device; returns ``(params, gmacs)``. ``overrides`` go to the builder."""
    r = get_entry(name).reported
    assert r is not None, f"{name} has no reported figures"
    c = measure_entry(name, **overrides)
    if r.params is not None:
        rel = abs(c.params - r.params) / r.params
        ok = c.params == r.params if r.params_exact else rel <= r.params_tol
        assert ok, f"{name}: params {c.params:,} vs reported {r.params:,} (rel {rel:.4f})"
    if r.gmacs is not None:
        rel = abs(c.gmacs - r.gmacs) / r.gmacs
        assert rel <= r.macs_tol, f"{name}: GMACs {c.gmacs:.4f} vs reported {r.gmacs} (rel {rel:.4f})"
    return c.params, c.gmacs


def check_contract(model: nn.Module, x: torch.Tensor, num_classes: int) -> None:
    """forward / forward_features / forward_head(pre_logits) / feature_info / forward_stages / reset_classifier /
    remove_head on a ``(B, C, H, W)`` input."""
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
            assert -(-x.shape[-1] // info["reduction"]) == m.shape[-1], (m.shape, info)
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
    """Same loss and gradients with activation checkpointing on (train mode, BatchNorms in eval so the two passes
    see the same statistics)."""
    torch.manual_seed(0)
    model = copy.deepcopy(model).train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
    loss = model(x).float().sum()
    loss.backward()
    g1 = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.set_grad_checkpointing(True)
    loss2 = model(x.clone().requires_grad_(True)).float().sum()
    loss2.backward()
    torch.testing.assert_close(loss2, loss)
    g2 = {k: p.grad for k, p in model.named_parameters() if p.grad is not None}
    assert g1.keys() == g2.keys()
    for k in g1:
        torch.testing.assert_close(g2[k], g1[k], rtol=1e-4, atol=1e-6)


def check_bad_inputs(model: nn.Module, x: torch.Tensor, name: str | None = None) -> None:
    """Wrong rank, wrong channels, integer dtype and NaN each raise ValueError naming the model (``name``;
    default: its registered architecture name or its class name); the NaN error says NaN."""
    if name is None:
        arch = getattr(model, "pretrained_cfg", {}).get("architecture")
        name = f"({arch}|{type(model).__name__})" if arch else type(model).__name__
    for bad in (x[0], torch.cat([x, x], 1), x.long()):
        with pytest.raises(ValueError, match=name):
            model(bad)
    nan = x.clone()
    nan[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        model(nan)


def check_state_dict_roundtrip(model: nn.Module, builder: Callable[[], nn.Module], x: torch.Tensor) -> None:
    """A fresh ``builder()`` model loads ``model``'s state dict strictly and computes the same outputs."""
    model.eval()
    other = builder().eval()
    other.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(model(x), other(x))


def check_bf16_and_channels_last(model: nn.Module, x: torch.Tensor, pure_bf16: bool = True) -> None:
    """bf16 autocast (and, with ``pure_bf16``, a bf16-cast model) stays close to fp32; channels_last equals
    contiguous."""
    model.eval()
    with torch.no_grad():
        ref = model(x)
        tol = 0.1 * ref.abs().max() + 0.05
        with torch.autocast("cpu", dtype=torch.bfloat16):
            yb = model(x)
        assert torch.isfinite(yb.float()).all()
        assert (yb.float() - ref).abs().max() < tol
        if pure_bf16:
            yp = copy.deepcopy(model).bfloat16()(x.bfloat16())
            assert yp.dtype == torch.bfloat16 and (yp.float() - ref).abs().max() < tol
        m_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
        ycl = m_cl(x.contiguous(memory_format=torch.channels_last))
        torch.testing.assert_close(ycl, ref, atol=1e-4, rtol=1e-3)


def check_tiny(name: str, num_classes: int | None = None, pure_bf16: bool = True, grad_checkpointing: bool = False,
               any_size: tuple[int, int] | None = None, **kwargs: Any) -> tuple[nn.Module, torch.Tensor]:
    """The backbone checks on the registered model ``name`` (built with ``num_classes`` and ``kwargs``) at its
    ``test_input_size`` (batch 2): contract, bad inputs, state-dict round trip, bf16 and channels_last, and
    optionally activation checkpointing and a forward at another resolution ``any_size`` = (H, W). Returns the
    (eval-mode) model and input for family-specific checks."""
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    torch.manual_seed(0)
    model = create_model(name, **kwargs)
    classes = kwargs.get("num_classes", get_entry(name).num_classes)
    x = torch.randn(2, *get_entry(name).test_input_size)
    check_contract(model, x, classes)
    check_bad_inputs(model, x)
    check_state_dict_roundtrip(model, lambda: create_model(name, **kwargs), x)
    check_bf16_and_channels_last(model, x, pure_bf16=pure_bf16)
    if grad_checkpointing:
        check_grad_checkpointing(model, torch.randn_like(x))
    model.eval()
    if any_size is not None:
        with torch.no_grad():
            assert model(torch.randn(1, x.shape[1], *any_size)).shape == (1, classes)
    return model, x


def check_export_deploy(name: str, **kwargs: Any) -> None:
    """The inference form (after ``reparameterize()`` where the model has it) exports with ``torch.export`` and
    the exported graph computes the same outputs."""
    model = create_model(name, **kwargs).eval()
    if hasattr(model, "reparameterize"):
        model.reparameterize()
    x = torch.randn(2, *get_entry(name).test_input_size)
    ep = torch.export.export(model, (x,))
    with torch.no_grad():
        torch.testing.assert_close(ep.module()(x), model(x))


def check_fast_inference_matches(model: nn.Module, x: torch.Tensor, *, stages: bool = False,
                                 channels_last_stages: bool = False) -> None:
    """The in-place / folded inference path (eval + no grad) equals the module-by-module path (eval + grad), for
    the logits and, with ``stages``, every ``forward_stages`` map; the input is never modified in place.
    ``channels_last_stages``: the fast path also hands out channels-last maps."""
    model = copy.deepcopy(model)
    with torch.no_grad():
        for n, p in model.named_parameters():  # O(1) layer/res scales so every branch shows in the output
            if n.endswith(("gamma", "gamma1", "gamma2")) or (n.endswith(".scale") and p.numel() > 1):
                p.uniform_(0.5, 1.5)
        model.train()
        model(x)  # non-trivial BatchNorm running statistics
    model.eval()
    x0 = x.clone()
    slow = model(x).detach()
    slow_maps = model.forward_stages(x) if stages else []
    with torch.no_grad():
        fast = model(x)
        fast_maps = model.forward_stages(x) if stages else []
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-5)
    for a, b in zip(fast_maps, slow_maps, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    if channels_last_stages:
        assert fast_maps[-1].is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(x, x0), "the inference path modified its input in place"


def digits_tensors(size: int, channels: int = 3) -> tuple[torch.Tensor, ...]:
    """``(x_train, y_train, x_val, y_val)`` of the embedded digits at ``size`` x ``size``."""
    from convatlas.data.digits import load_digits_dataset

    tr = load_digits_dataset("train", size=size, channels=channels)
    va = load_digits_dataset("val", size=size, channels=channels)
    return (*tr.tensors, *va.tensors)


def train_digits(model: nn.Module, *, size: int = 32, channels: int = 3, epochs: int = 6, lr: float = 4e-3,
                 batch: int = 64, weight_decay: float = 0.05, seed: int = 0,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 return_logits: bool = False) -> float | tuple[float, torch.Tensor]:
    """AdamW + one-cycle on the embedded digits (1400 train); returns the accuracy on the 397 held-out images
    (and the val logits with ``return_logits``).

    Runs single-threaded: tiny models gain nothing from threads, and on a shared 2-core machine two threads
    spin-wait each other.
    """
    from convatlas.analysis.bench import num_threads

    with num_threads(1):
        acc, logits = _train_digits(model, size, channels, epochs, lr, batch, weight_decay, seed, transform)
    return (acc, logits) if return_logits else acc


def _train_digits(model: nn.Module, size: int, channels: int, epochs: int, lr: float, batch: int,
                  weight_decay: float, seed: int, transform) -> tuple[float, torch.Tensor]:
    torch.manual_seed(seed)
    xtr, ytr, xva, yva = digits_tensors(size, channels)
    if transform is not None:
        xtr, xva = transform(xtr), transform(xva)
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
        logits = torch.cat([model(xva[i : i + 200]) for i in range(0, len(xva), 200)])
    return (logits.argmax(1) == yva).float().mean().item(), logits
