"""Haar DWT (card: wavemix)."""

from __future__ import annotations

import pytest
import torch

from convatlas.identities import identities_for
from convatlas.ops.wavelets import haar_dwt2d, haar_dwt2d_multilevel, haar_idwt2d


def test_against_explicit_filters() -> None:
    x = torch.randn(2, 3, 6, 8, dtype=torch.float64)
    ll, det = haar_dwt2d(x)
    for i in range(3):
        for j in range(4):
            a, b, c, d = x[..., 2 * i, 2 * j], x[..., 2 * i, 2 * j + 1], x[..., 2 * i + 1, 2 * j], x[..., 2 * i + 1, 2 * j + 1]
            assert torch.allclose(ll[..., i, j], (a + b + c + d) / 2)
            assert torch.allclose(det[..., 0, i, j], (a + b - c - d) / 2)
            assert torch.allclose(det[..., 1, i, j], (a - b + c - d) / 2)
            assert torch.allclose(det[..., 2, i, j], (a - b - c + d) / 2)


def test_inverse_and_gradcheck() -> None:
    x = torch.randn(1, 2, 4, 6, dtype=torch.float64, requires_grad=True)
    assert torch.allclose(haar_idwt2d(*haar_dwt2d(x)), x, atol=1e-12)
    assert torch.autograd.gradcheck(lambda t: haar_dwt2d(t)[1], (x,))


def test_multilevel_shapes_and_odd_error() -> None:
    ll, det = haar_dwt2d_multilevel(torch.randn(1, 4, 32, 16), 3)
    assert ll.shape == (1, 4, 4, 2) and [d.shape[-1] for d in det] == [8, 4, 2]
    with pytest.raises(ValueError, match="even"):
        haar_dwt2d(torch.randn(1, 1, 5, 4))


def test_identities() -> None:
    for c in identities_for("wavemix"):
        c.fn()


def test_matches_pywavelets_dwt2() -> None:
    """(LL, (LH, HL, HH)) == pywt.dwt2(x, "db1") = (cA, (cH, cV, cD)), the pytorch_wavelets convention the official
    WaveMix uses (run with the reference environment, where PyWavelets is installed)."""
    pywt = pytest.importorskip("pywt", reason="PyWavelets not installed (reference oracle only)")
    import numpy as np

    x = np.random.default_rng(0).standard_normal((2, 3, 6, 8))
    ca, details = pywt.dwt2(x, "db1", mode="zero")
    ll, det = haar_dwt2d(torch.from_numpy(x))
    assert np.allclose(ll.numpy(), ca, atol=1e-12)
    for i, ref in enumerate(details):
        assert np.allclose(det[:, :, i].numpy(), ref, atol=1e-12)
