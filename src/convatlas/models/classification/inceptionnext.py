"""InceptionNeXt (card: inceptionnext, arXiv 2303.16900; official code sail-sg/inceptionnext, Apache-2.0).

A ConvNeXt-style "MetaNeXt" network whose 7x7 depthwise conv is replaced by the Inception depthwise conv
(:class:`~convatlas.layers.token_mixers.InceptionDWConv2d`): a 3x3 square, a 1xk and a kx1 band kernel on
three small channel groups, the rest passed through untouched. Blocks use BatchNorm, the head is an MLP.

Block: ``x + DropPath(gamma * MLP(BN(mixer(x))))``; MLP = 1x1 conv C->rC -> GELU -> 1x1 conv rC->C.
Stem: Conv 4x4/4 -> BN. Downsampling (stages 2-4): BN -> Conv 2x2/2. Head: avg pool -> Linear C->3C -> GELU ->
LayerNorm(eps 1e-6) -> Dropout -> Linear 3C->classes.

Inference (eval, no grad, plain CPU tensors): channels-last memory throughout (oneDNN's fast layout for the
depthwise band convs), BatchNorm is folded into the first 1x1 conv and layer scale into the second, GELU and the
residual run in place (same numbers up to rounding); training/autocast/compile use the plain path.

Card facts (exact counts from timm 1.0.31 ``inception_next_*``, 1000 classes; our state dict equals timm's, so
timm / official checkpoints load strictly): atto 4,156,520; tiny 28,055,680; small 49,374,016; base 86,672,136.
MACs at 224 (conv/linear, FlopCounterMode): atto 0.503 G (paper: not reported in the README read; timm figure),
tiny 4.189 G (paper 4.2 G), small 8.356 G (8.4 G), base 14.841 G (14.9 G), base@384 43.62 G (43.6 G).
Tensors are (B, C, H, W); any H, W >= 32 works (the stem and downsamplers floor odd sizes).
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from convatlas.layers import ConvMlp, DropPath, LayerNorm, drop_path_rates
from convatlas.layers.classifier import global_pool2d, _check_pool
from convatlas.layers.token_mixers import InceptionDWConv2d
from convatlas.models.backbone import StagedBackbone, checkpoint_seq
from convatlas.ops.pointwise_conv import conv1x1, nchw_is_faster
from convatlas.ops.residual_mlp import use_fast_inference
from convatlas.registry import Reported, register_model

__all__ = ["InceptionNeXt", "MetaNeXtBlock", "MetaNeXtStage", "MlpClassifierHead"]


class MetaNeXtBlock(nn.Module):
    """``x + DropPath(gamma * mlp(norm(token_mixer(x))))`` on (B, C, H, W).

    Args:
        dim: C.
        token_mixer: ``fn(C) -> module`` (default Inception DW conv).
        mlp_ratio: hidden width ratio of the 1x1-conv MLP.
        ls_init_value: layer-scale init (``gamma``); 0/None disables it.
        drop_path: stochastic-depth rate.
    """

    def __init__(
        self,
        dim: int,
        token_mixer: Callable[[int], nn.Module] = InceptionDWConv2d,
        mlp_ratio: float = 4.0,
        ls_init_value: float | None = 1e-6,
        drop_path: float = 0.0,
        norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
        act_layer: Callable[[], nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        self.token_mixer = token_mixer(dim)
        self.norm = norm_layer(dim)
        self.mlp = ConvMlp(dim, int(mlp_ratio * dim), act_layer=act_layer)
        self.gamma = nn.Parameter(torch.full((dim,), float(ls_init_value))) if ls_init_value else None
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        if not self.training and use_fast_inference(x) and self._foldable:
            return self._forward_inference(x)
        y = self.mlp(self.norm(self.token_mixer(x)))
        if self.gamma is not None:
            y = y * self.gamma.view(1, -1, 1, 1)
        return self.drop_path(y) + x

    @property
    def _foldable(self) -> bool:
        n = self.norm
        return isinstance(n, nn.BatchNorm2d) and n.running_mean is not None and isinstance(self.mlp.act, nn.GELU) \
            and self.mlp.act.approximate == "none" and isinstance(self.mlp.norm, nn.Identity)

    def _forward_inference(self, x: Tensor) -> Tensor:
        """Eval-mode BN folded into fc1, GELU / layer scale / residual in place: same numbers, fewer passes."""
        n, fc1, fc2 = self.norm, self.mlp.fc1, self.mlp.fc2
        if x.shape[0] * x.shape[2] * x.shape[3] < fc1.weight.shape[0]:
            # few tokens (small batch, late stage): re-folding the weights would cost more than the BN pass
            h = torch.ops.aten.gelu_(conv1x1(n(self.token_mixer(x)), fc1.weight, fc1.bias))
            y = conv1x1(h, fc2.weight, fc2.bias)
            return (y.mul_(self.gamma.view(1, -1, 1, 1)) if self.gamma is not None else y).add_(x)
        s = n.running_var.add(n.eps).rsqrt()
        shift = -n.running_mean * s
        if n.weight is not None:
            s = s * n.weight
            shift = shift * n.weight + n.bias
        w1 = fc1.weight * s.view(1, -1, 1, 1)
        b1 = fc1.weight.flatten(1) @ shift
        if fc1.bias is not None:
            b1 = b1 + fc1.bias
        w2, b2 = fc2.weight, fc2.bias
        if self.gamma is not None:
            w2 = w2 * self.gamma.view(-1, 1, 1, 1)
            b2 = b2 * self.gamma if b2 is not None else None
        h = torch.ops.aten.gelu_(conv1x1(self.token_mixer(x), w1, b1))
        return conv1x1(h, w2, b2).add_(x)


class MetaNeXtStage(nn.Module):
    """Optional downsampling (BN -> Conv 2x2/2) followed by ``depth`` blocks: (B, C_in, H, W) -> (B, C, H/s, W/s)."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        depth: int,
        stride: int = 2,
        drop_path_rates: Sequence[float] | None = None,
        ls_init_value: float | None = 1e-6,
        token_mixer: Callable[[int], nn.Module] = InceptionDWConv2d,
        mlp_ratio: float = 4.0,
        norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
        act_layer: Callable[[], nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        self.grad_checkpointing = False
        self.stride, self.out_chs = stride, out_chs
        if stride > 1:
            self.downsample = nn.Sequential(norm_layer(in_chs), nn.Conv2d(in_chs, out_chs, stride, stride=stride))
        else:
            self.downsample = nn.Identity()
        rates = list(drop_path_rates or [0.0] * depth)
        self.blocks = nn.Sequential(
            *[
                MetaNeXtBlock(out_chs, token_mixer, mlp_ratio, ls_init_value, rates[i], norm_layer, act_layer)
                for i in range(depth)
            ]
        )

    def forward(self, x: Tensor) -> Tensor:
        if not self.training and x.dim() == 4 and use_fast_inference(x):
            s = self.stride
            if nchw_is_faster(x.shape[0] * (x.shape[-2] // s) * (x.shape[-1] // s), self.out_chs):
                # the model runs channels-last before this point. Whole model, ours/timm in one process, batch 1,
                # 2 threads: InceptionNeXt-T 0.91-0.99 (all channels-last) -> 1.03-1.04, atto 1.10-1.14 ->
                # 1.12-1.19; 1 thread T 1.56 -> 1.86; batch 16 unchanged (T 1.84).
                x = x.contiguous()
        x = self.downsample(x)
        if self.grad_checkpointing and self.training:
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)


class MlpClassifierHead(nn.Module):
    """Global pool -> fc1 (C -> rC) -> GELU -> LayerNorm -> Dropout -> fc2: (B, C, H, W) -> (B, classes).

    ``pre_logits=True`` returns the (B, rC) features before ``fc2``. Keys ``fc1``, ``norm``, ``fc2`` (timm).
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int = 1000,
        pool_type: str = "avg",
        mlp_ratio: float = 3.0,
        drop: float = 0.0,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        if pool_type == "avgmax" or not pool_type:
            raise ValueError(f"MlpClassifierHead: pool_type must be 'avg' or 'max', got {pool_type!r}")
        self.pool_type = _check_pool(pool_type)
        self.in_features = in_features
        self.num_features = hidden = int(mlp_ratio * in_features)
        self.fc1 = nn.Linear(in_features, hidden)
        self.act = nn.GELU()
        self.norm = LayerNorm(hidden, eps=norm_eps)
        self.drop = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden, num_classes) if num_classes > 0 else nn.Identity()

    def reset(self, num_classes: int, pool_type: str | None = None) -> None:
        """Replace ``fc2`` (and optionally the pooling); the hidden layer is kept."""
        if pool_type is not None:
            if pool_type == "avgmax":
                raise ValueError("MlpClassifierHead: pool_type 'avgmax' would change the pooled width")
            self.pool_type = _check_pool(pool_type)
        ref = self.fc1.weight
        self.fc2 = (
            nn.Linear(self.num_features, num_classes, device=ref.device, dtype=ref.dtype)
            if num_classes > 0
            else nn.Identity()
        )

    def forward(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.drop(self.norm(self.act(self.fc1(global_pool2d(x, self.pool_type)))))
        return x if pre_logits else self.fc2(x)


class InceptionNeXt(StagedBackbone):
    """InceptionNeXt / MetaNeXt classifier: (B, in_chans, H, W) -> (B, num_classes) (card: inceptionnext).

    Args:
        in_chans: input channels.
        num_classes: classifier outputs (0: no classifier, ``forward`` returns pooled pre-logits).
        global_pool: ``"avg"`` or ``"max"``.
        depths / dims: blocks and widths of the four stages.
        mlp_ratios: per-stage MLP ratio (last stage 3).
        square_kernel_size / band_kernel_size / branch_ratio: Inception DW conv settings.
        ls_init_value: layer-scale init (1e-6).
        drop_rate: head dropout; drop_path_rate: stochastic depth, linear over all blocks.
        head_mlp_ratio: hidden ratio of the MLP head (3).
    """

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        depths: Sequence[int] = (3, 3, 9, 3),
        dims: Sequence[int] = (96, 192, 384, 768),
        mlp_ratios: float | Sequence[float] = (4, 4, 4, 3),
        square_kernel_size: int = 3,
        band_kernel_size: int = 11,
        branch_ratio: float = 0.125,
        ls_init_value: float | None = 1e-6,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        head_mlp_ratio: float = 3.0,
    ) -> None:
        super().__init__()
        n = len(depths)
        if len(dims) != n:
            raise ValueError(f"InceptionNeXt: depths {tuple(depths)} and dims {tuple(dims)} differ in length")
        ratios = list(mlp_ratios) if isinstance(mlp_ratios, (list, tuple)) else [mlp_ratios] * n
        self.in_chans, self.num_classes = in_chans, num_classes
        self.grad_checkpointing = False
        mixer = partial(
            InceptionDWConv2d,
            square_kernel_size=square_kernel_size,
            band_kernel_size=band_kernel_size,
            branch_ratio=branch_ratio,
        )
        self.stem = nn.Sequential(nn.Conv2d(in_chans, dims[0], 4, stride=4), nn.BatchNorm2d(dims[0]))
        rates = drop_path_rates(depths, drop_path_rate)
        stages, self.feature_info, prev = [], [], dims[0]
        for i in range(n):
            stages.append(
                MetaNeXtStage(prev, dims[i], depths[i], 1 if i == 0 else 2, rates[i], ls_init_value, mixer, ratios[i])
            )
            prev = dims[i]
            self.feature_info.append({"num_chs": dims[i], "reduction": 4 * 2**i, "module": f"stages.{i}"})
        self.stages = nn.Sequential(*stages)
        self.num_features = dims[-1]
        self.head = MlpClassifierHead(dims[-1], num_classes, global_pool, head_mlp_ratio, drop_rate)
        self.head_hidden_size = self.head.num_features
        self.apply(_init_weights)

    def forward_stages(self, x: Tensor, max_index: int | None = None) -> list[Tensor]:
        """(B, C, H, W) -> per-stage maps. Inference on CPU runs in channels-last memory: oneDNN's depthwise
        band convolutions are 2x (batch 1) to 20x (batch 16) faster there than on NCHW, and the 1x1 convs
        take its fast path too; the maps keep their (B, C, H, W) shape and values."""
        if not self.training and use_fast_inference(x) and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return super().forward_stages(x, max_index)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """(B, C, h, w) -> logits (B, num_classes), or (B, head_hidden_size) pre-logits."""
        return self.head(x, pre_logits=pre_logits)

    def get_classifier(self) -> nn.Module:
        return self.head.fc2


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, (nn.Conv2d, nn.Linear)):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


# Variant table: architecture args, exact timm count, (paper GMACs at 224), ImageNet-1k top-1 (official README).
_VARIANTS = {
    "inception_next_atto": (
        dict(depths=(2, 2, 6, 2), dims=(40, 80, 160, 320), band_kernel_size=9, branch_ratio=0.25),
        4_156_520, 0.503, None,
    ),
    "inception_next_tiny": (dict(depths=(3, 3, 9, 3), dims=(96, 192, 384, 768)), 28_055_680, 4.2, 82.3),
    "inception_next_small": (dict(depths=(3, 3, 27, 3), dims=(96, 192, 384, 768)), 49_374_016, 8.4, 83.5),
    "inception_next_base": (dict(depths=(3, 3, 27, 3), dims=(128, 256, 512, 1024)), 86_672_136, 14.9, 84.0),
}
_SRC = "params: timm 1.0.31 exact count; MACs/top-1: official README (atto MACs: timm measurement)"


def _register(name: str, arch: dict, params: int, gmacs: float, top1: float | None, res: int = 224,
              reg_name: str | None = None) -> None:
    def builder(**kw) -> InceptionNeXt:
        return InceptionNeXt(**{**arch, **kw})

    reg_name = reg_name or name
    builder.__name__ = builder.__qualname__ = reg_name
    builder.__doc__ = f"{name} at {res}x{res} (card inceptionnext): (B, 3, H, W) -> (B, 1000)."
    register_model(
        builder, paper="inceptionnext", name=reg_name, input_size=(3, res, res), test_input_size=(3, 64, 64),
        reference=f"timm:{name}",
        reported=Reported(params=params, gmacs=gmacs, resolution=res, params_exact=True,
                          metrics={"imagenet_top1": top1} if top1 else {}, source=_SRC),
    )


for _name, (_arch, _params, _gmacs, _top1) in _VARIANTS.items():
    _register(_name, _arch, _params, _gmacs, _top1)
_register("inception_next_base", _VARIANTS["inception_next_base"][0], 86_672_136, 43.6, 85.2, res=384,
          reg_name="inception_next_base_384")


@register_model(
    paper="inceptionnext", test_only=True, input_size=(3, 64, 64), test_input_size=(3, 64, 64), num_classes=10
)
def test_inceptionnext(**kw) -> InceptionNeXt:
    """Tiny InceptionNeXt (depths 1,1,1,1, dims 16..128) for the generic tests."""
    return InceptionNeXt(**{"depths": (1, 1, 1, 1), "dims": (16, 32, 64, 128), "num_classes": 10, **kw})
