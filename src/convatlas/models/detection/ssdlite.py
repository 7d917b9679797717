"""SSDLite single-shot detector on any registered backbone; AFFNet + SSDLite variants (card: aff, arXiv
2307.14008, official code microsoft/TokenMixers "Adaptive Frequency Filters", MIT; detection code from cvnets).

Layout (official ``affnet/models/detection/ssd.py``, ``modules/ssd_heads.py``, ``anchor_generator/
ssd_anchor_generator.py``, ``matcher_det/ssd_matcher.py``, ``misc/third_party/ssd_utils.py``, read):
the backbone without ``conv_1x1_exp`` / classifier gives the maps at output strides 8 / 16 / 32 (layers 3-5);
deeper levels come from extra layers, each a separable conv (DW 3x3 stride 2 + BN, then 1x1 + BN + act) on the
previous level, and the ``-1`` level is global average pooling + 1x1 conv (no norm, no bias) + act. Each level
has an SSD head: an optional 1x1 projection (conv + BN + act, when ``proj_channels`` differs from the map's
channels) and ONE separable 3x3 conv (DW 3x3 + BN, then 1x1 with bias, no norm / act) predicting
``anchors x (4 + K + 1)`` values per cell (split into box deltas and class logits; the ``-1`` level uses a plain
1x1 conv with bias). Priors: cvnets SSD anchors (see :func:`convatlas.ops.boxes.ssd_priors`). Training / decoding
/ NMS / mAP: :mod:`convatlas.tasks.detection` (task ``detection``).

Card facts / decisions:
- Configuration = the cvnets SSDLite configs for MobileViT-style backbones at 320x320
  (``config/detection/ssd_coco/mobilevit.yaml``, ``ssd_mobilevit_{xx_,x_,}small_320.yaml`` of apple/ml-cvnets):
  output strides (16, 32, 64, 128, 256, -1), aspect ratios ((2, 3) x 5, (2,)) -> 6, 6, 6, 6, 6, 4 priors per
  cell (3,232 priors at 320), proj channels (512, 256, 256, 128, 128, 64), anchor scales 0.1 ... 1.05, clipped
  anchors, matcher IoU 0.5, variances (0.1, 0.2), MultiBox loss with 3:1 hard negatives, NMS 0.5, score
  threshold 0.01, top-k 400, 200 detections per image, 81 outputs (80 COCO classes + background). The
  AFFNet-specific detection configs (Google Drive, linked from the README) were NOT available: that AFFNet uses
  exactly these MobileViT settings is unconfirmed (the official repository ships the same cvnets SSD code).
- Activation of the detection layers: cvnets' default ``model.activation.name`` (ReLU in the MobileViT SSD configs;
  the backbone keeps its own swish); unconfirmed for AFFNet.
- Official head layout kept (one separable conv for boxes and classes together, per-anchor channel order
  ``[4 box, K + 1 classes]``), so :func:`convert_official_affnet_ssd` loads cvnets checkpoints strictly.
- Parameters (80 classes, 320x320; exact counts of the official module layout, checked against independently
  written official key shapes in the tests): AFFNet-ET 1,659,386, AFFNet-T 2,674,234, AFFNet 5,352,666.
  MACs at 320 (convs and the filters' einsums; FFTs not counted): 0.697 / 1.375 / 2.424 G.
- Reported: the official README lists no detection results, and the paper's COCO table could not be read
  from the stored sources: no reference figure for mAP, params or MACs (params registered as exact counts of
  the official layout, like ``affnet_base``).
- Input normalisation: cvnets feeds images in [0, 1] without mean/std (registered mean 0, std 1).
"""

from __future__ import annotations

import re
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from convatlas.layers import check_input
from convatlas.models.classification.affnet import conv_bn, convert_official_affnet
from convatlas.models.backbone import FeatureExtractor
from convatlas.ops.boxes import SSD_VARIANCES, ssd_priors
from convatlas.registry import Reported, create_model, register_model
from convatlas.tasks.detection import SSDOutput, postprocess_detections

__all__ = ["SSDLite", "SSDHead", "SeparableConv", "convert_official_affnet_ssd", "checkpoint_filter_fn"]

SSD_OUTPUT_STRIDES = (16, 32, 64, 128, 256, -1)
SSD_ASPECT_RATIOS = ((2, 3),) * 5 + ((2,),)
SSD_PROJ_CHANNELS = (512, 256, 256, 128, 128, 64)


