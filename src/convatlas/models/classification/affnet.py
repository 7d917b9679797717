"""AFFNet: MobileViT-style backbone with adaptive frequency filter blocks (card: aff, arXiv 2307.14008,
official code microsoft/TokenMixers "Adaptive Frequency Filters", MIT).

conv 3x3 s2 -> layer1 (MV2) -> layer2 (MV2, first stride 2) -> layers 3-5 = [MV2 stride 2, AFFBlock] ->
1x1 expansion conv (min(4*C5, 960)) -> global pool -> dropout -> Linear. An AFFBlock is n AFF units
``y = x + DropPath(AFFilter(norm2(MV2(norm1(x)))))`` followed by a norm, a 1x1 projection (BN, no act) and a
1x1 fusion conv over concat(input, output) (BN + act) unless ``no_fuse``. Norms are cvnets ``layer_norm_2d``
(= GroupNorm with one group, eps 1e-5).

Card facts / decisions:
- Modes xx_small / x_small / small = AFFNet-ET / AFFNet-T / AFFNet (README 1.4M / 2.6M / 5.5M params,
  0.4 / 0.8 / 1.5 GFLOPs at 256); base and large are in the official config but not in the README. Params here
  are exactly the card's reconstruction (1,436,264 / 2,654,232 / 5,568,696).
- Activation: swish (SiLU) for the network and the filter (the filter takes ``model.activation.name`` from the
  same options; MobileViT-style configs use swish; the released YAML was not read, unconfirmed).
- MACs: the MAC counter sees convs, linears and the filter's einsums, not the FFTs. Measured at 256:
  xx_small 0.356 G, x_small 0.787 G, small 1.454 G vs README 0.4 / 0.8 / 1.5 G "FLOPs", given to one decimal;
  the tolerance of each registered figure is that rounding (+-0.05 G). The official profiler's FFT term
  (5*N*int(ln N)*C per filter) adds only ~7 M for xx_small.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from convatlas.layers import DropPath
from convatlas.layers.aff_filter import AFFilter
from convatlas.models.backbone import LinearHeadBackbone
from convatlas.registry import Reported, register_model

__all__ = ["AFFNet", "AFFBlock", "AFFUnit", "InvertedResidual"]


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    min_value = divisor if min_value is None else min_value
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def conv_bn(cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1,
            act: Callable[[], nn.Module] | None = None) -> nn.Sequential:
    """cvnets ConvLayer: conv (no bias) -> BN -> optional activation."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
                               nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """MobileNetV2 block (cvnets): [1x1 exp + BN + act] -> DW 3x3 + BN + act -> 1x1 + BN (+ skip)."""

    def __init__(self, cin: int, cout: int, stride: int, expand_ratio: float, act: Callable[[], nn.Module]) -> None:
        super().__init__()
        hidden = make_divisible(int(round(cin * expand_ratio)), 8)
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(conv_bn(cin, hidden, 1, act=act))
        layers += [conv_bn(hidden, hidden, 3, stride, groups=hidden, act=act), conv_bn(hidden, cout, 1)]
        self.block = nn.Sequential(*layers)
        self.use_res = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x) if self.use_res else self.block(x)


def _norm(c: int) -> nn.Module:
    return nn.GroupNorm(1, c, eps=1e-5)  # cvnets "layer_norm_2d"


class AFFUnit(nn.Module):
    """``x + DropPath(AFFilter(norm2(MV2(norm1(x)))))``: (B, C, H, W) -> (B, C, H, W) (official ``Block``)."""

    def __init__(self, dim: int, ffn_dim: int, act: Callable[[], nn.Module], drop_path: float = 0.0,
                 num_blocks: int = 8) -> None:
        super().__init__()
        self.norm1 = _norm(dim)
        self.mlp = InvertedResidual(dim, dim, 1, ffn_dim / dim, act)
        self.norm2 = _norm(dim)
        self.filter = AFFilter(dim, num_blocks, act_layer=act)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return x + self.drop_path(self.filter(self.norm2(self.mlp(self.norm1(x)))))


