"""HorNet (card: hornet, arXiv 2207.14284, NeurIPS 2022; official code raoyongming/HorNet, MIT).

ConvNeXt macro-architecture whose spatial mixer is the recursive gated convolution
(:class:`~convatlas.layers.gnconv.GnConv`) with orders 2, 3, 4, 5 in stages 1-4 and s = 1/3; the "GF" variants
use the Global-Local Filter (:class:`~convatlas.layers.global_filter.GlobalLocalFilter`) instead of the 7x7
depthwise conv in stages 3-4. No library implementation exists in timm; this module follows the official
``hornet.py`` (read through the search tools) and :func:`convert_official_hornet` loads its checkpoints.

Block: ``x = x + DropPath(gamma1 * gnConv(LN(x)))``; ``x = x + DropPath(gamma2 * MLP(LN(x)))`` (MLP channels-last
Linear C->4C -> GELU -> Linear 4C->C; one DropPath module for both branches as in the official code).
Stem Conv 4x4/4 -> LN; downsampling LN -> Conv 2x2/2; head mean -> LN -> Linear. Tensors (B, C, H, W), H, W >= 32.

Inference (eval, no grad, plain CPU tensors): gates and residuals in place, the MLP half as one cache-blocked
channels-last kernel (:func:`convatlas.ops.residual_mlp.residual_norm_mlp`); same numbers up to rounding.

Card facts / measured (1000 classes, conv/linear MACs at 224, FFT not counted):
tiny_7x7 22,409,512 / 3.968 G; tiny_gf 22,991,848 / 3.889 G; small_7x7 49,528,264 / 8.814 G; small_gf
50,401,768 / 8.694 G; base_7x7 87,256,680 / 15.567 G; base_gf 88,421,352 / 15.408 G; large_7x7 194,542,504 /
34.796 G; large_gf 196,289,512 / 34.557 G; base_gf_img384 92,099,560; large_gf_img384 201,806,824.
T..B equal mmpretrain's exact counts of the converted official models (``configs/hornet/metafile.yml``:
22,409,512 / 22,991,848 / 49,528,264 / 50,401,768 / 87,256,680 / 88,421,352), registered with ``params_exact``.
mmpretrain's L / L-GF (194.54 / 196.29 M) agree with ours to 0.01 M; its L-GF384 (201.23 M) does not, because
mmpretrain's ``large-gf384`` arch uses GF spectra (24, 12) / (13, 7) where the official ``hornet_large_gf_img384``
uses (24, 13) / (12, 7): with mmpretrain's sizes our model has 201,226,408 params (test_hornet checks both).

The README's HorNet-L counts (209 / 211 / 216 M) are the IN-22k *pre-training* models with their classifier: the
L models are released only as 22k checkpoints, trained with ``--data_set image_folder`` (class count = number of
folders). Body + head: 193,005,504 + 1537 n (7x7), 194,752,512 + 1537 n (GF), 200,269,824 + 1537 n (GF384) round
to 209 / 211 / 216 M together only for 10,246 <= n <= 10,560 classes, e.g. the 10,450-class ImageNet-21K-P
(winter 2021) release: 209.07 / 210.81 / 216.33 M. Neither the 1000-class model (194.5 M) nor the full
21,841-class IN-22k head (226.6 / 228.3 / 233.8 M) nor IN-21K-P fall11 (11,221 classes: 210.25 M for 7x7)
reproduces all three. (The class count itself is not stated in the repo or the card: the repo's binary
``in1k_to_21k_map.pth``, which ``main.py`` uses to slice the 22k head for 1k fine-tuning, could not be read; this
is the only head size consistent with the README.) So the registered 1000-class entries carry: mmpretrain's 194.54 / 196.29 M for L and
L-GF, and for L-GF384 the README's 216 M with the 10,450-class head swapped for a 1000-class one (201.48 M).
Training recipes (official TRAINING.md, read): AdamW lr 4e-3 at batch 4096, EMA; drop path T 0.2, S 0.4, B 0.5
(grad clip 5 for 7x7 (T: 100), 1 for GF; S-GF / B-GF RandAugment m12 / m15); L IN-22k pre-training 90 epochs,
drop path 0.2, wd 0.1, 5 warm-up epochs; 22k -> 1k fine-tuning at 384 (L-7x7 at 384 uses ``hornet_large_7x7``
itself, L-GF uses ``hornet_large_gf_img384``): lr 5e-5, 30 epochs, drop path 0.4, layer decay 0.7, wd 1e-8.
The paper's "FLOPs" (fvcore MACs) for GF models add FFT cost with the repo's ``calc_flops.py`` rule
(N C ceil(log2 N) per rfft2/irfft2); our counter ignores FFTs, which changes T-GF by < 1 % (3.889 vs 3.9 G).
"""

