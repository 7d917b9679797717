"""PHC convolution / PHM linear (card: phnn)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from convatlas.identities import identities_for
from convatlas.layers.phc_conv import PHConv, PHConv1d, PHConv3d, PHMLinear, kronecker_weight


@pytest.mark.parametrize("n", [1, 2, 3, 4, 6])
@pytest.mark.parametrize("spatial_dims,k", [(1, 5), (2, 3), (3, 3)])
def test_param_count_is_one_nth(n: int, spatial_dims: int, k: int) -> None:
    cin, cout = 24, 48
    conv = PHConv(n, cin, cout, k, spatial_dims=spatial_dims, bias=False)
    real = cout * cin * k**spatial_dims
    assert sum(p.numel() for p in conv.parameters()) == n**3 + real // n
    assert real % n == 0


@pytest.mark.parametrize("cls,shape", [(PHConv1d, (2, 8, 11)), (PHConv3d, (2, 8, 5, 6, 7))])
def test_1d_3d_match_functional_conv(cls, shape) -> None:
    conv = cls(4, 8, 12, 3, padding=1, stride=2)
    x = torch.randn(shape)
    fn = F.conv1d if len(shape) == 3 else F.conv3d
    ref = fn(x, conv.weight, conv.bias, stride=2, padding=1)
    assert torch.allclose(conv(x), ref, atol=1e-6)


def test_linear_weight_and_output() -> None:
    lin = PHMLinear(3, 12, 9)
    x = torch.randn(5, 12)
    ref = sum(torch.kron(lin.a[i], lin.s[i]) for i in range(3))
    assert torch.allclose(lin.weight, ref, atol=1e-6)
    assert torch.allclose(lin(x), x @ ref.T + lin.bias, atol=1e-5)
    assert sum(p.numel() for p in lin.parameters()) == 27 + 12 * 9 // 3 + 9


def test_gradcheck_float64() -> None:
    conv = PHConv(2, 4, 4, 3, padding=1).double()
    x = torch.randn(1, 4, 4, 4, dtype=torch.float64, requires_grad=True)
    a, f = conv.A.detach().requires_grad_(), conv.F.detach().reshape(conv.filter_shape).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, a, f: F.conv2d(x, kronecker_weight(a, f), padding=1), (x, a, f))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="divisible"):
        PHConv(4, 6, 8, 3)
    with pytest.raises(ValueError, match="quaternion"):
        PHConv(3, 6, 6, 3, algebra="quaternion")
    with pytest.raises(ValueError, match="spatial_dims"):
        PHConv(2, 4, 4, 3, spatial_dims=4)
    quat = PHConv(4, 8, 8, 3, algebra="quaternion")
    assert sum(p.numel() for p in quat.parameters()) == 8 * 8 * 9 // 4 + 8  # A is a fixed buffer


def test_identities() -> None:
    checks = identities_for("phnn")
    assert len(checks) >= 2
    for c in checks:
        c.fn()


def test_official_filter_layout_loads_and_channels_last() -> None:
    conv = PHConv(4, 8, 12, 3, padding=1)
    sd = {"A": conv.A.detach().clone(), "F": conv.F.detach().reshape(conv.filter_shape).clone(),
          "bias": conv.bias.detach().clone()}
    other = PHConv(4, 8, 12, 3, padding=1)
    other.load_state_dict(sd)
    x = torch.randn(1, 8, 6, 6)
    assert torch.allclose(other(x), conv(x))
    cl = other.to(memory_format=torch.channels_last)
    assert torch.allclose(cl(x.contiguous(memory_format=torch.channels_last)), conv(x), atol=1e-5)