class AFFBlock(nn.Module):
    """n AFF units -> norm -> 1x1 proj (BN) -> [1x1 fusion of concat(input, output) (BN + act)]."""

    def __init__(self, dim: int, ffn_dim: int, depth: int, act: Callable[[], nn.Module], no_fuse: bool = False,
                 drop_path: Sequence[float] | float = 0.0) -> None:
        super().__init__()
        dps = [drop_path] * depth if isinstance(drop_path, float) else list(drop_path)
        self.global_rep = nn.Sequential(*[AFFUnit(dim, ffn_dim, act, dps[i]) for i in range(depth)], _norm(dim))
        self.conv_proj = conv_bn(dim, dim, 1)
        self.fusion = None if no_fuse else conv_bn(2 * dim, dim, 1, act=act)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv_proj(self.global_rep(x))
        return y if self.fusion is None else self.fusion(torch.cat((x, y), dim=1))


class AFFNet(LinearHeadBackbone):
    """AFFNet backbone: (B, 3, H, W) -> (B, num_classes); H, W divisible by 32.

    Args:
        layer1, layer2: (channels, depth) of the MV2 stages.
        layers: three (channels, ffn_dim, depth, no_fuse) rows for layers 3-5.
        mv2_exp: MV2 expansion ratio.
        stem: stem width (16).
        exp_max: cap of the final 1x1 expansion (960).
        drop_rate: dropout before the classifier; drop_path_rate: max stochastic depth (linear over units).
        act_layer: activation (SiLU).
    """

    input_multiple = 32
    pre_head_modules = ("conv_1x1_exp",)  # the final 1x1 expansion belongs to the head

    def __init__(
        self,
        layer1: tuple[int, int] = (32, 1),
        layer2: tuple[int, int] = (64, 3),
        layers: Sequence[tuple[int, int, int, bool]] = ((128, 256, 2, False), (256, 512, 4, False), (320, 640, 3, False)),
        mv2_exp: float = 4,
        stem: int = 16,
        exp_max: int = 960,
        in_chans: int = 3,
        num_classes: int = 1000,
        drop_rate: float = 0.1,
        drop_path_rate: float = 0.0,
        act_layer: Callable[[], nn.Module] = nn.SiLU,
    ) -> None:
        super().__init__()
        self.in_chans = in_chans
        act = act_layer
        self.stem = conv_bn(in_chans, stem, 3, 2, act=act)
        cin = stem
        stages: list[nn.Module] = []
        for i, (c, n) in enumerate((layer1, layer2)):
            blocks = []
            for j in range(n):
                blocks.append(InvertedResidual(cin, c, 2 if (i == 1 and j == 0) else 1, mv2_exp, act))
                cin = c
            stages.append(nn.Sequential(*blocks))
        total = sum(r[2] for r in layers)
        dpr = torch.linspace(0, drop_path_rate, total, device="cpu").tolist() if total else []
        k = 0
        for c, ffn, n, no_fuse in layers:
            stages.append(nn.Sequential(InvertedResidual(cin, c, 2, mv2_exp, act),
                                        AFFBlock(c, ffn, n, act, no_fuse, dpr[k:k + n])))
            k += n
            cin = c
        self.stages = nn.Sequential(*stages)
        self.feature_info = [{"num_chs": ch, "reduction": 2 ** (i + 1), "module": f"stages.{i}"}
                             for i, ch in enumerate([layer1[0], layer2[0]] + [r[0] for r in layers])]
        exp = min(4 * cin, exp_max)
        self.conv_1x1_exp = conv_bn(cin, exp, 1, act=act)
        self.num_features, self.head_hidden_size = cin, exp  # stage output; width after conv_1x1_exp
        self.head_drop = nn.Dropout(drop_rate)
        self.reset_classifier(num_classes)
        self._init()

    def _init(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.conv_1x1_exp(x).mean((2, 3))
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)


