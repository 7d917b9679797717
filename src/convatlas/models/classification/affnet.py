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
- base / large (official config, no README or paper figures): 17,178,104 / 46,068,088 parameters, 5.34 / 13.24
  GMACs at 256 (registered as exact counts of the official modules; MACs unregistered, no reference exists).
- Official checkpoints: :func:`convert_official_affnet` maps the cvnets key layout (``conv_1``, ``layer_{i}``,
  ``block.{conv,norm}``, MV2 ``block.{exp_1x1,conv_3x3,red_1x1}``, ``classifier.fc``) to ours; segmentation:
  :mod:`convatlas.models.segmentation.affnet_deeplab` (DeepLabv3; ``output_stride`` 8/16 dilates layers 4-5 as
  the official encoder); SSDLite detection (cvnets ``ssd.py``, MobileViT SSDLite-320 settings):
  :mod:`convatlas.models.detection.ssdlite` (``affnet_et_ssdlite`` / ``affnet_t_ssdlite`` / ``affnet_ssdlite``, task
  ``detection``; the README reports no detection figures).
- Filter variants: the official ``Block`` can switch to ``AFNO2D_channelfirst_coreml`` for CoreML export, but that
  class is not defined anywhere in the official repository (the switch would fail); ``hard_thresholding_fraction``
  is stored but unused by the official forward. AFFilter exports to ONNX as is (rfft2 / irfft2), so no separate
  export variant is built.

Inference speed (CPU, grad off; training forward unchanged): the maps run channels-last (oneDNN's depthwise 3x3 of
the MV2 blocks is several times faster than on NCHW), eval BN is folded into the conv weights and activations and
residual adds run in place (:class:`~convatlas.layers.conv_bn_act.ConvBNAct`), and the filter uses its
complex-matmul inference path (:mod:`convatlas.layers.aff_filter`). Cause, from the torch profiler (1 thread,
AFFNet batch 16 at 256): convs 63% (the NCHW depthwise ones the largest), BN 16%, SiLU 16% of self time, the
filter's FFTs and matmuls ~3%; each BN / SiLU output at 128x128 and 64x64 is a fresh 64-128 MB tensor, mmapped and
page-faulted on every call. Old vs new code in one process, interleaved, median thread CPU time, 1 thread:
AFFNet b16 2198 -> 706 ms (3.1x), b1 76.0 -> 43.6 ms (1.7x); AFFNet-ET b16 758 -> 230 ms (3.3x), b1 25.4 ->
15.9 ms (1.6x); max logit change 8e-7. Stage maps from ``forward_stages`` in inference are channels-last tensors.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from convatlas.layers import DropPath
from convatlas.layers.aff_filter import AFFilter
from convatlas.layers.conv_bn_act import ConvBNAct
from convatlas.models.backbone import LinearHeadBackbone
from convatlas.ops.residual_mlp import use_fast_inference
from convatlas.registry import Reported, register_model

__all__ = ["AFFNet", "AFFBlock", "AFFUnit", "InvertedResidual", "convert_official_affnet", "checkpoint_filter_fn"]


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    min_value = divisor if min_value is None else min_value
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def conv_bn(cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1,
            act: Callable[[], nn.Module] | None = None, dilation: int = 1) -> ConvBNAct:
    """cvnets ConvLayer: conv (no bias, padding dilation * (k - 1) / 2) -> BN -> optional activation (keys ``0``,
    ``1`` of a Sequential; eval BN folded into the conv in inference, see :class:`ConvBNAct`)."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, dilation * (k - 1) // 2, dilation=dilation,
                                         groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act())
    return ConvBNAct(*layers)


class InvertedResidual(nn.Module):
    """MobileNetV2 block (cvnets): [1x1 exp + BN + act] -> DW 3x3 (dilation) + BN + act -> 1x1 + BN (+ skip)."""

    def __init__(self, cin: int, cout: int, stride: int, expand_ratio: float, act: Callable[[], nn.Module],
                 dilation: int = 1) -> None:
        super().__init__()
        hidden = make_divisible(int(round(cin * expand_ratio)), 8)
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(conv_bn(cin, hidden, 1, act=act))
        layers += [conv_bn(hidden, hidden, 3, stride, groups=hidden, act=act, dilation=dilation),
                   conv_bn(hidden, cout, 1)]
        self.block = nn.Sequential(*layers)
        self.use_res = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        if not self.use_res:
            return self.block(x)
        if use_fast_inference(x):
            return self.block(x).add_(x)  # the block output is a fresh tensor: add in place (no new allocation)
        return x + self.block(x)


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
        if use_fast_inference(x) and not self.training:  # the filter output is fresh: add the skip in place
            return self.filter(self.norm2(self.mlp(self.norm1(x)))).add_(x)
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
        output_stride: 32 (classification), 16 (layer 5 dilated) or 8 (layers 4 and 5 dilated), as the official
            encoder for segmentation (``dilate_l4`` / ``dilate_l5``): the leading MV2 of a dilated layer keeps
            stride 1 and uses the previous dilation, later layers inherit the doubled dilation (the frequency
            filter is global, so only MV2 depthwise convs see it).
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
        output_stride: int = 32,
    ) -> None:
        super().__init__()
        if output_stride not in (8, 16, 32):
            raise ValueError(f"AFFNet: output_stride must be 8, 16 or 32, got {output_stride}")
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
        k, dilation, reduction = 0, 1, 4
        reductions = [2, 4]
        for i, (c, ffn, n, no_fuse) in enumerate(layers):
            prev, stride = dilation, 2
            if reduction * 2 > output_stride and i >= 1:  # official dilate_l4 / dilate_l5
                dilation, stride = dilation * 2, 1
            reduction *= stride
            reductions.append(reduction)
            stages.append(nn.Sequential(InvertedResidual(cin, c, stride, mv2_exp, act, dilation=prev),
                                        AFFBlock(c, ffn, n, act, no_fuse, dpr[k:k + n])))
            k += n
            cin = c
        self.stages = nn.Sequential(*stages)
        self.input_multiple = output_stride
        self.feature_info = [{"num_chs": ch, "reduction": r, "module": f"stages.{i}"}
                             for i, (ch, r) in enumerate(zip([layer1[0], layer2[0]] + [r[0] for r in layers],
                                                             reductions))]
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

    def forward_stages(self, x: Tensor, max_index: int | None = None) -> list[Tensor]:
        """(B, C, H, W) -> per-stage maps. Inference on CPU runs channels-last (module docstring, "Inference
        speed"); the maps keep their (B, C, H, W) shape and values."""
        if not self.training and use_fast_inference(x) and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return super().forward_stages(x, max_index)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.conv_1x1_exp(x).mean((2, 3))
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)


