"""Asymmetric large-kernel convolution (card: scaling-up-kernels)."""

from __future__ import annotations

import pytest
import torch

from convatlas.ops.asymmetric_conv import asymmetric_lk_conv, asymmetric_lk_conv_reference


@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("l2", [1, 4, 7])
def test_matches_reference(padding: str, l2: int) -> None:
    g = torch.Generator().manual_seed(l2)
    x = torch.randn(3, 20, 5, generator=g, dtype=torch.float64)
    y = torch.randn(3, l2, 5, generator=g, dtype=torch.float64)
    z = asymmetric_lk_conv(x, y, padding)
    assert z.shape == (3, 20 if padding == "same" else 21 - l2, 5)
    torch.testing.assert_close(z, asymmetric_lk_conv_reference(x, y, padding))


def test_l2_one_is_per_channel_scaling_and_gradcheck() -> None:
    x = torch.randn(2, 9, 4, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 1, 4, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(asymmetric_lk_conv(x, y), x * y)
    y3 = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(asymmetric_lk_conv, (x, y3))


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="asymmetric_lk_conv"):
        asymmetric_lk_conv(torch.randn(2, 9, 4), torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match="valid"):
        asymmetric_lk_conv(torch.randn(1, 3, 4), torch.randn(1, 5, 4), "valid")
