"""Small-kernel aggregation (card: lsnet)."""

from __future__ import annotations

import pytest
import torch

from convatlas.ops.ska import ska, ska_reference


def test_matches_unfold_reference() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 24, 7, 9, generator=g)
    w = torch.randn(2, 3, 9, 7, 9, generator=g)
    torch.testing.assert_close(ska(x, w), ska_reference(x, w))
    w5 = torch.randn(2, 3, 25, 7, 9, generator=g)
    torch.testing.assert_close(ska(x, w5), ska_reference(x, w5))


def test_centre_one_hot_is_identity() -> None:
    x = torch.randn(1, 16, 5, 6)
    w = torch.zeros(1, 2, 9, 5, 6)
    w[:, :, 4] = 1
    torch.testing.assert_close(ska(x, w), x)


def test_channel_mapping_is_c_mod_cw() -> None:
    x = torch.ones(1, 8, 3, 3)
    w = torch.zeros(1, 2, 9, 3, 3)
    w[:, 1, 4] = 2.0  # only weight group 1 is non-zero: channels 1, 3, 5, 7
    y = ska(x, w)
    assert y[0, 1::2].eq(2).all() and y[0, 0::2].eq(0).all()


def test_gradcheck() -> None:
    x = torch.randn(1, 16, 5, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(1, 2, 9, 5, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(ska, (x, w))


def test_bad_shapes() -> None:
    with pytest.raises(ValueError, match="ska"):
        ska(torch.randn(1, 10, 4, 4), torch.randn(1, 3, 9, 4, 4))
    with pytest.raises(ValueError, match="odd square"):
        ska(torch.randn(1, 8, 4, 4), torch.randn(1, 2, 8, 4, 4))
