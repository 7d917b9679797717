"""MetaFormer baselines (card: metaformer, arXiv 2210.13452; official code sail-sg/metaformer, Apache-2.0).

One 4-stage MetaFormer (``x = rs1(x) + DropPath(mixer(norm1(x)))``, ``x = rs2(x) + DropPath(mlp(norm2(x)))``)
with five token mixers:

- IdentityFormer: identity in every stage;
- RandFormer: identity in stages 1-2, a frozen random token-mixing matrix in stages 3-4 (fixed resolution);
- PoolFormerV2: 3x3 average pooling minus the input;
- ConvFormer: MobileNetV2 separable conv (1x1 -> StarReLU -> DW 7x7 -> 1x1);
- CAFormer: separable conv in stages 1-2, multi-head self-attention (head_dim 32) in stages 3-4.

MLPs are Linear/1x1 C->4C->C without bias and with StarReLU; res-scale (per-channel, init 1) in stages 3-4;
stem Conv 7x7/4 p2 -> LN, downsampling LN -> Conv 3x3/2 p1 (LN without bias, eps 1e-6); block norm is
GroupNorm(1 group, no bias) for Identity/Rand/PoolFormerV2 and channel LN (no bias) for Conv/CAFormer; head is
mean -> LayerNorm -> Linear, or -> MLP head (C->4C, SquaredReLU, LN, C->classes) for Conv/CAFormer.

Conv stages run channels-first (B, C, H, W) with 1x1 convs; attention stages run on tokens (B, N, C) with Linear
layers; the state dict equals timm 1.0.31's ``metaformer.py`` (timm checkpoints load strictly), and
:func:`convert_official_metaformer` maps the official repository's checkpoints (needed for IdentityFormer and
RandFormer, which timm lacks).

Inference (eval, no grad, plain CPU tensors) takes a path with the same numbers and fewer passes: in-place
residuals / StarReLU, Linears of the attention stages as 1x1 convolutions, and the MLP half over batch chunks for
large maps; training, autocast and compile use the plain path. The stem's channel LayerNorm (permute ->
``F.layer_norm``) leaves channels-last memory, so every later 1x1 / depthwise conv takes oneDNN's fast layout
without a copy (an explicit channels-last input measured neutral).

Card facts. Exact counts (timm, 1000 classes): convformer s18/s36/m36/b36 26,774,448 / 40,012,152 /
57,051,640 / 99,882,616; caformer 26,341,656 / 39,297,102 / 56,204,878 / 98,753,614; poolformerv2
s12/s24/s36/m36/m48 11,891,712 / 21,341,464 / 30,791,216 / 56,077,168 / 73,346,056. IdentityFormer has the
PoolFormerV2 counts (pooling has no parameters); RandFormer adds 6*196^2 + 2*49^2 frozen entries for S12 (12,127,010
total). MACs (paper, 224): counted here on the meta device, attention matmuls included, e.g. caformer_s18 4.107 G
(paper 4.1 G; timm's CPU SDPA path hides the 0.229 G of attention from FlopCounterMode, giving 3.878 G).
Training (official scripts): AdamW lr 4e-3 (CAFormer: LAMB 8e-3), head dropout 0/0.4/0.4/0.5 for CAFormer
S18/S36/M36/B36 (``head_dropout``); drop path per card table.
"""

from __future__ import annotations

import re
from functools import partial
from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from convatlas.identities import register_identity
from convatlas.layers import ConvMlp, DropPath, LayerNorm, LayerNorm2d, Mlp, check_input, drop_path_rates
from convatlas.layers.activations import SquaredReLU, StarReLU
from convatlas.layers.classifier import global_pool2d, _check_pool
from convatlas.layers.group_norm import GroupNorm1
from convatlas.layers.layer_scale import Scale
from convatlas.layers.token_mixers import Attention, Pooling, RandomMixing, SepConv
from convatlas.models.backbone import StagedBackbone, checkpoint_seq
from convatlas.ops.pointwise_conv import conv1x1
from convatlas.ops.residual_mlp import use_fast_inference
from convatlas.registry import Reported, register_model