class SeparableConv(nn.Module):
    """cvnets ``SeparableConv``: DW kxk (stride) + BN -> 1x1 (optional bias) [+ BN] [+ act].
    (B, C_in, H, W) -> (B, C_out, H / stride, W / stride)."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 3, stride: int = 1, bias: bool = False,
                 norm: bool = True, act: Callable[[], nn.Module] | None = None) -> None:
        super().__init__()
        self.dw_conv = conv_bn(cin, cin, kernel_size, stride, groups=cin)
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, 1, bias=bias)]
        if norm:
            layers.append(nn.BatchNorm2d(cout))
        if act is not None:
            layers.append(act())
        self.pw_conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.pw_conv(self.dw_conv(x))


class SSDHead(nn.Module):
    """cvnets ``SSDHead``: [1x1 proj + BN + act] -> separable kxk (k = 1: plain 1x1) predicting
    ``num_anchors * (4 + num_outputs)`` channels. (B, C, H, W) -> box deltas (B, H*W*A, 4), logits (B, H*W*A, K+1).
    """

    def __init__(self, cin: int, num_anchors: int, num_outputs: int, proj_channels: int = -1, kernel_size: int = 3,
                 act: Callable[[], nn.Module] = nn.ReLU) -> None:
        super().__init__()
        self.proj_layer = None
        if proj_channels != -1 and proj_channels != cin and kernel_size > 1:
            self.proj_layer = conv_bn(cin, proj_channels, 1, act=act)
            cin = proj_channels
        n = num_anchors * (4 + num_outputs)
        self.loc_cls_layer: nn.Module = (SeparableConv(cin, n, kernel_size, bias=True, norm=False) if kernel_size > 1
                                         else nn.Sequential(nn.Conv2d(cin, n, 1, bias=True)))
        self.num_outputs = num_outputs

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.proj_layer is not None:
            x = self.proj_layer(x)
        y = self.loc_cls_layer(x).permute(0, 2, 3, 1)
        y = y.reshape(y.shape[0], -1, 4 + self.num_outputs)
        return y[..., :4], y[..., 4:]


class SSDLite(nn.Module):
    """SSDLite detector: (B, C, H, W) -> :class:`~convatlas.tasks.detection.SSDOutput` (cls_logits (B, P, K + 1),
    box_deltas (B, P, 4), priors (P, 4) xyxy pixels, image_size (2,)); ``predict`` gives boxes / scores / labels.

    Args:
        backbone: registered backbone name (built with ``create_model(backbone, features_only=True)``).
        num_classes: foreground classes K (80 for COCO; the logits have K + 1 with background at index 0).
        output_strides: levels: 8 / 16 / 32 are backbone maps; larger values are extra stride-2 layers on the
            previous level; ``-1`` is a global-pool level (last).
        aspect_ratios: per level (2 + 2 len(ratios) priors per cell).
        proj_channels: per level, 1x1 projection width of the head (and output width of extra layers).
        min_scale, max_scale, clip_priors: prior scales (fractions of the image side) and clipping.
        act_layer: activation of extra layers and head projections (ReLU, cvnets default).
        score_threshold, top_k, nms_threshold, max_detections: ``predict`` post-processing.
        in_chans: input channels. backbone_kwargs: passed to the backbone builder (e.g. ``drop_path_rate``).
    """

    def __init__(
        self,
        backbone: str = "affnet",
        num_classes: int = 80,
        output_strides: Sequence[int] = SSD_OUTPUT_STRIDES,
        aspect_ratios: Sequence[Sequence[float]] = SSD_ASPECT_RATIOS,
        proj_channels: Sequence[int] = SSD_PROJ_CHANNELS,
        min_scale: float = 0.1,
        max_scale: float = 1.05,
        clip_priors: bool = True,
        act_layer: Callable[[], nn.Module] = nn.ReLU,
        score_threshold: float = 0.01,
        top_k: int = 400,
        nms_threshold: float = 0.5,
        max_detections: int = 200,
        variances: tuple[float, float] = SSD_VARIANCES,
        in_chans: int = 3,
        **backbone_kwargs: Any,
    ) -> None:
        super().__init__()
        strides = [int(s) for s in output_strides]
        if not (len(strides) == len(aspect_ratios) == len(proj_channels)):
            raise ValueError(f"SSDLite: output_strides, aspect_ratios and proj_channels need one entry per level, "
                             f"got {len(strides)}, {len(aspect_ratios)}, {len(proj_channels)}")
        if num_classes < 1:
            raise ValueError(f"SSDLite: num_classes must be >= 1, got {num_classes}")
        fx = create_model(backbone, features_only=True, in_chans=in_chans, num_classes=0, **backbone_kwargs)
        reductions = [int(i["reduction"]) for i in fx.feature_info]
        enc = [s for s in strides if 0 < s <= max(reductions)]
        missing = [s for s in enc if s not in reductions]
        if missing or not enc or enc != sorted(enc):
            raise ValueError(f"SSDLite: output strides {strides} need backbone levels {enc} in increasing order; "
                             f"{backbone} has reductions {reductions}")
        idx = [reductions.index(s) for s in enc]
        self.backbone = FeatureExtractor(fx.model, idx)
        chans = {s: int(fx.feature_info[reductions.index(s)]["num_chs"]) for s in enc}
        extra: dict[str, nn.Module] = {}
        prev = enc[-1]
        level_chs = []
        for s, p in zip(strides, proj_channels):
            if s in chans:
                level_chs.append(chans[s])
                if s != prev and extra:
                    raise ValueError(f"SSDLite: backbone levels must come before extra levels, got {strides}")
                continue
            if s == -1 and s != strides[-1]:
                raise ValueError(f"SSDLite: the global-pool level -1 must be last, got {strides}")
            if s != -1 and s != 2 * prev:
                raise ValueError(f"SSDLite: extra level {s} must double the previous stride {prev} ({strides})")
            cin = level_chs[-1]
            extra[f"os_{s}"] = (SeparableConv(cin, p, 3, 2, act=act_layer) if s != -1 else
                                nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Sequential(nn.Conv2d(cin, p, 1, bias=False),
                                                                                     act_layer())))
            level_chs.append(p)
            prev = s
        self.extra_layers = nn.ModuleDict(extra)
        self.aspect_ratios = [sorted(set(float(r) for r in ar)) for ar in aspect_ratios]
        self.ssd_heads = nn.ModuleList([
            SSDHead(c, 2 + 2 * len(ar), num_classes + 1, p, 3 if s != -1 else 1, act_layer)
            for s, c, ar, p in zip(strides, level_chs, self.aspect_ratios, proj_channels)])
        self.output_strides, self.enc_strides = strides, enc
        self.num_classes, self.in_chans = num_classes, in_chans
        self.min_scale, self.max_scale, self.clip_priors, self.variances = min_scale, max_scale, clip_priors, variances
        self.score_threshold, self.top_k = score_threshold, top_k
        self.nms_threshold, self.max_detections = nms_threshold, max_detections
        self.input_multiple = int(getattr(fx.model, "input_multiple", 1))
        self._init_detection_layers()

    def _init_detection_layers(self) -> None:
        # cvnets reset_layers / SSDHead.reset_parameters: xavier-uniform convs, zero biases
        for m in [*self.extra_layers.modules(), *self.ssd_heads.modules()]:
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def feature_maps(self, x: Tensor) -> list[Tensor]:
        """(B, C, H, W) -> the per-level maps the heads see (backbone levels, then extra levels)."""
        maps = list(self.backbone(x))
        for s in self.output_strides[len(maps):]:
            maps.append(self.extra_layers[f"os_{s}"](maps[-1]))
        return maps

    def priors(self, feature_sizes: Sequence[tuple[int, int]], image_size: tuple[int, int],
               device: torch.device | str | None = None) -> Tensor:
        """SSD priors (P, 4) xyxy pixels for maps of ``feature_sizes`` on an image of ``image_size`` (H, W)."""
        return ssd_priors(feature_sizes, image_size, self.aspect_ratios, self.min_scale, self.max_scale,
                          self.clip_priors, device=device)

    def forward(self, x: Tensor) -> SSDOutput:
        name = getattr(self, "pretrained_cfg", {}).get("architecture", type(self).__name__)
        check_input(name, x, ndim=4, channels=self.in_chans,
                    multiple_of=self.input_multiple if self.input_multiple > 1 else None)
        maps = self.feature_maps(x)
        boxes, logits = [], []
        for m, head in zip(maps, self.ssd_heads):
            b, c = head(m)
            boxes.append(b)
            logits.append(c)
        h, w = x.shape[-2:]
        priors = self.priors([tuple(m.shape[-2:]) for m in maps], (h, w), device=x.device)
        size = torch.tensor([h, w], dtype=torch.long, device=x.device)
        return SSDOutput(torch.cat(logits, 1), torch.cat(boxes, 1), priors, size)

    @torch.no_grad()
    def predict(self, x: Tensor) -> list[dict[str, Tensor]]:
        """(B, C, H, W) -> per image ``{"boxes" (D, 4) xyxy pixels, "scores" (D,), "labels" (D,) in [0, K)}``
        (eval mode; softmax, score threshold, top-k, class-wise NMS, boxes clipped to the image)."""
        was_training = self.training
        self.eval()
        try:
            out = self(x)
        finally:
            self.train(was_training)
        return postprocess_detections(out.cls_logits, out.box_deltas, out.priors, tuple(x.shape[-2:]),
                                      self.score_threshold, self.top_k, self.nms_threshold, self.max_detections,
                                      self.variances)


def convert_official_affnet_ssd(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Official cvnets SSD checkpoint (``encoder.*``, ``extra_layers.os_*``, ``ssd_heads.*`` with cvnets
    ``ConvLayer`` ``block.conv`` / ``block.norm``) -> :class:`SSDLite` keys (AFFNet encoder via
    :func:`~convatlas.models.classification.affnet.convert_official_affnet`)."""
    for wrap in ("state_dict", "model"):
        if isinstance(state_dict.get(wrap), Mapping):
            state_dict = state_dict[wrap]
    out = {"backbone.model." + k: v for k, v in convert_official_affnet(state_dict, prefix="encoder.").items()}
    for key, value in state_dict.items():
        if key.startswith(("extra_layers.", "ssd_heads.")):
            k = re.sub(r"\.block\.conv\.", ".0.", key)
            out[re.sub(r"\.block\.norm\.", ".1.", k)] = value
    return out


