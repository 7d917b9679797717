"""HorFPN: g^nConv in FPN/UPerNet decoders, and HorNet + UPerNet semantic segmentation (card: hornet).

The HorNet paper's dense-prediction experiments replace the 3x3 convolutions of the FPN decoders by a g^nConv
module ("HorFPN"). Design read from the official repository (raoyongming/HorNet, MIT):

- ``GNConvModule`` (``mmcv_custom/gn_module.py``): ``proj_in`` 1x1 in -> 2C, spatial op on the sum(d_k) channels of q
  (depthwise ``kernel_size`` conv with bias, ``type='gnconv'``; or the Global-Local Filter with a (h, h//2+1)
  spectrum, h=32 by default and a 3x3 local branch, ``type='gngf'``), recursive gating of order n (2 in every
  config), optional ``proj_out`` 1x1 C -> C, then the decoder's norm and activation. Unlike the backbone's g^nConv
  there is *no* scale s (s = 1). Keys (``proj_in``, ``dwconv``, ``pws``, ``proj_out``, ``bn``) match the official
  module. -> :class:`GnConvModule`.
- Detection neck ``GNFPN`` (``object_detection/necks/gn_fpn.py``): a standard FPN (1x1 laterals, nearest top-down
  upsampling + add) whose per-level 3x3 ``fpn_convs`` are GNConvModules (7x7, order 2, proj_out, no norm/act);
  extra levels by max-pool (k=1, s=2) or, with ``add_extra_convs``, a 3x3 s2 conv followed by a GNConvModule.
  -> :class:`HorFPN`.
- Segmentation head ``GNUPerHead`` (``semantic_segmentation/decode_heads/gn_uper_head.py``): UPerNet (PPM on the
  last level, 1x1 laterals, bilinear top-down path, 3x3 ``fpn_convs``, concat at 1/4) whose ``fpn_bottleneck``
  (the 3x3 conv fusing the concatenated levels) is a GNConvModule with BN + ReLU; configs ``horfpn_7x7`` (gnconv,
  k=7, order 2, proj_out) and ``horfpn_gf`` (gngf, h=32, order 2, proj_out) on HorNet-S 7x7. -> :class:`HorUPerHead`
  (``fpn_bottleneck="conv"`` gives the plain UPerHead used by the main ADE20K results).

Segmentation model :class:`HorNetUPerNet`: HorNet backbone with a channels-first LayerNorm on every output level (as
the official segmentation backbone, ``norm0..3``), the head, bilinear upsampling of the 1/4-resolution logits to the
input size. Output (B, num_classes, H, W); task ``segmentation2d``. The auxiliary FCN head of the training configs
(on level 3, 256 channels, loss weight 0.4) is built with ``aux_head=True`` (default of the registered full-size
variants, as the configs); the model then returns ``(logits, aux_logits)`` in training mode (the ``segmentation2d``
loss weights the auxiliary term 0.4) and only the logits in eval mode.

Card facts: the README's UPerNet figures (params of the whole segmentor incl. the auxiliary head; FLOPs = MACs
at 512x2048 with mmseg's get_flops, decode path only) are reproduced (meta device, this library's counter):
T 7x7 52,205,036 / 925.2 G vs "52M / 926G"; T-GF 54,626,476 / 923.6 G vs "55M / 924G"; S 7x7 81,181,772 /
1029.6 G vs "81M / 1030G"; S-GF 84,813,932 / 1027.1 G vs "85M / 1027G"; B 7x7 120,768,172 / 1173.8 G vs
"121M / 1174G"; B-GF 125,611,052 / 1170.5 G vs "126M / 1171G"; L 7x7 231,769,964 / 2471.6 G vs "232M / 2473G";
L-GF 239,034,284 / 2463.7 G vs "239M / 2465G" (GF spectra (24, 13), (12, 7) as the segmentation configs). The L
models use 640 crops and their FLOPs are at 640x2560 (at 512x2048 they are 1581.8 / 1576.8 G, 36 % below the
README). The README lists B-GF with a 640 crop, but its config (``upernet_hornet_base_gf_512_160k_ade20k.py``)
and FLOPs (1171 G at 512x2048) are 512; we follow the config. Drop path: configs (T 0.3/0.4, S 0.3, B 0.4/0.5,
L 0.4). HorFPN on HorNet-S 7x7 (no README figures): 74,275,404 params / 576.8 G (7x7) and
74,661,324 / 574.5 G (GF): the g^nConv ``fpn_bottleneck`` replaces the 3x3 2048->512 conv (9.4 M params, 453 GMACs).
"""