__all__ = ["MetaFormer", "MetaFormerBlock", "MetaFormerStage", "MlpHead", "convert_official_metaformer", "MIXERS"]

#: token-mixer names accepted by :class:`MetaFormer` (``"random"`` needs the stage's token count).
MIXERS = ("identity", "random", "pooling", "sepconv", "attention")
NORMS = ("gn1", "ln")


def _mixer(kind: str, num_tokens: int | None) -> Callable[[int], nn.Module]:
    if kind == "identity":
        return lambda dim: nn.Identity()
    if kind == "random":
        return lambda dim: RandomMixing(num_tokens)
    if kind == "pooling":
        return lambda dim: Pooling(3)
    if kind == "sepconv":
        return lambda dim: SepConv(dim)
    if kind == "attention":
        return lambda dim: Attention(dim, head_dim=32)
    raise ValueError(f"MetaFormer: token mixer must be one of {MIXERS}, got {kind!r}")


def _norm(kind: str, channels_first: bool) -> Callable[[int], nn.Module]:
    if kind == "gn1":
        if not channels_first:
            raise ValueError("MetaFormer: 'gn1' norm needs a channels-first (non-attention) stage")
        return partial(GroupNorm1, eps=1e-6, bias=False)
    if kind == "ln":
        return partial(LayerNorm2d if channels_first else LayerNorm, eps=1e-6, bias=False)
    raise ValueError(f"MetaFormer: norm must be one of {NORMS}, got {kind!r}")


