"""Shared checks for the phnn / tvconv / fdconv / aff / wavemix / raftmlp test files (not collected by pytest).

Import with ``sys.path.insert(0, str(Path(__file__).parent))`` so it works under any pytest import mode.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from convatlas.analysis.complexity import measure_entry
from convatlas.registry import create_model, get_entry


def check_reported(name: str) -> str:
    """Params exact (or within tol) and MACs within tol of the registered Reported figures (meta device)."""
    e = get_entry(name)
    r = e.reported
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
    return f"{name}: {c.params:,} params, {c.gmacs:.3f} GMACs"


def check_contract(model: nn.Module, x: torch.Tensor, num_classes: int) -> None:
    """Backbone contract: forward/forward_features/forward_head/feature_info/forward_stages/reset/remove_head."""
    model.eval()
    with torch.no_grad():
        y = model(x)
        assert y.shape == (x.shape[0], num_classes)
        f = model.forward_features(x)
        assert torch.allclose(model.forward_head(f), y, atol=1e-5)
        p = model.forward_head(f, pre_logits=True)
        assert p.shape == (x.shape[0], model.num_features)
        maps = model.forward_stages(x)
        assert len(maps) == len(model.feature_info)
        for m, info in zip(maps, model.feature_info):
            assert m.shape[1] == info["num_chs"], (m.shape, info)
            assert x.shape[-1] // m.shape[-1] == info["reduction"], (m.shape, info)
        first = model.forward_stages(x, max_index=0)
        assert len(first) == 1 and torch.allclose(first[0], maps[0], atol=1e-5)
        m2 = copy.deepcopy(model)
        m2.reset_classifier(3)
        assert m2(x).shape == (x.shape[0], 3) and m2.num_classes == 3
        m2.remove_head()
        assert m2.forward_stages(x)[-1].shape == maps[-1].shape


def check_bad_inputs(model: nn.Module, x: torch.Tensor) -> None:
    import pytest

    with pytest.raises(ValueError):
        model(x[0])  # wrong rank
    with pytest.raises(ValueError):
        model(torch.cat([x, x], 1))  # wrong channels
    with pytest.raises(ValueError):
        model(x.long())
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError):
        model(bad)


def check_state_dict_roundtrip(model: nn.Module, builder, x: torch.Tensor) -> None:
    model.eval()
    other = builder().eval()
    other.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.allclose(model(x), other(x), atol=1e-5)


def check_bf16_and_channels_last(model: nn.Module, x: torch.Tensor) -> None:
    model.eval()
    with torch.no_grad():
        ref = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            yb = model(x)
        assert torch.isfinite(yb.float()).all()
        m_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
        ycl = m_cl(x.contiguous(memory_format=torch.channels_last))
        assert torch.allclose(ycl, ref, atol=1e-4, rtol=1e-3)


def check_tiny(name: str, num_classes: int = 10) -> tuple[nn.Module, torch.Tensor]:
    """Contract, bad inputs, state-dict round trip, bf16 and channels_last on the registered tiny model ``name``
    at its ``test_input_size`` (batch 2); returns the (eval-mode) model and input for family-specific checks."""
    torch.manual_seed(0)
    model = create_model(name)
    x = torch.randn(2, *get_entry(name).test_input_size)
    check_contract(model, x, num_classes)
    check_bad_inputs(model, x)
    check_state_dict_roundtrip(model, lambda: create_model(name), x)
    check_bf16_and_channels_last(model, x)
    return model, x


def train_digits(
    model: nn.Module,
    *,
    size: int = 16,
    channels: int = 3,
    epochs: int = 6,
    lr: float = 3e-3,
    batch: int = 64,
    weight_decay: float = 0.05,
    seed: int = 0,
    transform=None,
) -> float:
    """Train on the embedded digits (1400 train) with AdamW + one-cycle; return val accuracy (397 images)."""
    from convatlas.data import load_digits_dataset

    torch.manual_seed(seed)
    tr = load_digits_dataset("train", size=size, channels=channels)
    va = load_digits_dataset("val", size=size, channels=channels)
    xtr, ytr = tr.tensors
    xva, yva = va.tensors
    if transform is not None:
        xtr, xva = transform(xtr), transform(xva)
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
        pred = torch.cat([model(xva[i : i + 200]).argmax(1) for i in range(0, len(xva), 200)])
    return (pred == yva).float().mean().item()