from __future__ import annotations

from functools import partial
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from convatlas.identities import register_component, register_identity
from convatlas.layers import LayerNorm2d, check_input
from convatlas.layers.global_filter import GlobalLocalFilter
from convatlas.layers.gnconv import GnConv
from convatlas.models.classification.hornet import HorNet
from convatlas.registry import Reported, register_model

__all__ = ["GnConvModule", "HorFPN", "HorUPerHead", "HorNetUPerNet", "ConvBNReLU"]


class ConvBNReLU(nn.Sequential):
    """conv (no bias) -> BN -> ReLU: (B, C_in, H, W) -> (B, C_out, H, W) (mmcv ``ConvModule`` with BN)."""

    def __init__(self, cin: int, cout: int, k: int = 1, stride: int = 1) -> None:
        super().__init__(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class GnConvModule(GnConv):
    """HorFPN's decoder conv: g^nConv from ``in_chs`` to ``out_chs`` (+ optional BN and ReLU) (card: hornet).

    (B, in_chs, H, W) -> (B, out_chs, H, W).

    Args:
        in_chs / out_chs: channels (out_chs divisible by 2^(order-1)).
        order: interaction order (2 in every official config).
        spatial: ``"dw"`` (depthwise ``kernel_size`` conv, official ``type='gnconv'``) or ``"gf"`` (Global-Local
            Filter with an (gf_size, gf_size//2+1) spectrum, ``type='gngf'``).
        kernel_size: depthwise kernel (7 in the HorFPN configs; the class default of the official module is 3).
        gf_size: GF spectrum height h (32 = a 128x128 map from 512 crops at 1/4; other sizes are interpolated).
        proj_out: keep the 1x1 output projection.
        norm: ``"bn"`` or None; act: ``"relu"`` or None.
    """

    def __init__(self, in_chs: int, out_chs: int, order: int = 2, spatial: str = "dw", kernel_size: int = 7,
                 gf_size: int = 32, proj_out: bool = True, norm: str | None = None, act: str | None = None) -> None:
        if spatial not in ("dw", "gf"):
            raise ValueError(f"GnConvModule: spatial must be 'dw' or 'gf', got {spatial!r}")
        layer = partial(GlobalLocalFilter, h=gf_size, w=gf_size // 2 + 1) if spatial == "gf" else None
        super().__init__(out_chs, order, spatial_layer=layer, kernel_size=kernel_size, scale=1.0, in_dim=in_chs,
                         proj_out=proj_out)
        if norm not in (None, "bn") or act not in (None, "relu"):
            raise ValueError(f"GnConvModule: norm must be None/'bn' and act None/'relu', got {norm!r}, {act!r}")
        self.bn = nn.BatchNorm2d(out_chs) if norm == "bn" else nn.Identity()
        self.activate = nn.ReLU(inplace=True) if act == "relu" else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.activate(self.bn(super().forward(x)))


register_component("hornet", GnConvModule)


class HorFPN(nn.Module):
    """FPN whose output convs are g^nConv modules (official ``GNFPN``): list of maps -> list of ``num_outs`` maps.

    Inputs [(B, C_i, H_i, W_i)] (strides increasing by 2), outputs [(B, out_chs, H_i, W_i)] + extra levels.

    Args:
        in_channels: channels per input level.
        out_chs: FPN width (256 in the detection configs).
        num_outs: number of outputs (5 for Mask/Cascade R-CNN); levels beyond the inputs are extra.
        add_extra_convs: False (extra levels by max-pool k1 s2), or ``"on_input"`` / ``"on_lateral"`` /
            ``"on_output"`` (3x3 s2 conv + g^nConv module on that source).
        spatial / kernel_size / order / gf_size / proj_out: the :class:`GnConvModule` configuration.
    """

    def __init__(self, in_channels: Sequence[int], out_chs: int = 256, num_outs: int | None = None,
                 add_extra_convs: bool | str = False, spatial: str = "dw", kernel_size: int = 7, order: int = 2,
                 gf_size: int = 32, proj_out: bool = True) -> None:
        super().__init__()
        self.in_channels = list(in_channels)
        self.num_outs = num_outs or len(self.in_channels)
        if self.num_outs < len(self.in_channels):
            raise ValueError(f"HorFPN: num_outs {self.num_outs} < number of input levels {len(self.in_channels)}")
        if add_extra_convs is True:
            add_extra_convs = "on_input"
        if add_extra_convs not in (False, "on_input", "on_lateral", "on_output"):
            raise ValueError(f"HorFPN: add_extra_convs must be False or on_input/on_lateral/on_output, "
                             f"got {add_extra_convs!r}")
        self.add_extra_convs = add_extra_convs
        gn = partial(GnConvModule, out_chs=out_chs, order=order, spatial=spatial, kernel_size=kernel_size,
                     gf_size=gf_size, proj_out=proj_out)
        self.lateral_convs = nn.ModuleList(nn.Conv2d(c, out_chs, 1) for c in self.in_channels)
        self.fpn_convs = nn.ModuleList(gn(out_chs) for _ in self.in_channels)
        self.extra_convs = nn.ModuleList()
        if add_extra_convs:
            for i in range(self.num_outs - len(self.in_channels)):
                cin = self.in_channels[-1] if (i == 0 and add_extra_convs == "on_input") else out_chs
                self.extra_convs.append(nn.Sequential(nn.Conv2d(cin, out_chs, 3, 2, 1), gn(out_chs)))

    def forward(self, feats: Sequence[Tensor]) -> list[Tensor]:
        if len(feats) != len(self.in_channels):
            raise ValueError(f"HorFPN: expected {len(self.in_channels)} feature maps, got {len(feats)}")
        lats = [conv(f) for conv, f in zip(self.lateral_convs, feats)]
        for i in range(len(lats) - 1, 0, -1):
            lats[i - 1] = lats[i - 1] + F.interpolate(lats[i], size=lats[i - 1].shape[2:], mode="nearest")
        outs = [conv(t) for conv, t in zip(self.fpn_convs, lats)]
        if self.num_outs > len(outs):
            if not self.add_extra_convs:
                while len(outs) < self.num_outs:
                    outs.append(F.max_pool2d(outs[-1], 1, stride=2))
            else:
                src = {"on_input": feats[-1], "on_lateral": lats[-1], "on_output": outs[-1]}[self.add_extra_convs]
                outs.append(self.extra_convs[0](src))
                for conv in self.extra_convs[1:]:
                    outs.append(conv(outs[-1]))
        return outs


class PyramidPooling(nn.Module):
    """PSP module: for each scale, adaptive avg-pool -> 1x1 ConvBNReLU -> bilinear up; concatenated with the input."""

    def __init__(self, cin: int, channels: int, scales: Sequence[int] = (1, 2, 3, 6)) -> None:
        super().__init__()
        self.scales = tuple(scales)
        self.convs = nn.ModuleList(ConvBNReLU(cin, channels, 1) for _ in self.scales)

    def forward(self, x: Tensor) -> Tensor:
        outs = [x]
        for s, conv in zip(self.scales, self.convs):
            outs.append(F.interpolate(conv(F.adaptive_avg_pool2d(x, s)), size=x.shape[2:], mode="bilinear",
                                      align_corners=False))
        return torch.cat(outs, 1)


class HorUPerHead(nn.Module):
    """UPerNet decode head with a g^nConv ``fpn_bottleneck`` (official ``GNUPerHead``).

    [(B, C_i, H/4*2^i, W/4*2^i)] -> logits (B, num_classes, H/4, W/4).

    Args:
        in_channels: channels of the four input levels.
        num_classes: output classes.
        channels: decoder width (512).
        pool_scales: PPM scales (1, 2, 3, 6).
        fpn_bottleneck: ``"gnconv"`` (HorFPN) or ``"conv"`` (plain UPerHead: 3x3 ConvBNReLU).
        spatial / kernel_size / order / gf_size / proj_out: the :class:`GnConvModule` configuration.
        dropout: dropout before the 1x1 classifier (0.1).
    """

    def __init__(self, in_channels: Sequence[int], num_classes: int, channels: int = 512,
                 pool_scales: Sequence[int] = (1, 2, 3, 6), fpn_bottleneck: str = "gnconv", spatial: str = "dw",
                 kernel_size: int = 7, order: int = 2, gf_size: int = 32, proj_out: bool = True,
                 dropout: float = 0.1) -> None:
        super().__init__()
        n = len(in_channels)
        self.psp = PyramidPooling(in_channels[-1], channels, pool_scales)
        self.bottleneck = ConvBNReLU(in_channels[-1] + len(pool_scales) * channels, channels, 3)
        self.lateral_convs = nn.ModuleList(ConvBNReLU(c, channels, 1) for c in in_channels[:-1])
        self.fpn_convs = nn.ModuleList(ConvBNReLU(channels, channels, 3) for _ in in_channels[:-1])
        if fpn_bottleneck == "gnconv":
            self.fpn_bottleneck: nn.Module = GnConvModule(n * channels, channels, order, spatial, kernel_size, gf_size,
                                                          proj_out, norm="bn", act="relu")
        elif fpn_bottleneck == "conv":
            self.fpn_bottleneck = ConvBNReLU(n * channels, channels, 3)
        else:
            raise ValueError(f"HorUPerHead: fpn_bottleneck must be 'gnconv' or 'conv', got {fpn_bottleneck!r}")
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def forward_features(self, feats: Sequence[Tensor]) -> Tensor:
        """Fused decoder map (B, channels, H/4, W/4)."""
        lats = [conv(f) for conv, f in zip(self.lateral_convs, feats)]
        lats.append(self.bottleneck(self.psp(feats[-1])))
        for i in range(len(lats) - 1, 0, -1):
            lats[i - 1] = lats[i - 1] + F.interpolate(lats[i], size=lats[i - 1].shape[2:], mode="bilinear",
                                                      align_corners=False)
        outs = [conv(t) for conv, t in zip(self.fpn_convs, lats[:-1])] + [lats[-1]]
        size = outs[0].shape[2:]
        outs = [outs[0]] + [F.interpolate(o, size=size, mode="bilinear", align_corners=False) for o in outs[1:]]
        return self.fpn_bottleneck(torch.cat(outs, 1))

    def forward(self, feats: Sequence[Tensor]) -> Tensor:
        return self.conv_seg(self.dropout(self.forward_features(feats)))


class FCNAuxHead(nn.Module):
    """mmseg ``FCNHead`` (num_convs 1, no concat): 3x3 ConvBNReLU -> dropout -> 1x1 classifier."""

    def __init__(self, cin: int, num_classes: int, channels: int = 256, dropout: float = 0.1) -> None:
        super().__init__()
        self.conv = ConvBNReLU(cin, channels, 3)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv_seg(self.dropout(self.conv(x)))


class HorNetUPerNet(nn.Module):
    """HorNet backbone + UPerNet / HorFPN head for semantic segmentation (card: hornet).

    (B, in_chans, H, W) -> logits (B, num_classes, H, W) (H, W >= 32; any size, upsampled bilinearly).

    Args:
        num_classes: classes (150 for ADE20K).
        in_chans: input channels.
        backbone: :class:`~convatlas.models.classification.hornet.HorNet` architecture kwargs (depths, base_dim,
            orders, gf_sizes, drop_path_rate, ...).
        head: :class:`HorUPerHead` kwargs (channels, fpn_bottleneck, spatial, kernel_size, gf_size, ...).
        aux_head: build the auxiliary FCN head on level 3 (training returns ``(logits, aux_logits)``).
        aux_channels: width of the auxiliary head (256).
    """

    def __init__(self, num_classes: int = 150, in_chans: int = 3, backbone: dict | None = None,
                 head: dict | None = None, aux_head: bool = False, aux_channels: int = 256) -> None:
        super().__init__()
        self.backbone = HorNet(in_chans=in_chans, num_classes=0, **(backbone or {}))
        self.backbone.remove_head()
        dims = [f["num_chs"] for f in self.backbone.feature_info]
        self.out_norms = nn.ModuleList(LayerNorm2d(d, eps=1e-6) for d in dims)
        self.decode_head = HorUPerHead(dims, num_classes, **(head or {}))
        self.aux_head = FCNAuxHead(dims[2], num_classes, aux_channels) if aux_head else None
        self.num_classes, self.in_chans = num_classes, in_chans

    def forward_features(self, x: Tensor) -> list[Tensor]:
        """Normalised backbone maps [(B, C_i, H/4*2^i, W/4*2^i)], i = 0..3."""
        name = getattr(self, "pretrained_cfg", {}).get("architecture", type(self).__name__)
        check_input(name, x, ndim=4, channels=self.in_chans, min_size=32)
        return [norm(f) for norm, f in zip(self.out_norms, self.backbone.forward_stages(x))]

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        feats = self.forward_features(x)
        size = x.shape[2:]
        logits = F.interpolate(self.decode_head(feats), size=size, mode="bilinear", align_corners=False)
        if self.aux_head is not None and self.training:
            aux = F.interpolate(self.aux_head(feats[2]), size=size, mode="bilinear", align_corners=False)
            return logits, aux
        return logits

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.backbone.set_grad_checkpointing(enable)


# ---- variants -------------------------------------------------------------------------------------------------
_GF_SEG = (None, None, (24, 13), (12, 7))  # official segmentation configs (512 crops)
_DW = (None, None, None, None)
_HEADS = {
    "upernet": dict(fpn_bottleneck="conv"),
    "horfpn_7x7": dict(fpn_bottleneck="gnconv", spatial="dw", kernel_size=7, order=2, proj_out=True),
    "horfpn_gf": dict(fpn_bottleneck="gnconv", spatial="gf", gf_size=32, order=2, proj_out=True),
}
_SRC = "official semantic_segmentation/README.md (UPerNet, ADE20K 512x512 160k; params incl. auxiliary head, rounded)"
# name -> (base dim, gf sizes, head, README params, README GFLOPs @512x2048, single-scale mIoU, drop path)
_VARIANTS = {
    "upernet_hornet_tiny_7x7": (64, _DW, "upernet", 52e6, 926.0, 48.1, 0.3),
    "upernet_hornet_tiny_gf": (64, _GF_SEG, "upernet", 55e6, 924.0, 49.2, 0.4),
    "upernet_hornet_small_7x7": (96, _DW, "upernet", 81e6, 1030.0, 49.2, 0.3),
    "upernet_hornet_small_gf": (96, _GF_SEG, "upernet", 85e6, 1027.0, 50.0, 0.3),
    "upernet_hornet_base_7x7": (128, _DW, "upernet", 121e6, 1174.0, 50.0, 0.4),
    "upernet_hornet_base_gf": (128, _GF_SEG, "upernet", 126e6, 1171.0, 50.5, 0.5),
    "upernet_hornet_large_7x7": (192, _DW, "upernet", 232e6, 2473.0, 54.1, 0.4, 640),
    "upernet_hornet_large_gf": (192, _GF_SEG, "upernet", 239e6, 2465.0, 55.0, 0.4, 640),
    "horfpn_7x7_upernet_hornet_small_7x7": (96, _DW, "horfpn_7x7", None, None, None, 0.3),
    "horfpn_gf_upernet_hornet_small_7x7": (96, _DW, "horfpn_gf", None, None, None, 0.3),
}


def _register(name: str, base: int, gf, head: str, params, gmacs, miou, dpr: float, crop: int = 512) -> None:
    def builder(**kw) -> HorNetUPerNet:
        bb = dict(depths=(2, 3, 18, 2), base_dim=base, orders=(2, 3, 4, 5), gf_sizes=gf, drop_path_rate=dpr)
        bb.update(kw.pop("backbone", {}))
        return HorNetUPerNet(backbone=bb, head={**_HEADS[head], **kw.pop("head", {})}, **{"aux_head": True, **kw})

    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = f"{name} (card hornet): (B, 3, {crop}, {crop}) -> (B, 150, {crop}, {crop})."
    reported = None
    if params is not None:
        reported = Reported(params=int(params), gmacs=gmacs, resolution=(3, crop, 4 * crop), source=_SRC,
                            metrics={"ade20k_miou": miou})
    register_model(builder, paper="hornet", name=name, task="segmentation2d", input_size=(3, crop, crop),
                   test_input_size=(3, 64, 64), num_classes=150, reported=reported, tags=("segmentation",))


for _name, _v in _VARIANTS.items():
    _register(_name, *_v)


@register_model(paper="hornet", test_only=True, task="segmentation2d", input_size=(3, 64, 64),
                test_input_size=(3, 64, 64), num_classes=4)
def test_horfpn(**kw) -> HorNetUPerNet:
    """Tiny HorNet (dims 16..128, depths 1,1,1,1) + HorFPN head (GF fpn_bottleneck, 32 channels)."""
    bb = {"depths": (1, 1, 1, 1), "base_dim": 16, "gf_sizes": (None, None, (4, 3), (2, 2)), **kw.pop("backbone", {})}
    head = {"channels": 32, "fpn_bottleneck": "gnconv", "spatial": "gf", "gf_size": 16, **kw.pop("head", {})}
    return HorNetUPerNet(**{"num_classes": 4, "backbone": bb, "head": head, **kw})


@register_identity("hornet", "GnConvModule order 2, identity pws/proj: proj_out(p * DW(q)) (no s); HorFPN shapes")
def _gnconv_module_identity() -> str:
    torch.manual_seed(0)
    m = GnConvModule(12, 8, order=2, spatial="dw", kernel_size=7).double().eval()
    x = torch.randn(2, 12, 9, 9, dtype=torch.float64)
    with torch.no_grad():
        f = m.proj_in(x)
        p, q = f[:, :4], m.dwconv(f[:, 4:])
        ref = m.proj_out(m.pws[0](p * q[:, :4]) * q[:, 4:])
        err = (m(x) - ref).abs().max().item()
        fpn = HorFPN([8, 16, 32], out_chs=8, num_outs=5).eval()
        outs = fpn([torch.randn(1, c, 32 // 2**i, 32 // 2**i) for i, c in enumerate((8, 16, 32))])
    shapes = [tuple(o.shape[2:]) for o in outs]
    assert err < 1e-12, f"GnConvModule max abs error {err:.2e}"
    assert shapes == [(32, 32), (16, 16), (8, 8), (4, 4), (2, 2)], shapes
    return f"GnConvModule vs hand-written gating {err:.1e} (float64); HorFPN 5 levels {shapes}"