class MetaFormerBlock(nn.Module):
    """MetaFormer block on (B, C, H, W) (``channels_first``) or tokens (B, N, C).

    Args:
        dim: C.
        token_mixer: ``fn(C) -> module``.
        norm_layer: ``fn(C) -> module``.
        drop_path: stochastic-depth rate.
        channels_first: layout of the input; picks 1x1 convs (ConvMlp) or Linear MLP.
        layer_scale_init_value / res_scale_init_value: enable the per-channel scales with these inits.
    """

    def __init__(
        self,
        dim: int,
        token_mixer: Callable[[int], nn.Module],
        norm_layer: Callable[[int], nn.Module],
        drop_path: float = 0.0,
        channels_first: bool = True,
        layer_scale_init_value: float | None = None,
        res_scale_init_value: float | None = None,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        mlp = ConvMlp if channels_first else Mlp
        scale = partial(Scale, dim, channels_first=channels_first)
        self.norm1 = norm_layer(dim)
        self.token_mixer = token_mixer(dim)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.layer_scale1 = scale(layer_scale_init_value) if layer_scale_init_value is not None else nn.Identity()
        self.res_scale1 = scale(res_scale_init_value) if res_scale_init_value is not None else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = mlp(dim, int(mlp_ratio * dim), act_layer=StarReLU, bias=False)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.layer_scale2 = scale(layer_scale_init_value) if layer_scale_init_value is not None else nn.Identity()
        self.res_scale2 = scale(res_scale_init_value) if res_scale_init_value is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        if not self.training and use_fast_inference(x):
            return self._forward_inference(x)
        x = self.res_scale1(x) + self.layer_scale1(self.drop_path1(self.token_mixer(self.norm1(x))))
        return self.res_scale2(x) + self.layer_scale2(self.drop_path2(self.mlp(self.norm2(x))))

    @staticmethod
    def _residual_(y: Tensor, x: Tensor, layer_scale: nn.Module, res_scale: nn.Module) -> Tensor:
        """In place on the fresh branch output ``y``: ``y = res_scale(x) + layer_scale(y)``."""
        if isinstance(layer_scale, Scale):
            y = layer_scale(y) if layer_scale.channels_first else y.mul_(layer_scale.scale)
        if isinstance(res_scale, Scale):
            s = res_scale.scale.view(-1, 1, 1) if res_scale.channels_first else res_scale.scale
            return y.addcmul_(x, s)
        return y.add_(x)

    def _forward_inference(self, x: Tensor) -> Tensor:
        """Same numbers with fewer passes and allocations: in-place residuals and StarReLU, 1x1 convs / Linears
        run as oneDNN 1x1 convolutions on channels-last memory, and the MLP half runs over batch chunks whose
        hidden activation stays below ``_CHUNK_ELEMS`` (big buffers are otherwise page-faulted on every call)."""
        mixer = self.token_mixer
        if isinstance(mixer, Attention):
            y = _attention_inference(mixer, self.norm1(x))
        else:
            y = mixer(self.norm1(x))
        if y is x:  # impossible with the norms used here (they return fresh tensors), but never mutate the input
            y = y.clone()
        x = self._residual_(y, x, self.layer_scale1, self.res_scale1)  # fresh tensor, ours to overwrite
        mlp = self.mlp
        if not isinstance(mlp.act, StarReLU) or not isinstance(mlp.norm, nn.Identity):
            return self._residual_(mlp(self.norm2(x)), x, self.layer_scale2, self.res_scale2)
        b = x.shape[0]
        hidden_per_sample = x[0].numel() // mlp.fc1.weight.shape[1] * mlp.fc1.weight.shape[0]
        if b * hidden_per_sample <= _CHUNK_ABOVE or b == 1:
            return self._residual_(self._mlp_inference(x), x, self.layer_scale2, self.res_scale2)
        step = max(1, _CHUNK_ELEMS // hidden_per_sample)
        rs = self.res_scale2.scale if isinstance(self.res_scale2, Scale) else None
        if rs is not None and x.dim() == 4:
            rs = rs.view(-1, 1, 1)
        for start in range(0, b, step):
            xs = x[start : start + step]
            h = self._mlp_inference(xs)  # reads xs before it is overwritten below
            if isinstance(self.layer_scale2, Scale):
                h = self.layer_scale2(h) if self.layer_scale2.channels_first else h.mul_(self.layer_scale2.scale)
            if rs is not None:
                torch.addcmul(h, xs, rs, out=xs)
            else:
                xs.add_(h)
        return x

    def _mlp_inference(self, x: Tensor) -> Tensor:
        """``fc2(StarReLU(fc1(norm2(x))))`` with the activation in place and the Linears as 1x1 convolutions."""
        mlp = self.mlp
        h = self.norm2(x)
        if isinstance(mlp, Mlp):
            h = _linear_as_conv(h, mlp.fc1.weight, mlp.fc1.bias)
            return _linear_as_conv(mlp.act.inplace_(h), mlp.fc2.weight, mlp.fc2.bias)
        h = mlp.act.inplace_(conv1x1(h, mlp.fc1.weight, mlp.fc1.bias))
        return conv1x1(h, mlp.fc2.weight, mlp.fc2.bias)


# MLP halves whose hidden activation exceeds _CHUNK_ABOVE elements (32 MiB fp32: glibc's largest mmap threshold,
# bigger buffers are mmapped fresh and page-faulted on every call) run over batch chunks of <= _CHUNK_ELEMS.
_CHUNK_ABOVE = 1 << 23
_CHUNK_ELEMS = 1 << 23


def _linear_as_conv(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``F.linear`` on contiguous tokens (B, N, C) computed as a 1x1 convolution of their channels-last
    (B, C, N, 1) view: oneDNN's convolution kernels beat the BLAS GEMM behind ``F.linear`` on CPUs where MKL
    takes its generic path (2.2x on the AMD EPYC development machine, 1 thread, 3136 x 320 x 1280)."""
    if x.dim() != 3 or not x.is_contiguous():
        return F.linear(x, weight, bias)
    y = conv1x1(x.transpose(1, 2).unsqueeze(-1), weight, bias)
    return y.squeeze(-1).transpose(1, 2)


def _attention_inference(m: Attention, x: Tensor) -> Tensor:
    """:class:`Attention` forward (eval) with qkv / proj as 1x1 convolutions (see :func:`_linear_as_conv`)."""
    b, n, _ = x.shape
    qkv = _linear_as_conv(x, m.qkv.weight, m.qkv.bias)
    q, k, v = qkv.reshape(b, n, 3, m.num_heads, m.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, m.attention_dim)
    return _linear_as_conv(y, m.proj.weight, m.proj.bias)


class Downsampling(nn.Module):
    """Pre-norm (LN, no bias) -> Conv 3x3/2 p1: (B, C_in, H, W) -> (B, C_out, ceil(H/2), ceil(W/2))."""

    def __init__(self, in_chs: int, out_chs: int) -> None:
        super().__init__()
        self.norm = LayerNorm2d(in_chs, eps=1e-6, bias=False)
        self.conv = nn.Conv2d(in_chs, out_chs, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(self.norm(x))


class Stem(nn.Module):
    """Conv 7x7/4 p2 -> LN (no bias): (B, C_in, H, W) -> (B, C, floor((H-3)/4)+1, ...)."""

    def __init__(self, in_chs: int, out_chs: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, 7, stride=4, padding=2)
        self.norm = LayerNorm2d(out_chs, eps=1e-6, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.conv(x))


class MetaFormerStage(nn.Module):
    """[Downsampling (all stages but the first)] + blocks on (B, C, H, W).

    Attention stages flatten to tokens (B, N, C) inside and restore (B, C, H, W) at the end.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        depth: int,
        mixer: str,
        norm: str,
        dp_rates: Sequence[float],
        num_tokens: int | None = None,
        layer_scale_init_value: float | None = None,
        res_scale_init_value: float | None = None,
        downsample: bool = True,
    ) -> None:
        super().__init__()
        self.grad_checkpointing = False
        self.channels_first = mixer != "attention"
        self.downsample = Downsampling(in_chs, out_chs) if downsample else nn.Identity()
        self.blocks = nn.Sequential(
            *[
                MetaFormerBlock(
                    out_chs,
                    _mixer(mixer, num_tokens),
                    _norm(norm, self.channels_first),
                    dp_rates[i],
                    self.channels_first,
                    layer_scale_init_value,
                    res_scale_init_value,
                )
                for i in range(depth)
            ]
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.downsample(x)
        b, c, h, w = x.shape
        if not self.channels_first:
            x = x.flatten(2).transpose(1, 2)
        x = checkpoint_seq(self.blocks, x) if self.grad_checkpointing and self.training else self.blocks(x)
        if not self.channels_first:
            x = x.transpose(1, 2).reshape(b, c, h, w)
        return x


class MlpHead(nn.Module):
    """Linear C->rC -> SquaredReLU -> LayerNorm(eps 1e-6) -> Dropout -> Linear rC->classes on (B, C).

    (The official code uses the LayerNorm default eps 1e-5 here; timm uses 1e-6, which we follow for parity.)
    """

    def __init__(self, dim: int, num_classes: int, mlp_ratio: float = 4.0, drop_rate: float = 0.0) -> None:
        super().__init__()
        hidden = int(mlp_ratio * dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = SquaredReLU()
        self.norm = LayerNorm(hidden, eps=1e-6)
        self.head_drop = nn.Dropout(drop_rate)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.head_drop(self.norm(self.act(self.fc1(x)))))


class MetaFormerHead(nn.Module):
    """Global pool -> LayerNorm (bias, eps 1e-6) -> Dropout -> ``fc`` (Linear or :class:`MlpHead`).

    (B, C, H, W) -> (B, num_classes); ``pre_logits=True`` returns the normalised (B, C). Keys ``norm``, ``fc``.
    """

    def __init__(self, dim: int, num_classes: int, mlp_head: bool, pool_type: str = "avg",
                 drop_rate: float = 0.0, head_dropout: float = 0.0) -> None:
        super().__init__()
        self.pool_type = _check_pool(pool_type)
        self.dim, self.mlp_head, self.head_dropout = dim, mlp_head, head_dropout
        self.norm = LayerNorm(dim, eps=1e-6)
        self.drop = nn.Dropout(drop_rate)
        self.fc = self._make_fc(num_classes)

    def _make_fc(self, num_classes: int) -> nn.Module:
        if num_classes <= 0:
            return nn.Identity()
        if self.mlp_head:
            return MlpHead(self.dim, num_classes, drop_rate=self.head_dropout)
        return nn.Linear(self.dim, num_classes)

    def reset(self, num_classes: int, pool_type: str | None = None) -> None:
        if pool_type is not None:
            self.pool_type = _check_pool(pool_type)
        ref = self.norm.weight
        self.fc = self._make_fc(num_classes).to(device=ref.device, dtype=ref.dtype)
        if num_classes > 0:
            self.fc.apply(_init_weights)

    def forward(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.drop(self.norm(global_pool2d(x, self.pool_type)))
        return x if pre_logits else self.fc(x)


def _stage_sizes(img_size: int | Sequence[int], n: int) -> list[tuple[int, int]]:
    h, w = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    h, w = (h - 3) // 4 + 1, (w - 3) // 4 + 1  # stem 7x7/4 p2
    sizes = [(h, w)]
    for _ in range(n - 1):
        h, w = (h + 1) // 2, (w + 1) // 2  # downsampling 3x3/2 p1
        sizes.append((h, w))
    return sizes


class MetaFormer(StagedBackbone):
    """MetaFormer classifier: (B, in_chans, H, W) -> (B, num_classes) (card: metaformer).

    Args:
        in_chans / num_classes: input channels / classifier outputs (0: pooled features).
        global_pool: ``"avg"`` or ``"max"``.
        depths / dims: blocks and widths per stage.
        token_mixers: one of :data:`MIXERS` per stage (or one for all).
        norms: block norm per stage, ``"gn1"`` (GroupNorm 1 group) or ``"ln"`` (channel LN).
        mlp_head: MLP classifier head (Conv/CAFormer) instead of a Linear.
        res_scale_init_values / layer_scale_init_values: per-stage inits; None disables.
        img_size: input resolution; only used (and then enforced) by ``"random"`` mixers.
        drop_rate: dropout before the classifier; head_dropout: dropout inside the MLP head;
        drop_path_rate: stochastic depth, linear over all blocks.
    """

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        depths: Sequence[int] = (2, 2, 6, 2),
        dims: Sequence[int] = (64, 128, 320, 512),
        token_mixers: str | Sequence[str] = "pooling",
        norms: str | Sequence[str] = "ln",
        mlp_head: bool = True,
        res_scale_init_values: Sequence[float | None] = (None, None, 1.0, 1.0),
        layer_scale_init_values: Sequence[float | None] | None = None,
        img_size: int | Sequence[int] = 224,
        drop_rate: float = 0.0,
        head_dropout: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        n = len(depths)
        mixers = [token_mixers] * n if isinstance(token_mixers, str) else list(token_mixers)
        norm_kinds = [norms] * n if isinstance(norms, str) else list(norms)
        ls = list(layer_scale_init_values) if layer_scale_init_values is not None else [None] * n
        rs = list(res_scale_init_values) if res_scale_init_values is not None else [None] * n
        if not all(len(v) == n for v in (dims, mixers, norm_kinds, ls, rs)):
            raise ValueError(
                "MetaFormer: depths, dims, token_mixers, norms and scale inits must have one entry per stage"
            )
        self.in_chans, self.num_classes = in_chans, num_classes
        self.grad_checkpointing = False
        sizes = _stage_sizes(img_size, n)
        self.img_size = None
        if "random" in mixers:
            self.img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        self.stem = Stem(in_chans, dims[0])
        rates = drop_path_rates(depths, drop_path_rate)
        stages, self.feature_info, prev = [], [], dims[0]
        for i in range(n):
            tokens = sizes[i][0] * sizes[i][1]
            stages.append(
                MetaFormerStage(
                    prev, dims[i], depths[i], mixers[i], norm_kinds[i], rates[i], tokens, ls[i], rs[i], i > 0
                )
            )
            prev = dims[i]
            self.feature_info.append({"num_chs": dims[i], "reduction": 4 * 2**i, "module": f"stages.{i}"})
        self.stages = nn.Sequential(*stages)
        self.num_features = self.head_hidden_size = dims[-1]
        self.head = MetaFormerHead(dims[-1], num_classes, mlp_head, global_pool, drop_rate, head_dropout)
        self.apply(_init_weights)

    def _check(self, x: Tensor) -> None:
        name = getattr(self, "pretrained_cfg", {}).get("architecture", type(self).__name__)
        check_input(name, x, ndim=4, channels=self.in_chans, min_size=3)
        if self.img_size is not None and tuple(x.shape[2:]) != self.img_size:
            raise ValueError(
                f"{name}: random token mixing fixes the input size to {self.img_size}, got shape {tuple(x.shape)}"
            )


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, (nn.Conv2d, nn.Linear)):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def convert_official_metaformer(state_dict: Mapping[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """Map a checkpoint of the official ``metaformer_baselines.py`` to this layout (timm's mapping).

    ``downsample_layers.0`` -> ``stem``, ``downsample_layers.i`` -> ``stages.i.downsample``, ``pre_norm`` /
    ``post_norm`` -> ``norm``, ``stages.i.j`` -> ``stages.i.blocks.j``, ``norm`` -> ``head.norm``, ``head`` ->
    ``head.fc``; Linear weights (out, in) are reshaped to 1x1 convs (out, in, 1, 1) where the model has convs.
    A state dict already in this layout is returned unchanged.
    """
    if "stem.conv.weight" in state_dict:
        return dict(state_dict)
    target = model.state_dict()
    out = {}
    for k, v in state_dict.items():
        k = re.sub(r"^downsample_layers\.0\.", "stem.", k)
        k = re.sub(r"^downsample_layers\.(\d+)\.", r"stages.\1.downsample.", k)
        k = k.replace("post_norm", "norm").replace("pre_norm", "norm")
        k = re.sub(r"^stages\.(\d+)\.(\d+)\.", r"stages.\1.blocks.\2.", k)
        k = re.sub(r"^head\.", "head.fc.", k)
        k = re.sub(r"^norm\.", "head.norm.", k)
        if k in target and v.shape != target[k].shape and v.numel() == target[k].numel():
            v = v.reshape(target[k].shape)
        out[k] = v
    return out


#: key converter looked up by :func:`convatlas.engine.checkpoint.load_weights` (``create_model(pretrained=path)``).
checkpoint_filter_fn = convert_official_metaformer


# ---- variants --------------------------------------------------------------------------------------------------
_S12 = dict(depths=(2, 2, 6, 2), dims=(64, 128, 320, 512))
_S24 = dict(depths=(4, 4, 12, 4), dims=(64, 128, 320, 512))
_S36 = dict(depths=(6, 6, 18, 6), dims=(64, 128, 320, 512))
_M36 = dict(depths=(6, 6, 18, 6), dims=(96, 192, 384, 768))
_M48 = dict(depths=(8, 8, 24, 8), dims=(96, 192, 384, 768))
_CS18 = dict(depths=(3, 3, 9, 3), dims=(64, 128, 320, 512))
_CS36 = dict(depths=(3, 12, 18, 3), dims=(64, 128, 320, 512))
_CM36 = dict(depths=(3, 12, 18, 3), dims=(96, 192, 384, 576))
_CB36 = dict(depths=(3, 12, 18, 3), dims=(128, 256, 512, 768))

_POOL_LIKE = dict(norms="gn1", mlp_head=False)
_FAMILIES = {
    "identityformer": dict(token_mixers="identity", **_POOL_LIKE),
    "randformer": dict(token_mixers=("identity", "identity", "random", "random"), **_POOL_LIKE),
    "poolformerv2": dict(token_mixers="pooling", **_POOL_LIKE),
    "convformer": dict(token_mixers="sepconv", norms="ln", mlp_head=True),
    "caformer": dict(token_mixers=("sepconv", "sepconv", "attention", "attention"), norms="ln", mlp_head=True),
}
_POOL_SIZES = {"s12": _S12, "s24": _S24, "s36": _S36, "m36": _M36, "m48": _M48}
_CONV_SIZES = {"s18": _CS18, "s36": _CS36, "m36": _CM36, "b36": _CB36}

# (params, params_exact, paper GMACs@224, paper top-1) ; exact counts from timm 1.0.31 where timm has the model,
# else the paper's rounded figure (IdentityFormer = PoolFormerV2 sizes; RandFormer adds the frozen matrices).
_REPORTED = {
    "identityformer_s12": (11_900_000, False, 1.8, 74.6),
    "identityformer_s24": (21_300_000, False, 3.4, 78.2),
    "identityformer_s36": (30_800_000, False, 5.0, 79.3),
    "identityformer_m36": (56_100_000, False, 8.8, 80.0),
    "identityformer_m48": (73_300_000, False, 11.5, 80.4),
    "randformer_s12": (12_100_000, False, 1.9, 76.6),
    "randformer_s24": (21_800_000, False, 3.5, None),
    "randformer_s36": (31_500_000, False, 5.2, None),
    "randformer_m36": (56_800_000, False, 9.0, 81.2),
    "randformer_m48": (74_200_000, False, 11.9, 81.4),
    "poolformerv2_s12": (11_891_712, True, 1.8, 78.0),
    "poolformerv2_s24": (21_341_464, True, 3.4, 80.7),
    "poolformerv2_s36": (30_791_216, True, 5.0, 81.6),
    "poolformerv2_m36": (56_077_168, True, 8.8, 82.2),
    "poolformerv2_m48": (73_346_056, True, 11.5, 82.6),
    "convformer_s18": (26_774_448, True, 3.9, 83.0),
    "convformer_s36": (40_012_152, True, 7.6, 84.1),
    "convformer_m36": (57_051_640, True, 12.8, 84.5),
    "convformer_b36": (99_882_616, True, 22.6, 84.8),
    "caformer_s18": (26_341_656, True, 4.1, 83.6),
    "caformer_s36": (39_297_102, True, 8.0, 84.5),
    "caformer_m36": (56_204_878, True, 13.2, 85.2),
    "caformer_b36": (98_753_614, True, 23.2, 85.5),
}
_TIMM = {"poolformerv2", "convformer", "caformer"}
# README 384 fine-tunes (same weights layout; timm tags ``<name>.sail_in1k_384``): (paper GMACs@384, top-1@384).
# Measured on the meta device: CAFormer 13.366 / 25.984 / 41.977 / 72.150 G, ConvFormer 11.576 / 22.445 / 37.734 /
# 66.492 G (all within 0.25 % of the README).
_REPORTED_384 = {
    "caformer_s18": (13.4, 85.0), "caformer_s36": (26.0, 85.7), "caformer_m36": (42.0, 86.2),
    "caformer_b36": (72.2, 86.4), "convformer_s18": (11.6, 84.4), "convformer_s36": (22.4, 85.4),
    "convformer_m36": (37.7, 85.6), "convformer_b36": (66.5, 85.7),
}


def _register(name: str, arch: dict, res: int = 224) -> None:
    params, exact, gmacs, top1 = _REPORTED[name]
    if res != 224:
        gmacs, top1 = _REPORTED_384[name]
    family = name.split("_")[0]
    reg_name = name if res == 224 else f"{name}_{res}"

    def builder(**kw) -> MetaFormer:
        return MetaFormer(**{**arch, **kw})

    builder.__name__ = builder.__qualname__ = reg_name
    builder.__doc__ = f"{name} at {res}x{res} (card metaformer): (B, 3, {res}, {res}) -> (B, 1000)."
    src = ("params: timm 1.0.31 exact count" if exact else "params: paper (rounded)") + "; MACs/top-1: official README"
    register_model(
        builder, paper="metaformer", name=reg_name, input_size=(3, res, res),
        test_input_size=(3, 224, 224) if family == "randformer" else (3, 64, 64),
        reference=f"timm:{name}" if family in _TIMM else None,
        reported=Reported(params=params, gmacs=gmacs, resolution=res, params_exact=exact,
                          metrics={"imagenet_top1": top1} if top1 else {}, source=src),
        tags=("frozen_params",) if family == "randformer" else (),
    )


for _fam, _fargs in _FAMILIES.items():
    for _size, _sargs in (_CONV_SIZES if _fam in ("convformer", "caformer") else _POOL_SIZES).items():
        _register(f"{_fam}_{_size}", {**_sargs, **_fargs})
        if _fam in ("convformer", "caformer"):
            _register(f"{_fam}_{_size}", {**_sargs, **_fargs}, res=384)

_TINY = dict(depths=(1, 1, 1, 1), dims=(16, 32, 64, 64), num_classes=10)


@register_identity("metaformer", "RandFormer with identity mixing matrices == IdentityFormer with the same weights")
def _randformer_eye_is_identityformer() -> str:
    torch.manual_seed(0)
    rand = MetaFormer(**{**_TINY, **_FAMILIES["randformer"], "img_size": 64}).double().eval()
    ident = MetaFormer(**{**_TINY, **_FAMILIES["identityformer"]}).double().eval()
    sd = {k: v for k, v in rand.state_dict().items() if not k.endswith("random_matrix")}
    ident.load_state_dict(sd, strict=True)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        for m in rand.modules():
            if isinstance(m, RandomMixing):
                m.random_matrix.copy_(torch.eye(m.num_tokens, dtype=torch.float64))
        err = (rand(x) - ident(x)).abs().max().item()
    assert err < 1e-12, f"max abs error {err:.2e}"
    return f"max abs logit difference {err:.1e} (float64, 64x64 input)"


@register_model(
    paper="metaformer", test_only=True, input_size=(3, 64, 64), test_input_size=(3, 64, 64), num_classes=10
)
def test_metaformer(**kw) -> MetaFormer:
    """Tiny CAFormer (SepConv, SepConv, Attention, Attention; MLP head) for the generic tests."""
    return MetaFormer(**{**_TINY, **_FAMILIES["caformer"], **kw})


@register_model(
    paper="metaformer", test_only=True, input_size=(3, 64, 64), test_input_size=(3, 64, 64), num_classes=10
)
def test_metaformer_pool(**kw) -> MetaFormer:
    """Tiny PoolFormerV2 (GroupNorm1 blocks, Linear head) for the generic tests."""
    return MetaFormer(**{**_TINY, **_FAMILIES["poolformerv2"], **kw})


@register_model(
    paper="metaformer", test_only=True, input_size=(3, 64, 64), test_input_size=(3, 64, 64), num_classes=10
)
def test_metaformer_rand(**kw) -> MetaFormer:
    """Tiny RandFormer at 64x64 (frozen 4x4 / 2x2-token mixing matrices) for the generic tests."""
    return MetaFormer(**{**_TINY, **_FAMILIES["randformer"], "img_size": 64, **kw})
