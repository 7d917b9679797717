"""Parameterised hypercomplex layers (card: phnn, arXiv 2110.04176, official code eleGAN23/HyperNets).

A PHC convolution builds its weight as a sum of ``n`` Kronecker products, ``W = sum_i kron(A_i, F_i)`` taken over
the two channel axes: block ``(p, q)`` of the ``(C_out, C_in, *k)`` weight is ``sum_i A[i, p, q] * F[i]``. The
``n x n`` matrices ``A_i`` (the "algebra") are learned, so the layer has ``n^3 + C_out*C_in*prod(k)/n`` weight
parameters: about ``1/n`` of an ordinary convolution. ``algebra="quaternion"`` (``n = 4``) fixes ``A`` to the
Hamilton-product sign/permutation matrices, which turns the layer into a quaternion convolution.

One class serves 1D/2D/3D through ``spatial_dims`` (MONAI style); ``PHConv1d/2d/3d`` are thin aliases.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from convatlas.identities import register_component, register_identity

__all__ = [
    "PHConv",
    "PHConv1d",
    "PHConv2d",
    "PHConv3d",
    "PHMLinear",
    "kronecker_weight",
    "quaternion_algebra",
    "quaternion_conv_weight",
]

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def kronecker_weight(a: Tensor, f: Tensor) -> Tensor:
    """``sum_i kron(A_i, F_i)`` over the two leading (channel) axes of ``F``.

    Args:
        a: (n, n, n) algebra matrices.
        f: (n, C_out/n, C_in/n, *k) filter blocks (``*k`` may be empty for a linear layer).

    Returns:
        (C_out, C_in, *k) with block ``(p, q) = sum_i a[i, p, q] * f[i]``.
    """
    n, o, i = f.shape[:3]
    k = f.shape[3:]
    w = torch.einsum("ipq,iab...->paqb...", a, f)
    return w.reshape(n * o, n * i, *k)


def quaternion_algebra(dtype: torch.dtype | None = None, device: torch.device | None = None) -> Tensor:
    """The four 4x4 matrices of the Hamilton product, (4, 4, 4), components ordered (r, i, j, k).

    With them, ``kronecker_weight`` gives the quaternion-convolution weight whose block rows are
    ``[[r, -i, -j, -k], [i, r, -k, j], [j, k, r, -i], [k, -j, i, r]]`` (Parcollet et al.'s layout, used by
    HyperNets' ``QuaternionConv``).
    """
    a = torch.zeros(4, 4, 4, dtype=dtype, device=device)
    table = {  # component -> [(row, col, sign)]
        0: [(0, 0, 1), (1, 1, 1), (2, 2, 1), (3, 3, 1)],
        1: [(0, 1, -1), (1, 0, 1), (2, 3, -1), (3, 2, 1)],
        2: [(0, 2, -1), (1, 3, 1), (2, 0, 1), (3, 1, -1)],
        3: [(0, 3, -1), (1, 2, -1), (2, 1, 1), (3, 0, 1)],
    }
    for comp, entries in table.items():
        for p, q, s in entries:
            a[comp, p, q] = s
    return a


def quaternion_conv_weight(r: Tensor, i: Tensor, j: Tensor, k: Tensor) -> Tensor:
    """Quaternion-convolution weight assembled block by block (the reference for the Hamilton identity).

    Each component is (C_out/4, C_in/4, *k); returns (C_out, C_in, *k).
    """
    rows = [
        torch.cat([r, -i, -j, -k], dim=1),
        torch.cat([i, r, -k, j], dim=1),
        torch.cat([j, k, r, -i], dim=1),
        torch.cat([k, -j, i, r], dim=1),
    ]
    return torch.cat(rows, dim=0)


def _tuple(v: int | Sequence[int], nd: int, name: str) -> tuple[int, ...]:
    if isinstance(v, int):
        return (v,) * nd
    v = tuple(int(x) for x in v)
    if len(v) != nd:
        raise ValueError(f"{name} must be an int or a sequence of {nd} ints, got {v}")
    return v


@register_component("phnn")
class PHConv(nn.Module):
    """Parameterised hypercomplex convolution, (B, C_in, *S) -> (B, C_out, *S').

    Args:
        n: hypercomplex dimension (any n >= 1; C_in and C_out must be divisible by n).
        in_channels / out_channels: C_in / C_out.
        kernel_size, stride, padding, dilation: as in ``nn.Conv{1,2,3}d``.
        spatial_dims: 1, 2 or 3.
        bias: learn and add a bias (the official layers create one but never add it; here a bias is either
            used or absent).
        algebra: ``"learned"`` (PHC: A is a parameter) or ``"quaternion"`` (n = 4, A fixed to the Hamilton
            product: a quaternion convolution with 4 filter components).

    Parameters: ``A`` (n, n, n) (a non-persistent buffer for the quaternion algebra), ``F`` stored as
    (C_out, C_in/n, *k) = the official (n, C_out/n, C_in/n, *k) flattened over its first two axes (official
    state dicts load as they are), ``bias`` (C_out). Key names follow the official ``layers/ph_layers.py``.

    Example::

        conv = PHConv(4, 64, 128, 3, padding=1)                   # 2D, (B, 64, H, W) -> (B, 128, H, W)
        conv3d = PHConv(3, 24, 48, 3, padding=1, spatial_dims=3)  # (B, 24, D, H, W) -> (B, 48, D, H, W)
    """

    def __init__(
        self,
        n: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] = 0,
        dilation: int | Sequence[int] = 1,
        *,
        spatial_dims: int = 2,
        bias: bool = True,
        algebra: str = "learned",
    ) -> None:
        super().__init__()
        if spatial_dims not in _CONV:
            raise ValueError(f"PHConv: spatial_dims must be 1, 2 or 3, got {spatial_dims}")
        if n < 1:
            raise ValueError(f"PHConv: n must be >= 1, got {n}")
        if in_channels % n or out_channels % n:
            raise ValueError(
                f"PHConv: in_channels ({in_channels}) and out_channels ({out_channels}) must be divisible by n={n}"
            )
        if algebra not in ("learned", "quaternion"):
            raise ValueError(f"PHConv: algebra must be 'learned' or 'quaternion', got {algebra!r}")
        if algebra == "quaternion" and n != 4:
            raise ValueError(f"PHConv: the quaternion algebra needs n=4, got n={n}")
        self.n, self.in_channels, self.out_channels = n, in_channels, out_channels
        self.spatial_dims = spatial_dims
        self.kernel_size = _tuple(kernel_size, spatial_dims, "kernel_size")
        self.stride = _tuple(stride, spatial_dims, "stride")
        self.padding = _tuple(padding, spatial_dims, "padding")
        self.dilation = _tuple(dilation, spatial_dims, "dilation")
        self.algebra = algebra
        if algebra == "quaternion":
            self.register_buffer("A", quaternion_algebra(), persistent=False)
        else:
            self.A = nn.Parameter(torch.empty(n, n, n))
        # F is stored as (n * C_out/n, C_in/n, *k): for 2D that is a 4-D tensor, so that
        # ``model.to(memory_format=torch.channels_last)`` works; official (n, C_out/n, C_in/n, *k) state dicts are
        # reshaped on load.
        self.F = nn.Parameter(torch.empty(out_channels, in_channels // n, *self.kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform A and F (official init; fans from dims 1 and 0 times the trailing dims), U(+-1/sqrt(fan_in)) bias."""
        if isinstance(self.A, nn.Parameter):
            nn.init.xavier_uniform_(self.A)
        with torch.no_grad():
            f = torch.empty(self.filter_shape, dtype=self.F.dtype, device=self.F.device)
            self.F.copy_(nn.init.xavier_uniform_(f).reshape(self.F.shape))
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.in_channels * math.prod(self.kernel_size))
            nn.init.uniform_(self.bias, -bound, bound)

    @property
    def filter_shape(self) -> tuple[int, ...]:
        """(n, C_out/n, C_in/n, *k): the filter blocks F_i (the official parameter shape)."""
        n = self.n
        return (n, self.out_channels // n, self.in_channels // n, *self.kernel_size)

    @property
    def weight(self) -> Tensor:
        """The materialised real weight (C_out, C_in, *k) = sum_i kron(A_i, F_i)."""
        return kronecker_weight(self.A.to(self.F.dtype), self.F.reshape(self.filter_shape))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[override]
        key = prefix + "F"
        if key in state_dict and tuple(state_dict[key].shape) == self.filter_shape:
            state_dict[key] = state_dict[key].reshape(self.F.shape)  # official layout
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight
        return _CONV[self.spatial_dims](x, w.to(x.dtype), self.bias, self.stride, self.padding, self.dilation)

    def extra_repr(self) -> str:
        return (
            f"n={self.n}, {self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, spatial_dims={self.spatial_dims}, "
            f"bias={self.bias is not None}, algebra={self.algebra}"
        )


class PHConv1d(PHConv):
    """``PHConv`` with ``spatial_dims=1``: (B, C_in, L) -> (B, C_out, L')."""

    def __init__(self, n: int, in_channels: int, out_channels: int, kernel_size: int, **kw) -> None:
        super().__init__(n, in_channels, out_channels, kernel_size, spatial_dims=1, **kw)


class PHConv2d(PHConv):
    """``PHConv`` with ``spatial_dims=2``: (B, C_in, H, W) -> (B, C_out, H', W')."""

    def __init__(self, n: int, in_channels: int, out_channels: int, kernel_size: int, **kw) -> None:
        super().__init__(n, in_channels, out_channels, kernel_size, spatial_dims=2, **kw)


class PHConv3d(PHConv):
    """``PHConv`` with ``spatial_dims=3``: (B, C_in, D, H, W) -> (B, C_out, D', H', W')."""

    def __init__(self, n: int, in_channels: int, out_channels: int, kernel_size: int, **kw) -> None:
        super().__init__(n, in_channels, out_channels, kernel_size, spatial_dims=3, **kw)


@register_component("phnn")
class PHMLinear(nn.Module):
    """Parameterised hypercomplex multiplication layer, (..., in_features) -> (..., out_features).

    Weight = sum_i kron(a_i, s_i) with a (n, n, n) and s (n, out/n, in/n) (official key names ``a``, ``s``,
    ``bias``); parameters ``n^3 + in*out/n + out``.
    """

    def __init__(self, n: int, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        if in_features % n or out_features % n:
            raise ValueError(
                f"PHMLinear: in_features ({in_features}) and out_features ({out_features}) must be divisible by n={n}"
            )
        self.n, self.in_features, self.out_features = n, in_features, out_features
        self.a = nn.Parameter(torch.empty(n, n, n))
        self.s = nn.Parameter(torch.empty(n, out_features // n, in_features // n))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.a)
        nn.init.xavier_uniform_(self.s)
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.in_features)
            nn.init.uniform_(self.bias, -bound, bound)

    @property
    def weight(self) -> Tensor:
        """(out_features, in_features)."""
        return kronecker_weight(self.a, self.s)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight.to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))

    def extra_repr(self) -> str:
        return f"n={self.n}, in_features={self.in_features}, out_features={self.out_features}"


@register_identity("phnn", "PHC weight == sum_i torch.kron(A_i, F_i) (explicit loop), and n=1 PHConv == nn.Conv2d")
def _identity_kron() -> str:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(3, 3, 3, generator=g, dtype=torch.float64)
    f = torch.randn(3, 2, 5, 3, 3, generator=g, dtype=torch.float64)
    ref = torch.zeros(6, 15, 3, 3, dtype=torch.float64)
    for i in range(3):
        for u in range(3):
            for v in range(3):
                ref[:, :, u, v] += torch.kron(a[i], f[i, :, :, u, v])
    err = (kronecker_weight(a, f) - ref).abs().max().item()
    assert err < 1e-12, f"kron weight error {err:.2e}"
    conv = PHConv(1, 5, 7, 3, padding=1).double()
    x = torch.randn(2, 5, 8, 8, generator=g, dtype=torch.float64)
    ref_out = F.conv2d(x, conv.A[0, 0, 0] * conv.F, conv.bias, padding=1)
    err1 = (conv(x) - ref_out).abs().max().item()
    assert err1 < 1e-12, f"n=1 vs conv2d error {err1:.2e}"
    return f"kron max abs error {err:.1e}; n=1 vs nn.Conv2d max abs error {err1:.1e}"


@register_identity("phnn", "n=4 with the Hamilton algebra == quaternion convolution")
def _identity_quaternion() -> str:
    g = torch.Generator().manual_seed(1)
    conv = PHConv(4, 8, 12, 3, padding=1, algebra="quaternion").double()
    with torch.no_grad():
        conv.F.copy_(torch.randn(conv.F.shape, generator=g, dtype=torch.float64))
    r, i, j, k = conv.F.reshape(conv.filter_shape).unbind(0)
    x = torch.randn(2, 8, 7, 7, generator=g, dtype=torch.float64)
    ref = F.conv2d(x, quaternion_conv_weight(r, i, j, k), conv.bias, padding=1)
    err = (conv(x) - ref).abs().max().item()
    assert err < 1e-12, f"max abs error {err:.2e}"
    # A learned PHConv with A set to the Hamilton matrices is the same layer.
    learned = PHConv(4, 8, 12, 3, padding=1).double()
    with torch.no_grad():
        learned.A.copy_(quaternion_algebra(torch.float64))
        learned.F.copy_(conv.F)
        learned.bias.copy_(conv.bias)
    err2 = (learned(x) - ref).abs().max().item()
    assert err2 < 1e-12, f"learned-A max abs error {err2:.2e}"
    return f"quaternion conv max abs error {err:.1e} (fixed algebra), {err2:.1e} (learned A set to Hamilton)"
