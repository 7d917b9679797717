"""AFFilter token mixer (card: aff)."""

from __future__ import annotations

import pytest
import torch

from convatlas.identities import identities_for
from convatlas.layers.aff_filter import AFFilter


@pytest.mark.parametrize("c", [64, 128])
def test_param_count(c: int) -> None:
    assert sum(p.numel() for p in AFFilter(c).parameters()) == c * c // 2 + 4 * c  # 128 -> 8,704


@pytest.mark.parametrize("hw", [(8, 8), (7, 9), (13, 6)])
def test_any_resolution_and_grads(hw: tuple[int, int]) -> None:
    f = AFFilter(16)
    x = torch.randn(2, 16, *hw, requires_grad=True)
    y = f(x)
    assert y.shape == x.shape
    y.square().sum().backward()
    assert all(p.grad is not None for p in f.parameters()) and x.grad is not None


def test_bf16_autocast_keeps_dtype_and_runs_fft_in_fp32() -> None:
    f = AFFilter(16)
    x = torch.randn(1, 16, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = f(x.bfloat16())
    assert y.dtype == torch.bfloat16
    assert torch.allclose(y.float(), f(x.bfloat16().float()), atol=5e-2)


def test_gradcheck_float64() -> None:
    f = AFFilter(8, num_blocks=2).double()
    x = torch.randn(1, 8, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(f, (x,))


def test_identities() -> None:
    checks = identities_for("aff")
    assert len(checks) >= 2
    for c in checks:
        c.fn()


def test_batched_mask_matches_official_einsums() -> None:
    from convatlas.layers.aff_filter import aff_mask, aff_mask_reference

    torch.manual_seed(0)
    f = AFFilter(32, hidden_factor=2).double()
    spec = torch.fft.rfft2(torch.randn(2, 32, 6, 7, dtype=torch.float64), norm="ortho")
    ref = aff_mask_reference(spec, f.w1, f.b1, f.w2, f.b2, f.act)
    out = aff_mask(spec, f.w1, f.b1, f.w2, f.b2, f.act)
    assert torch.allclose(out, ref, atol=1e-12)


@pytest.mark.parametrize("hidden", [1, 2])
def test_inference_path_matches_autograd_path(hidden: int) -> None:
    """The complex-matmul inference path (no grad) equals the einsum reference and the training path."""
    from convatlas.layers.aff_filter import aff_mask_inference, aff_mask_reference

    f = AFFilter(32, hidden_factor=hidden).double()
    spec = torch.fft.rfft2(torch.randn(2, 32, 6, 7, dtype=torch.float64), norm="ortho")
    ref = aff_mask_reference(spec, f.w1, f.b1, f.w2, f.b2, f.act)
    with torch.no_grad():
        out = aff_mask_inference(spec, f.w1, f.b1, f.w2, f.b2, f.act)
    assert torch.allclose(out, ref, atol=1e-12)
    x = torch.randn(2, 32, 9, 10)
    f = f.float()
    y = f(x)  # grad enabled: autograd path
    with torch.inference_mode():
        y_fast = f(x)
        y_cl = f(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(y_fast, y, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y_cl, y, rtol=1e-5, atol=1e-5)
