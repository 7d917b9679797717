"""DeepLabV3+ / MobileNetV2 with TVConv ASPP for optic disc/cup segmentation (card: tvconv, arXiv 2203.10489,
official code JierunChen/TVConv ``od_oc_segmentation/networks/{baseline,baseline_deeplab,baseline_mobilenetv2,
TVConv}.py`` and ``odoc_train_test.py``).

- Backbone: torchvision-style MobileNetV2 (ImageNet-pretrained in the paper) at output stride 16: the stride-2 stem
  conv has *no* padding (a 256 input gives 127x127), inverted residuals pad their input explicitly
  (``fixed_padding``) and turn the stride of the layer that would pass OS16 into dilation (the first block of such
  a layer keeps the previous dilation). ``low_level_features`` = features[0:4] (24 ch, 1/4), ``high_level_features``
  = features[4:-1] (320 ch, 1/16, the final 1x1 conv is dropped).
- Head ``DeepLabHeadV3Plus``: 1x1 projection of the low-level map to 48 ch; ASPP (256 ch, rates (6, 12, 18), ReLU,
  dropout 0.1) on the high-level map, whose three atrous branches depend on ``atom``: ``"base"`` dilated 3x3 conv,
  ``"tvconv"`` a TVConv inverted residual (expansion 6, h = w = 16, i.e. 256x256 inputs; dilation unused) or
  ``"dw"`` the same inverted residual with a plain depthwise conv; bilinear upsampling of the ASPP output to 1/4,
  concat (304 ch) -> 3x3 conv 256 + BN + ReLU -> 1x1 conv to the classes (bias); bilinear to the input size.
- Two output channels (optic cup, optic disc). TVConv generator: 64 channels, 3 intermediate layers (the
  segmentation TVConv defaults). The training loss lives in ``train_process/Trainer.py`` (not read).

Figures: ``odoc_train_test.py`` prints ``sum(p.numel() for p in model.parameters())`` of exactly this model; the
registered counts are that number (training form), derived independently from the official layer shapes in the
tests. The three TVConv branches (1920 channels at 16x16) carry most of it (generator conv 64 -> 9 * 1920); after
:meth:`TVConvDeepLabV3Plus.reparameterize` they are buffers. Paper figures (Dice per domain) were not read.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from convatlas.layers import check_input
from convatlas.layers.aspp import ASPP
from convatlas.layers.tvconv import adapt_official_tvconv_keys, reparameterize_tvconvs
from convatlas.models.classification.tvconv_nets import OFFICIAL_TVCONV_KWARGS, TVConvInvertedResidual
from convatlas.registry import Reported, register_model

__all__ = ["TVConvDeepLabV3Plus", "SegMobileNetV2", "convert_torchvision_mobilenetv2_backbone", "load_official_odoc",
           "checkpoint_filter_fn"]

_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def _conv_bn_relu6(cin: int, cout: int, k: int = 3, stride: int = 1, dilation: int = 1,
                   groups: int = 1) -> nn.Sequential:
    # padding 0: the official segmentation backbone pads explicitly (stem: not at all)
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, 0, dilation=dilation, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))


class _PaddedInvertedResidual(nn.Module):
    """torchvision MobileNetV2 block with explicit ``fixed_padding`` for a dilated 3x3 depthwise conv."""

    def __init__(self, inp: int, oup: int, stride: int, dilation: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = int(round(inp * expand_ratio))
        self.use_res = stride == 1 and inp == oup
        layers: list[nn.Module] = [_conv_bn_relu6(inp, hidden, 1)] if expand_ratio != 1 else []
        layers += [_conv_bn_relu6(hidden, hidden, 3, stride, dilation, groups=hidden),
                   nn.Conv2d(hidden, oup, 1, bias=False), nn.BatchNorm2d(oup)]
        self.conv = nn.Sequential(*layers)
        eff = 3 + 2 * (dilation - 1)
        self.pad = ((eff - 1) // 2, eff - 1 - (eff - 1) // 2) * 2

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(F.pad(x, self.pad))
        return x + y if self.use_res else y


class SegMobileNetV2(nn.Module):
    """Dilated MobileNetV2 feature extractor: (B, 3, H, W) -> {"low_level": (B, 24, .), "out": (B, 320, .)}."""

    def __init__(self, output_stride: int = 16, in_chans: int = 3) -> None:
        super().__init__()
        feats: list[nn.Module] = [_conv_bn_relu6(in_chans, 32, 3, 2)]
        cur, dilation, cin = 2, 1, 32
        for t, c, n, s in _SETTINGS:
            prev = dilation
            if cur == output_stride:
                stride, dilation = 1, dilation * s
            else:
                stride, cur = s, cur * s
            for i in range(n):
                feats.append(_PaddedInvertedResidual(cin, c, stride if i == 0 else 1, prev if i == 0 else dilation, t))
                cin = c
        self.low_level_features = nn.Sequential(*feats[:4])
        self.high_level_features = nn.Sequential(*feats[4:])

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        low = self.low_level_features(x)
        return {"low_level": low, "out": self.high_level_features(low)}


def _out_hw(size: int, output_stride: int) -> int:
    hw = (size - 3) // 2 + 1  # unpadded stride-2 stem
    for _ in range({16: 3, 8: 2}[output_stride]):
        hw = (hw + 1) // 2
    return hw


class DeepLabHeadV3Plus(nn.Module):
    """Low-level projection + ASPP (with ``atom`` branches) + fusion classifier: -> (B, K, H/4, W/4)."""

    def __init__(self, atom: str, in_chs: int, low_chs: int, num_classes: int, rates: tuple[int, int, int],
                 out_hw: int, **tvconv_kwargs: Any) -> None:
        super().__init__()
        self.project = nn.Sequential(nn.Conv2d(low_chs, 48, 1, bias=False), nn.BatchNorm2d(48), nn.ReLU(inplace=True))
        if atom == "base":
            branch = None
        elif atom in ("tvconv", "dw"):
            kw = tvconv_kwargs if atom == "tvconv" else {}

            def branch(cin: int, cout: int, rate: int) -> nn.Module:  # rate unused, as in the official code
                return nn.Sequential(TVConvInvertedResidual(cin, cout, 1, 6, out_hw, "tvconv" if atom == "tvconv"
                                                            else "base", **kw))
        else:
            raise ValueError(f"DeepLabHeadV3Plus: atom must be 'base', 'tvconv' or 'dw', got {atom!r}")
        if atom != "tvconv" and tvconv_kwargs:
            raise ValueError(f"DeepLabHeadV3Plus: TVConv options need atom='tvconv', got {sorted(tvconv_kwargs)}")
        self.aspp = ASPP(in_chs, 256, rates, nn.ReLU, 0.1, branch=branch)
        self.classifier = nn.Sequential(nn.Conv2d(304, 256, 3, padding=1, bias=False), nn.BatchNorm2d(256),
                                        nn.ReLU(inplace=True), nn.Conv2d(256, num_classes, 1))
        for m in self.modules():  # official _init_weight (the TVConv generator convs included)
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, feats: dict[str, Tensor]) -> Tensor:
        low = self.project(feats["low_level"])
        out = F.interpolate(self.aspp(feats["out"]), size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.classifier(torch.cat([low, out], dim=1))


class TVConvDeepLabV3Plus(nn.Module):
    """Optic disc/cup DeepLabV3+ (MobileNetV2, OS16) with TVConv ASPP: (B, 3, S, S) -> (B, num_classes, S, S).

    Args:
        atom: ``"tvconv"`` (paper), ``"dw"`` or ``"base"`` ASPP branches.
        num_classes: 2 (cup, disc).
        input_size: S (256); TVConv branches are built for the resulting 1/16 map (16x16 at 256).
        output_stride: 16 (rates (6, 12, 18)) or 8 (rates (12, 24, 36)).
        in_chans: input channels.
        tvconv_kwargs: TVConv options (official 64 generator channels, 3 intermediate layers by default).
    """

    def __init__(self, atom: str = "tvconv", num_classes: int = 2, input_size: int = 256, output_stride: int = 16,
                 in_chans: int = 3, **tvconv_kwargs: Any) -> None:
        super().__init__()
        if output_stride not in (8, 16):
            raise ValueError(f"TVConvDeepLabV3Plus: output_stride must be 8 or 16, got {output_stride}")
        if atom == "tvconv":
            tvconv_kwargs = {**OFFICIAL_TVCONV_KWARGS, **tvconv_kwargs}
        self.backbone = SegMobileNetV2(output_stride, in_chans)
        rates = (6, 12, 18) if output_stride == 16 else (12, 24, 36)
        self.classifier = DeepLabHeadV3Plus(atom, 320, 24, num_classes, rates, _out_hw(input_size, output_stride),
                                            **tvconv_kwargs)
        self.in_chans, self.input_size, self.num_classes = in_chans, input_size, num_classes

    def forward(self, x: Tensor) -> Tensor:
        name = type(self).__name__
        check_input(name, x, ndim=4, channels=self.in_chans)
        if tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            raise ValueError(f"{name}: expected input (B, {self.in_chans}, {self.input_size}, {self.input_size}) "
                             f"(TVConv fixes the resolution), got shape {tuple(x.shape)}")
        y = self.classifier(self.backbone(x))
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)

    def reparameterize(self) -> None:
        """Every TVConv to its inference form (official ``model_transform_for_test``)."""
        reparameterize_tvconvs(self)


def load_official_odoc(model: TVConvDeepLabV3Plus, state_dict: Mapping[str, Tensor]) -> TVConvDeepLabV3Plus:
    """Load an official ``od_oc_segmentation`` checkpoint strictly: the key layout is the official one
    (``backbone.{low,high}_level_features``, ``classifier.{project,aspp,classifier}``); a ``state_dict`` /
    ``model_state_dict`` wrapper and DataParallel ``module.`` prefixes are removed, TVConv shape buffers checked and
    dropped, ``TVConv_test`` weight maps reshaped (the model is reparameterised first)."""
    for wrap in ("model_state_dict", "state_dict"):
        if isinstance(state_dict.get(wrap), Mapping):
            state_dict = state_dict[wrap]
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state_dict.items()}
    if any(k.endswith("weight_maps") for k in sd):
        model.reparameterize()
    model.load_state_dict(adapt_official_tvconv_keys(sd, model), strict=True)
    return model


def checkpoint_filter_fn(state_dict: Mapping[str, Tensor], model: TVConvDeepLabV3Plus) -> dict[str, Tensor]:
    """Hook for ``load_weights`` / ``create_model(pretrained=path)``: official od_oc checkpoints (TVConv shape
    buffers checked and dropped; a ``TVConv_test`` checkpoint needs ``model.reparameterize()`` first)."""
    return adapt_official_tvconv_keys(dict(state_dict), model)


def convert_torchvision_mobilenetv2_backbone(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """torchvision ``mobilenet_v2`` ImageNet weights (the paper's backbone init) -> ``backbone.*`` keys
    (``features.0-3`` -> low level, ``features.4-17`` -> high level; ``features.18`` and ``classifier`` dropped)."""
    out = {}
    for k, v in state_dict.items():
        if not k.startswith("features."):
            continue
        i, rest = k.split(".", 2)[1:]
        i = int(i)
        if i < 4:
            out[f"backbone.low_level_features.{i}.{rest}"] = v
        elif i < 18:
            out[f"backbone.high_level_features.{i - 4}.{rest}"] = v
    return out


_SRC = ("exact: sum(p.numel()) printed by the official odoc_train_test.py for this model (training form), "
        "derived from the official layer shapes in the tests")
_PARAMS = {"tvconv": 36_944_610, "dw": 6_401_634, "base": 5_220_834}


def _register(atom: str) -> None:
    name = {"tvconv": "tvconv_deeplabv3plus_odoc", "dw": "dw_deeplabv3plus_odoc", "base": "deeplabv3plus_odoc"}[atom]

    def builder(**kw: Any) -> TVConvDeepLabV3Plus:
        return TVConvDeepLabV3Plus(atom, **kw)

    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = f"Optic disc/cup DeepLabV3+ MobileNetV2 with {atom} ASPP branches (card: tvconv)."
    register_model(builder, paper="tvconv", name=name, task="segmentation2d", num_classes=2,
                   input_size=(3, 256, 256), test_input_size=(3, 256, 256),
                   reported=Reported(params=_PARAMS[atom], resolution=256, params_exact=True, source=_SRC),
                   tags=("segmentation", "medical"))


for _atom in ("tvconv", "dw", "base"):
    _register(_atom)


@register_model(paper="tvconv", task="segmentation2d", test_only=True, num_classes=2, input_size=(3, 64, 64),
                test_input_size=(3, 64, 64))
def test_tvconv_deeplabv3plus(**kw: Any) -> TVConvDeepLabV3Plus:
    """DeepLabV3+ with a small TVConv generator at 64x64 for the generic tests."""
    args: dict[str, Any] = dict(input_size=64, inter_chans=4, inter_layers=1)
    args.update(kw)
    return TVConvDeepLabV3Plus(**args)
