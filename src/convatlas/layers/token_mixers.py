"""Token mixers of the MetaFormer family and InceptionNeXt's Inception depthwise convolution.

MetaFormer (card: metaformer, arXiv 2210.13452) fixes the block ``x + mixer(norm(x))`` and varies the mixer:

- :class:`Pooling`: ``avgpool3x3(x) - x`` (count_include_pad=False), (B, C, H, W) -> (B, C, H, W).
- :class:`RandomMixing`: a frozen token-mixing matrix ``softmax(U(0,1)^{NxN})``, (B, C, H, W) with H*W = N.
- :class:`SepConv`: MobileNetV2 inverted separable conv 1x1 -> StarReLU -> DW kxk -> 1x1, (B, C, H, W).
- :class:`Attention`: multi-head self-attention on tokens (B, N, C), head_dim 32, no biases.
- identity: ``nn.Identity``.

InceptionNeXt (card: inceptionnext, arXiv 2303.16900):

- :class:`InceptionDWConv2d`: channels split into identity / 3x3 DW / 1xk DW / kx1 DW branches, (B, C, H, W).

Key names match timm's ``metaformer.py`` / ``inception_next.py`` so reference checkpoints load strictly.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from convatlas.identities import register_component, register_identity
from convatlas.layers.activations import StarReLU
from convatlas.ops.pointwise_conv import conv1x1
from convatlas.ops.residual_mlp import use_fast_inference

__all__ = ["Pooling", "RandomMixing", "SepConv", "Attention", "InceptionDWConv2d", "inception_dw_as_dense_kernel"]


class Pooling(nn.Module):
    """PoolFormer mixer: ``AvgPool(k, stride 1, pad k//2, count_include_pad=False)(x) - x`` on (B, C, H, W).

    The ``- x`` cancels the block's residual so the block adds only the neighbourhood difference.
    """

    def __init__(self, pool_size: int = 3, **_: object) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(pool_size, stride=1, padding=pool_size // 2, count_include_pad=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(x) - x


class RandomMixing(nn.Module):
    """RandFormer mixer: ``y[:, :, m] = sum_n M[m, n] x[:, :, n]`` over the N = H*W tokens of (B, C, H, W).

    ``M = softmax(U(0, 1))`` row-wise, stored as a frozen parameter ``random_matrix`` (N, N) (in the state
    dict, no gradient), as in the official code. The token count is fixed by the input resolution
    (N = 196 in stage 3 and 49 in stage 4 at 224); another resolution raises ``ValueError``.

    Args:
        num_tokens: N.
    """

    def __init__(self, num_tokens: int = 196, **_: object) -> None:
        super().__init__()
        self.num_tokens = num_tokens
        matrix = torch.softmax(torch.rand(num_tokens, num_tokens), dim=-1)
        self.random_matrix = nn.Parameter(matrix, requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        if h * w != self.num_tokens:
            raise ValueError(
                f"RandomMixing: expected {self.num_tokens} tokens (H*W), got {h}x{w}={h * w}; RandFormer's random "
                "matrices fix the input resolution (build the model with the matching img_size)"
            )
        y = torch.matmul(x.reshape(b, c, h * w), self.random_matrix.to(x.dtype).t())
        return y.reshape(b, c, h, w)

    def extra_repr(self) -> str:
        return f"num_tokens={self.num_tokens}"


class SepConv(nn.Module):
    """Inverted separable convolution (MobileNetV2) on (B, C, H, W): pwconv1 -> act1 -> dwconv -> act2 -> pwconv2.

    Args:
        dim: C.
        expansion_ratio: hidden width ``int(ratio * C)`` (2 in ConvFormer/CAFormer).
        act1_layer / act2_layer: activations after the first 1x1 conv / after the depthwise conv.
        bias: conv biases (False in MetaFormer).
        kernel_size / padding: depthwise kernel (7 / 3).
    """

    def __init__(
        self,
        dim: int,
        expansion_ratio: float = 2.0,
        act1_layer: Callable[[], nn.Module] = StarReLU,
        act2_layer: Callable[[], nn.Module] = nn.Identity,
        bias: bool = False,
        kernel_size: int = 7,
        padding: int = 3,
        **_: object,
    ) -> None:
        super().__init__()
        mid = int(expansion_ratio * dim)
        self.pwconv1 = nn.Conv2d(dim, mid, 1, bias=bias)
        self.act1 = act1_layer()
        self.dwconv = nn.Conv2d(mid, mid, kernel_size, padding=padding, groups=mid, bias=bias)
        self.act2 = act2_layer()
        self.pwconv2 = nn.Conv2d(mid, dim, 1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        fast = use_fast_inference(x)  # eager CPU inference: 1x1 convs through oneDNN (ops/pointwise_conv)
        x = conv1x1(x, self.pwconv1.weight, self.pwconv1.bias) if fast else self.pwconv1(x)
        if isinstance(self.act1, StarReLU) and not torch.is_grad_enabled() and x.dtype == self.act1.scale.dtype:
            x = self.act1.inplace_(x)  # inference: the conv output is ours to overwrite
        else:
            x = self.act1(x)
        x = self.act2(self.dwconv(x))
        return conv1x1(x, self.pwconv2.weight, self.pwconv2.bias) if fast else self.pwconv2(x)


class Attention(nn.Module):
    """Multi-head self-attention on tokens (B, N, C) -> (B, N, C) (CAFormer stages 3-4).

    Args:
        dim: C.
        head_dim: width of each head (32); heads = ``num_heads`` or ``max(C // head_dim, 1)``.
        qkv_bias / proj_bias: biases (both False in MetaFormer).
        attn_drop / proj_drop: dropout rates.
    """

    def __init__(
        self,
        dim: int,
        head_dim: int = 32,
        num_heads: int | None = None,
        qkv_bias: bool = False,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        proj_bias: bool = False,
        **_: object,
    ) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.scale = head_dim**-0.5
        self.num_heads = num_heads if num_heads else max(dim // head_dim, 1)
        self.attention_dim = self.num_heads * head_dim
        self.qkv = nn.Linear(dim, 3 * self.attention_dim, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(self.attention_dim, dim, bias=proj_bias)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        x = x.transpose(1, 2).reshape(b, n, self.attention_dim)
        return self.proj_drop(self.proj(x))


@register_component("inceptionnext")
class InceptionDWConv2d(nn.Module):
    """Inception depthwise convolution on (B, C, H, W) -> (B, C, H, W) (card: inceptionnext).

    Channels are split, in this order, into identity (C - 3g), square k_s x k_s DW (g), horizontal 1 x k_b DW
    (g) and vertical k_b x 1 DW (g), with g = int(C * branch_ratio); the branches are concatenated back in the
    same order. All convolutions have biases.

    Args:
        in_chs: C.
        square_kernel_size: k_s (3).
        band_kernel_size: k_b (11; 9 for atto).
        branch_ratio: g / C (0.125; 0.25 for atto).
        dilation: dilation of all three convolutions.
    """

    def __init__(
        self,
        in_chs: int,
        square_kernel_size: int = 3,
        band_kernel_size: int = 11,
        branch_ratio: float = 0.125,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        gc = int(in_chs * branch_ratio)
        if gc < 1 or 3 * gc > in_chs:
            raise ValueError(
                f"InceptionDWConv2d: branch_ratio {branch_ratio} gives {gc} channels per branch for C={in_chs}"
            )
        ps = dilation * (square_kernel_size - 1) // 2
        pb = dilation * (band_kernel_size - 1) // 2
        self.dwconv_hw = nn.Conv2d(gc, gc, square_kernel_size, padding=ps, dilation=dilation, groups=gc)
        self.dwconv_w = nn.Conv2d(gc, gc, (1, band_kernel_size), padding=(0, pb), dilation=(1, dilation), groups=gc)
        self.dwconv_h = nn.Conv2d(gc, gc, (band_kernel_size, 1), padding=(pb, 0), dilation=(dilation, 1), groups=gc)
        self.split_indexes = (in_chs - 3 * gc, gc, gc, gc)

    def forward(self, x: Tensor) -> Tensor:
        x_id, x_hw, x_w, x_h = torch.split(x, self.split_indexes, dim=1)
        return torch.cat((x_id, self.dwconv_hw(x_hw), self.dwconv_w(x_w), self.dwconv_h(x_h)), dim=1)


def inception_dw_as_dense_kernel(m: InceptionDWConv2d) -> tuple[Tensor, Tensor]:
    """The single depthwise conv equal to ``m`` (dilation 1): weight (C, 1, k, k), bias (C,), k = max kernel.

    Identity channels get a centred delta, the 3x3 / 1xk / kx1 kernels are zero-padded to k x k around the centre.
    """
    if m.dwconv_hw.dilation != (1, 1):
        raise ValueError("inception_dw_as_dense_kernel: only dilation 1 is supported")
    n_id, gc = m.split_indexes[0], m.split_indexes[1]
    ks, kb = m.dwconv_hw.kernel_size[0], m.dwconv_w.kernel_size[1]
    k = max(ks, kb)
    ref = m.dwconv_hw.weight
    c = n_id + 3 * gc
    w = torch.zeros(c, 1, k, k, dtype=ref.dtype, device=ref.device)
    mid = k // 2
    w[:n_id, 0, mid, mid] = 1.0
    o = (k - ks) // 2
    w[n_id : n_id + gc, :, o : o + ks, o : o + ks] = m.dwconv_hw.weight
    o = (k - kb) // 2
    w[n_id + gc : n_id + 2 * gc, :, mid : mid + 1, o : o + kb] = m.dwconv_w.weight
    w[n_id + 2 * gc :, :, o : o + kb, mid : mid + 1] = m.dwconv_h.weight
    zeros = torch.zeros(n_id, dtype=ref.dtype, device=ref.device)
    b = torch.cat([zeros, m.dwconv_hw.bias, m.dwconv_w.bias, m.dwconv_h.bias])
    return w, b


@register_identity(
    "inceptionnext", "Inception DW conv == one depthwise conv with zero-padded kernels (identity = delta)"
)
def _inception_dw_dense() -> str:
    torch.manual_seed(0)
    errs = []
    for c, ks, kb, r in ((96, 3, 11, 0.125), (40, 3, 9, 0.25)):
        m = InceptionDWConv2d(c, ks, kb, r).double()
        for p in m.parameters():
            nn.init.normal_(p)
        x = torch.randn(2, c, 13, 17, dtype=torch.float64)
        w, b = inception_dw_as_dense_kernel(m)
        ref = F.conv2d(x, w, b, padding=w.shape[-1] // 2, groups=c)
        with torch.no_grad():
            y = m(x)
        errs.append((y - ref).abs().max().item())
        n_id = m.split_indexes[0]
        assert torch.equal(y[:, :n_id], x[:, :n_id]), "identity branch changed its channels"
    err = max(errs)
    assert err < 1e-12, f"max abs error {err:.2e}"
    return f"max abs error {err:.1e} (C=96 k11 r1/8, C=40 k9 r1/4); identity channels bit-exact"


@register_identity(
    "metaformer", "Pooling mixer == (sum of valid 3x3 neighbours / their count) - x; constant image -> 0"
)
def _pooling_identity() -> str:
    torch.manual_seed(0)
    x = torch.randn(2, 5, 9, 7, dtype=torch.float64)
    ones_k = torch.ones(5, 1, 3, 3, dtype=torch.float64)
    s = F.conv2d(x, ones_k, padding=1, groups=5)
    cnt = F.conv2d(torch.ones_like(x), ones_k, padding=1, groups=5)
    ref = s / cnt - x
    pool = Pooling(3)
    err = (pool(x) - ref).abs().max().item()
    const = pool(torch.full((1, 3, 6, 6), 2.5, dtype=torch.float64)).abs().max().item()
    assert err < 1e-12 and const == 0.0, f"error {err:.2e}, constant-image output {const:.2e}"
    return f"max abs error {err:.1e}; constant image output exactly {const}"


@register_identity("metaformer", "RandomMixing rows sum to 1; identity matrix makes it the identity mixer")
def _random_mixing_identity() -> str:
    torch.manual_seed(0)
    m = RandomMixing(12).double()  # matrix drawn in float32, so rows sum to 1 within float32 rounding
    row = (m.random_matrix.sum(-1) - 1).abs().max().item()
    with torch.no_grad():
        m.random_matrix.copy_(torch.eye(12, dtype=torch.float64))
    x = torch.randn(2, 4, 3, 4, dtype=torch.float64)
    err = (m(x) - x).abs().max().item()
    assert row < 1e-6 and err == 0.0, f"row-sum error {row:.2e}, identity error {err:.2e}"
    return f"row-sum error {row:.1e}; eye-matrix mixing error {err}"