def checkpoint_filter_fn(state_dict: Mapping[str, Tensor], model: nn.Module | None = None) -> dict[str, Tensor]:
    """Hook for ``load_weights`` / ``create_model(pretrained=path)``: official cvnets SSD checkpoints (with an
    ``encoder.*`` AFFNet); any other state dict is returned unchanged."""
    inner = next((state_dict[w] for w in ("state_dict", "model") if isinstance(state_dict.get(w), Mapping)),
                 state_dict)
    if not any(k.startswith("encoder.") for k in inner):
        return dict(inner)
    return convert_official_affnet_ssd(state_dict)


_SRC = ("no reference figure: the official README has no detection results and the paper's COCO table was not "
        "available; params = exact count of the official cvnets SSD layout (80 classes, 320x320)")
_ENTRY = dict(paper="aff", task="detection", num_classes=80, input_size=(3, 320, 320), test_input_size=(3, 64, 64),
              mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), tags=("detection",))


def _register(name: str, backbone: str, params: int, doc: str) -> None:
    def builder(**kw: Any) -> SSDLite:
        return SSDLite(backbone, **kw)

    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = doc
    register_model(builder, name=name, reported=Reported(params=params, resolution=320, params_exact=True,
                                                         source=_SRC), **_ENTRY)


_register("affnet_et_ssdlite", "affnet_et", 1_659_386, "AFFNet-ET (xx_small) + SSDLite, COCO 80 classes, 320x320.")
_register("affnet_t_ssdlite", "affnet_t", 2_674_234, "AFFNet-T (x_small) + SSDLite, COCO 80 classes, 320x320.")
_register("affnet_ssdlite", "affnet", 5_352_666, "AFFNet (small) + SSDLite, COCO 80 classes, 320x320.")


@register_model(paper="aff", task="detection", test_only=True, num_classes=2, input_size=(3, 64, 64),
                test_input_size=(3, 64, 64), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), tags=("detection",))
def test_aff_ssdlite(**kw: Any) -> SSDLite:
    """Tiny AFFNet (``test_aff`` widths) + SSDLite at output strides 8 / 16 / 32 / global, 2 classes, 64x64."""
    args: dict[str, Any] = dict(backbone="test_aff", num_classes=2, output_strides=(8, 16, 32, -1),
                                aspect_ratios=((2,),) * 4, proj_channels=(32, 32, 32, 16), min_scale=0.2,
                                max_scale=0.95)
    args.update(kw)
    return SSDLite(**args)