_CFGS: dict[str, dict[str, Any]] = {
    "xx_small": dict(layer1=(32, 1), layer2=(48, 3), mv2_exp=2,
                     layers=((64, 128, 2, False), (104, 208, 4, False), (144, 288, 3, False))),
    "x_small": dict(layer1=(32, 1), layer2=(48, 3), mv2_exp=4,
                    layers=((96, 192, 2, False), (160, 320, 4, False), (192, 384, 3, False))),
    "small": dict(layer1=(32, 1), layer2=(64, 3), mv2_exp=4,
                  layers=((128, 256, 2, False), (256, 512, 4, False), (320, 640, 3, False))),
    "base": dict(layer1=(64, 1), layer2=(128, 3), mv2_exp=4,
                 layers=((256, 512, 2, False), (512, 1024, 4, True), (640, 1280, 3, True))),
    "large": dict(layer1=(64, 2), layer2=(128, 6), mv2_exp=4,
                  layers=((256, 512, 4, False), (512, 1024, 18, True), (768, 1536, 6, True))),
}
_ENTRY = dict(paper="aff", input_size=(3, 256, 256), test_input_size=(3, 64, 64))
_README = "official README (ImageNet-1K, 256x256); params exact vs the card's reconstruction of the official layers"


def _rep(params: int, gmacs: float, top1: float | None = None, exact: bool = True) -> Reported:
    # README GFLOPs have one decimal: tolerance = half a unit of the last digit.
    return Reported(params=params, gmacs=gmacs, resolution=256, params_exact=exact, macs_tol=0.05 / gmacs + 1e-9,
                    metrics={} if top1 is None else {"imagenet_top1": top1}, source=_README)


@register_model(reported=_rep(1_436_264, 0.4, 73.0), **_ENTRY)
def affnet_et(**kw: Any) -> AFFNet:
    """AFFNet-ET (mode xx_small), 1.4M params (card: aff)."""
    return AFFNet(**{**_CFGS["xx_small"], **kw})


@register_model(reported=_rep(2_654_232, 0.8, 77.0), **_ENTRY)
def affnet_t(**kw: Any) -> AFFNet:
    """AFFNet-T (mode x_small), 2.6M params (card: aff)."""
    return AFFNet(**{**_CFGS["x_small"], **kw})


@register_model(reported=_rep(5_568_696, 1.5, 79.8), **_ENTRY)
def affnet(**kw: Any) -> AFFNet:
    """AFFNet (mode small), 5.5M params (card: aff)."""
    return AFFNet(**{**_CFGS["small"], **kw})


@register_model(paper="aff", input_size=(3, 256, 256), test_input_size=(3, 64, 64),
                reported=Reported(resolution=256, source="official config 'base' (not in the README; no figures)"))
def affnet_base(**kw: Any) -> AFFNet:
    """AFFNet mode 'base' from the official config (no reported figures)."""
    return AFFNet(**{**_CFGS["base"], **kw})


@register_model(paper="aff", input_size=(3, 256, 256), test_input_size=(3, 64, 64),
                reported=Reported(resolution=256, source="official config 'large' (not in the README; no figures)"))
def affnet_large(**kw: Any) -> AFFNet:
    """AFFNet mode 'large' from the official config (no reported figures)."""
    return AFFNet(**{**_CFGS["large"], **kw})


@register_model(paper="aff", test_only=True, input_size=(3, 64, 64), test_input_size=(3, 64, 64), num_classes=10)
def test_aff(**kw: Any) -> AFFNet:
    """Tiny AFFNet (widths 16..48, one AFF unit per block) for the generic tests."""
    args = dict(layer1=(16, 1), layer2=(16, 1), mv2_exp=2, stem=8, num_classes=10,
                layers=((32, 64, 1, False), (40, 80, 1, False), (48, 96, 1, False)))
    args.update(kw)
    return AFFNet(**args)