from __future__ import annotations

import re
from functools import partial
from typing import Mapping, Sequence

import torch
from torch import Tensor, nn

from convatlas.layers import DropPath, LayerNorm, LayerNorm2d, drop_path_rates
from convatlas.layers.classifier import NormMlpClassifierHead
from convatlas.layers.global_filter import GlobalLocalFilter
from convatlas.layers.gnconv import GnConv
from convatlas.models.backbone import StagedBackbone, checkpoint_seq
from convatlas.ops.residual_mlp import residual_norm_mlp, use_fast_inference
from convatlas.registry import Reported, register_model

__all__ = ["HorNet", "HorNetBlock", "HorNetStage", "convert_official_hornet"]


class HorNetBlock(nn.Module):
    """HorNet block on (B, C, H, W) -> (B, C, H, W).

    Args:
        dim: C.
        order: gnConv order.
        gf_size: (h, w) of the Global-Local Filter spectrum, or None for the 7x7 depthwise conv.
        scale: gnConv s (1/3).
        drop_path: stochastic depth rate (one module for both residual branches).
        layer_scale_init_value: gamma init (1e-6; 0 disables).
    """

    def __init__(
        self,
        dim: int,
        order: int,
        gf_size: tuple[int, int] | None = None,
        scale: float = 1.0 / 3.0,
        drop_path: float = 0.0,
        layer_scale_init_value: float = 1e-6,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        spatial = partial(GlobalLocalFilter, h=gf_size[0], w=gf_size[1]) if gf_size else None
        self.norm1 = LayerNorm2d(dim, eps=1e-6)
        self.gnconv = GnConv(dim, order, spatial_layer=spatial, scale=scale)
        self.norm2 = LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, int(mlp_ratio * dim))
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(int(mlp_ratio * dim), dim)
        ls = layer_scale_init_value
        self.gamma1 = nn.Parameter(torch.full((dim,), float(ls))) if ls > 0 else None
        self.gamma2 = nn.Parameter(torch.full((dim,), float(ls))) if ls > 0 else None
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        if not self.training and use_fast_inference(x):
            return self._forward_inference(x)
        y = self.gnconv(self.norm1(x))
        if self.gamma1 is not None:
            y = y * self.gamma1.view(-1, 1, 1)
        x = x + self.drop_path(y)
        y = self.pwconv2(self.act(self.pwconv1(self.norm2(x.permute(0, 2, 3, 1)))))
        if self.gamma2 is not None:
            y = y * self.gamma2
        return x + self.drop_path(y.permute(0, 3, 1, 2))

    def _forward_inference(self, x: Tensor) -> Tensor:
        """Same numbers, fewer large allocations: in-place residual, cache-blocked channels-last MLP."""
        y = self.gnconv(self.norm1(x))
        y = y.mul_(self.gamma1.view(-1, 1, 1)).add_(x) if self.gamma1 is not None else y.add_(x)
        t = y.permute(0, 2, 3, 1).contiguous()
        n = self.norm2
        out = residual_norm_mlp(t, t, n.weight, n.bias, n.eps, self.pwconv1.weight, self.pwconv1.bias,
                                self.pwconv2.weight, self.pwconv2.bias, self.gamma2)
        return out.permute(0, 3, 1, 2)