_MV2_PARTS = ("exp_1x1", "conv_3x3", "red_1x1")


def convert_official_affnet(state_dict: Mapping[str, Tensor], prefix: str = "") -> dict[str, Tensor]:
    """Official (cvnets / microsoft TokenMixers) AFFNet keys -> ours; ``prefix`` is stripped first.

    ``conv_1`` -> ``stem``; ``layer_{i}`` -> ``stages.{i-1}``; cvnets ``ConvLayer`` ``block.conv`` / ``block.norm``
    -> ``0`` / ``1``; MV2 ``block.{exp_1x1,conv_3x3,red_1x1}`` -> ``block.{0,1,2}`` (``{0,1}`` without expansion);
    ``classifier.fc`` -> ``head``; AFF units keep their names (``global_rep.{i}.{norm1,mlp,norm2,filter}``,
    ``conv_proj``, ``fusion``). Accepts a checkpoint dict with a ``state_dict`` / ``model`` entry.
    """
    for wrap in ("state_dict", "model"):
        if isinstance(state_dict.get(wrap), Mapping):
            state_dict = state_dict[wrap]
    sd = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    no_exp = {k.split("block.conv_3x3.")[0] for k in sd if "block.conv_3x3." in k} - {
        k.split("block.exp_1x1.")[0] for k in sd if "block.exp_1x1." in k}
    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        k = re.sub(r"^conv_1\.", "stem.", key)
        k = re.sub(r"^layer_(\d)\.", lambda m: f"stages.{int(m.group(1)) - 1}.", k)
        k = re.sub(r"^classifier\.fc\.", "head.", k)
        for j, part in enumerate(_MV2_PARTS):
            tag = f"block.{part}."
            if tag in k:
                owner = key.split(tag)[0]
                k = k.replace(tag, f"block.{j - 1 if owner in no_exp else j}.")
        k = re.sub(r"(^|\.)block\.conv\.", r"\g<1>0.", k)
        k = re.sub(r"(^|\.)block\.norm\.", r"\g<1>1.", k)
        out[k] = value
    return out


def checkpoint_filter_fn(state_dict: Mapping[str, Tensor], model: nn.Module | None = None) -> dict[str, Tensor]:
    """Hook for ``load_weights`` / ``create_model(pretrained=path)``: official cvnets checkpoints load directly."""
    return convert_official_affnet(state_dict)


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


_NO_FIG = ("official config mode '{}': no README/paper figure; exact count of the official modules (cvnets layers "
           "from config/affnet.py), derived independently from the official key shapes in the tests")


@register_model(paper="aff", input_size=(3, 256, 256), test_input_size=(3, 64, 64),
                reported=Reported(params=17_178_104, resolution=256, params_exact=True, source=_NO_FIG.format("base")))
def affnet_base(**kw: Any) -> AFFNet:
    """AFFNet mode 'base' from the official config (no reported figures)."""
    return AFFNet(**{**_CFGS["base"], **kw})


@register_model(paper="aff", input_size=(3, 256, 256), test_input_size=(3, 64, 64),
                reported=Reported(params=46_068_088, resolution=256, params_exact=True, source=_NO_FIG.format("large")))
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