class HorNetStage(nn.Module):
    """[Downsampling LN -> Conv 2x2/2] + blocks: (B, C_in, H, W) -> (B, C, H/s, W/s)."""

    def __init__(self, in_chs: int, out_chs: int, depth: int, order: int, gf_size: tuple[int, int] | None,
                 scale: float, dp_rates: Sequence[float], layer_scale_init_value: float, downsample: bool) -> None:
        super().__init__()
        self.grad_checkpointing = False
        if downsample:
            self.downsample = nn.Sequential(LayerNorm2d(in_chs, eps=1e-6), nn.Conv2d(in_chs, out_chs, 2, stride=2))
        else:
            self.downsample = nn.Identity()
        self.blocks = nn.Sequential(
            *[HorNetBlock(out_chs, order, gf_size, scale, dp_rates[i], layer_scale_init_value) for i in range(depth)]
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.downsample(x)
        return checkpoint_seq(self.blocks, x) if self.grad_checkpointing and self.training else self.blocks(x)


class HorNet(StagedBackbone):
    """HorNet classifier: (B, in_chans, H, W) -> (B, num_classes) (card: hornet).

    Args:
        in_chans / num_classes: input channels / classifier outputs (0: pooled features).
        global_pool: ``"avg"``, ``"max"`` or ``"avgmax"``.
        depths: blocks per stage (2, 3, 18, 2).
        base_dim: b; stage widths (b, 2b, 4b, 8b) unless ``dims`` is given.
        orders: gnConv order per stage (2, 3, 4, 5); width of stage i must be divisible by 2^(order-1).
        gf_sizes: per stage, None (7x7 DW conv) or the GF spectrum size (h, w), e.g. (None, None, (14, 8), (7, 4)).
        scale: gnConv s (1/3).
        layer_scale_init_value: 1e-6; head_init_scale: multiplies the classifier init (1.0).
        uniform_init: Xavier-uniform instead of trunc-normal(0.02) init (official option).
        drop_rate: dropout before the classifier; drop_path_rate: linear over all blocks.
    """

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        depths: Sequence[int] = (2, 3, 18, 2),
        base_dim: int = 64,
        dims: Sequence[int] | None = None,
        orders: Sequence[int] = (2, 3, 4, 5),
        gf_sizes: Sequence[tuple[int, int] | None] = (None, None, None, None),
        scale: float = 1.0 / 3.0,
        layer_scale_init_value: float = 1e-6,
        head_init_scale: float = 1.0,
        uniform_init: bool = False,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        n = len(depths)
        dims = list(dims) if dims is not None else [base_dim * 2**i for i in range(n)]
        if not len(dims) == len(orders) == len(gf_sizes) == n:
            raise ValueError("HorNet: depths, dims, orders and gf_sizes must have one entry per stage")
        self.in_chans, self.num_classes = in_chans, num_classes
        self.grad_checkpointing = False
        self.stem = nn.Sequential(nn.Conv2d(in_chans, dims[0], 4, stride=4), LayerNorm2d(dims[0], eps=1e-6))
        rates = drop_path_rates(depths, drop_path_rate)
        stages, self.feature_info, prev = [], [], dims[0]
        for i in range(n):
            gf = tuple(gf_sizes[i]) if gf_sizes[i] else None
            stages.append(HorNetStage(prev, dims[i], depths[i], orders[i], gf, scale, rates[i],
                                      layer_scale_init_value, downsample=i > 0))
            prev = dims[i]
            self.feature_info.append({"num_chs": dims[i], "reduction": 4 * 2**i, "module": f"stages.{i}"})
        self.stages = nn.Sequential(*stages)
        self.num_features = self.head_hidden_size = dims[-1]
        self.head = NormMlpClassifierHead(dims[-1], num_classes, pool_type=global_pool, drop_rate=drop_rate)
        self.uniform_init = uniform_init
        self.apply(self._init_weights)
        if isinstance(self.head.fc, nn.Linear):
            with torch.no_grad():
                self.head.fc.weight.mul_(head_init_scale)
                self.head.fc.bias.mul_(head_init_scale)

    def _init_weights(self, m: nn.Module) -> None:
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            if self.uniform_init:
                nn.init.xavier_uniform_(m.weight)
            else:
                nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def convert_official_hornet(state_dict: Mapping[str, Tensor], model: nn.Module | None = None) -> dict[str, Tensor]:
    """Map an official ``raoyongming/HorNet`` checkpoint (``model`` entry) to this layout.

    ``downsample_layers.0.*`` -> ``stem.*``; ``downsample_layers.i.*`` -> ``stages.i.downsample.*``;
    ``stages.i.j.*`` -> ``stages.i.blocks.j.*``; ``norm.*`` -> ``head.norm.*``; ``head.*`` -> ``head.fc.*``.
    Block-internal names (norm1, gnconv.*, norm2, pwconv1/2, gamma1/2) are identical. Already-converted dicts pass.
    """
    if "stem.0.weight" in state_dict:
        return dict(state_dict)
    out = {}
    for k, v in state_dict.items():
        k = re.sub(r"^downsample_layers\.0\.", "stem.", k)
        k = re.sub(r"^downsample_layers\.(\d+)\.", r"stages.\1.downsample.", k)
        k = re.sub(r"^stages\.(\d+)\.(\d+)\.", r"stages.\1.blocks.\2.", k)
        k = re.sub(r"^norm\.", "head.norm.", k)
        k = re.sub(r"^head\.(weight|bias)$", r"head.fc.\1", k)
        out[k] = v
    return out


#: key converter looked up by :func:`convatlas.engine.checkpoint.load_weights` (``create_model(pretrained=path)``).
checkpoint_filter_fn = convert_official_hornet


# ---- variants: name -> (base dim, GF sizes for stages 3-4 or None, input res, params, exact?, GMACs, top-1) -------
_GF224 = ((14, 8), (7, 4))
_GF384 = ((24, 13), (12, 7))
#: README IN-22k counts (209/211/216 M) minus a 10,450-class head plus a 1000-class head (see the module docstring).
IN22K_HEAD_CLASSES = 10_450
_SRC_EXACT = ("params: mmpretrain metafile.yml exact count of the converted official model; MACs (fvcore) and "
              "top-1: official README (mmpretrain re-evaluation agrees with the lower README column)")
_SRC_L = "params: mmpretrain README (0.01 M) for the converted official model; MACs: official README (fvcore)"
_SRC_L384 = ("params: official README 216 M (IN-22k head, 10,450 classes) re-headed to 1000 classes = 201.48 M "
             "(mmpretrain's 201.23 M uses transposed GF sizes); MACs: official README (fvcore)")
_VARIANTS = {
    "hornet_tiny_7x7": (64, None, 224, 22_409_512, True, 4.0, 82.8, _SRC_EXACT),
    "hornet_tiny_gf": (64, _GF224, 224, 22_991_848, True, 3.9, 83.0, _SRC_EXACT),
    "hornet_small_7x7": (96, None, 224, 49_528_264, True, 8.8, 83.8, _SRC_EXACT),
    "hornet_small_gf": (96, _GF224, 224, 50_401_768, True, 8.7, 84.0, _SRC_EXACT),
    "hornet_base_7x7": (128, None, 224, 87_256_680, True, 15.6, 84.2, _SRC_EXACT),
    "hornet_base_gf": (128, _GF224, 224, 88_421_352, True, 15.5, 84.3, _SRC_EXACT),
    "hornet_base_gf_img384": (128, _GF384, 384, None, False, None, None, ""),
    "hornet_large_7x7": (192, None, 224, 194_540_000, False, 34.8, None, _SRC_L),
    "hornet_large_gf": (192, _GF224, 224, 196_290_000, False, 34.7, None, _SRC_L),
    "hornet_large_gf_img384": (192, _GF384, 384, 216_000_000 - (IN22K_HEAD_CLASSES - 1000) * 1537, False, 101.8,
                               None, _SRC_L384),
}


def _register(name: str, base: int, gf, res: int, params, exact: bool, gmacs, top1, src: str) -> None:
    arch = dict(depths=(2, 3, 18, 2), base_dim=base, orders=(2, 3, 4, 5),
                gf_sizes=(None, None) + (gf if gf else (None, None)))

    def builder(**kw) -> HorNet:
        return HorNet(**{**arch, **kw})

    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = f"{name} (card hornet): (B, 3, {res}, {res}) -> (B, 1000)."
    reported = None
    if params is not None:
        reported = Reported(params=params, gmacs=gmacs, resolution=res, params_exact=exact,
                            metrics={"imagenet_top1": top1} if top1 else {}, source=src)
    register_model(builder, paper="hornet", name=name, input_size=(3, res, res), test_input_size=(3, 64, 64),
                   reported=reported, tags=("in22k",) if "large" in name else ())


for _name, _v in _VARIANTS.items():
    _register(_name, *_v)


@register_model(
    paper="hornet", test_only=True, input_size=(3, 64, 64), test_input_size=(3, 64, 64), num_classes=10
)
def test_hornet(**kw) -> HorNet:
    """Tiny HorNet (dims 16..128, depths 1,1,1,1, orders 2-5, GF in stages 3-4 at 64x64) for the generic tests."""
    return HorNet(**{"depths": (1, 1, 1, 1), "base_dim": 16, "gf_sizes": (None, None, (4, 3), (2, 2)),
                     "num_classes": 10, **kw})
