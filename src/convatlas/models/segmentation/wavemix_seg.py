"""WaveMix for semantic segmentation (card: wavemix, arXiv 2205.14375, official code pranavphoenix/WaveMix, MIT).

The classification trunk (stem + resolution-preserving WaveMix blocks, :mod:`convatlas.models.classification.wavemix`)
followed by the official decoder: stride-2 transposed convs (k4, p1) undoing the stem's downsampling, then a 1x1
conv to the classes: (B, 3, H, W) -> logits (B, num_classes, H, W). No norm or activation in the decoder (as
official).

Card facts (official code read):
- ``wavemix.SemSegment.WaveMix`` (package default): level 4, C = 256, depth 16, strided stem s = 2, decoder
  ConvT(C -> C/2) -> ConvT(C/2 -> C/4) -> Conv1x1(C/4 -> 20). 63,164,628 params from its layer shapes: the paper's
  Cityscapes row "82.70 mIoU, 63 M" (v5 table).
- ``Saved_weights/cityscapes/Wavemix_28M_83.04.py``: the ImageNet 28M trunk (level 3, C = 192, depth 16, pachify
  p = 4) with its classifier replaced by ConvT(192 -> 128) -> ConvT(128 -> 64) -> Conv1x1(64 -> 20): 28,190,388
  params; README: Cityscapes val single-scale 83.04 mIoU.
- ``SemanticSegmentation_WaveMixLite.py``: WaveMix-Lite level 1, C = 256, depth 7, strided stem s = 2, the
  SemSegment decoder, 20 classes: 10,256,532 params; the WaveMix-Lite README quotes 75.32 mIoU on Cityscapes val
  (that this script is the 75.32 model is our reading, unconfirmed).
- 20 classes = the 19 Cityscapes classes + ignore as a class (official). Dropout 0.5 in the checkpoint configs,
  0 in ``SemSegment``'s default. The training crop size is not in the scripts read (unconfirmed); registered at
  (3, 512, 1024).
- Key names: ``stem`` (official ``conv``), ``layers``, ``decoder`` (official ``expand``, or ``pool`` for the 28M
  script); :func:`checkpoint_filter_fn` maps them.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from torch import Tensor, nn

from convatlas.layers.validation import check_input
from convatlas.models.classification.wavemix import WaveBlock, checkpoint_filter_fn as _cls_filter, wavemix_stem
from convatlas.registry import Reported, register_model

__all__ = ["WaveMixSegmentation", "checkpoint_filter_fn"]


class WaveMixSegmentation(nn.Module):
    """WaveMix segmenter: (B, in_chans, H, W) -> (B, num_classes, H, W) (H, W divisible by r * 2^level).

    Args:
        depth / final_dim / mult / ff_channel / level / dropout / upsample: WaveMix trunk (see ``WaveMix``).
        stem / patch_size / stride: the trunk's stem (total stride r must be a power of two).
        decoder_dims: widths of the transposed convs (one per factor 2 of r); default C/2, C/4, ...
        in_chans / num_classes: input channels / classes.
    """

    def __init__(
        self,
        depth: int = 16,
        final_dim: int = 256,
        mult: int = 2,
        ff_channel: int | None = None,
        level: int = 4,
        dropout: float = 0.0,
        stem: str = "strided",
        patch_size: int = 4,
        stride: int = 2,
        decoder_dims: Sequence[int] | None = None,
        in_chans: int = 3,
        num_classes: int = 20,
        upsample: str = "transposed",
    ) -> None:
        super().__init__()
        c = final_dim
        self.in_chans, self.num_classes = in_chans, num_classes
        self.stem, self.reduction = wavemix_stem(stem, c, in_chans, patch_size, stride)
        ups = int(math.log2(self.reduction))
        if 2**ups != self.reduction:
            raise ValueError(f"WaveMixSegmentation: the stem stride must be a power of two, got {self.reduction}")
        dims = list(decoder_dims) if decoder_dims is not None else [c // 2 ** (i + 1) for i in range(ups)]
        if len(dims) != ups:
            raise ValueError(
                f"WaveMixSegmentation: {ups} decoder widths needed for stem stride {self.reduction}, got {dims}")
        ffc = c if ff_channel is None else ff_channel
        self.layers = nn.Sequential(*[WaveBlock(c, level, mult, ffc, dropout, upsample) for _ in range(depth)])
        dec, cin = [], c
        for d in dims:
            dec.append(nn.ConvTranspose2d(cin, d, 4, stride=2, padding=1))
            cin = d
        dec.append(nn.Conv2d(cin, num_classes, 1))
        self.decoder = nn.Sequential(*dec)
        self.input_multiple = self.reduction * 2**level
        self.num_features = c

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, C_in, H, W) -> trunk features (B, C, H/r, W/r)."""
        check_input(type(self).__name__, x, ndim=4, channels=self.in_chans, multiple_of=self.input_multiple)
        x = self.stem(x)
        for blk in self.layers:
            x = blk(x) + x
        return x

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, H, W) -> logits (B, num_classes, H, W)."""
        return self.decoder(self.forward_features(x))


def checkpoint_filter_fn(state_dict: dict[str, Tensor], model: nn.Module | None = None) -> dict[str, Tensor]:
    """Official keys (``conv.*``, ``layers.*``, ``expand.*`` or ``pool.*``) -> this layout."""
    out = {}
    for k, v in _cls_filter(state_dict).items():
        for old in ("expand.", "pool."):
            if k.startswith(old):
                k = "decoder." + k[len(old):]
        out[k] = v
    return out


_CITYSCAPES = dict(paper="wavemix", task="segmentation2d", input_size=(3, 512, 1024), test_input_size=(3, 64, 64),
                   num_classes=20, tags=("segmentation", "cityscapes"))


@register_model(reported=Reported(params=63_164_628, params_exact=True, metrics={"cityscapes_val_miou": 82.70},
                                  source="paper v5 table (82.70 mIoU, 63 M); official wavemix.SemSegment defaults, "
                                         "count from its layer shapes"), **_CITYSCAPES)
def wavemix_seg_256_16_l4(**kw: Any) -> WaveMixSegmentation:
    """WaveMix segmenter, level 4, C=256, depth 16, strided stem s=2 (official SemSegment; Cityscapes 63 M)."""
    return WaveMixSegmentation(**{"depth": 16, "final_dim": 256, "ff_channel": 256, "level": 4, "stem": "strided",
                                  "stride": 2, **kw})


@register_model(reported=Reported(params=28_190_388, params_exact=True, metrics={"cityscapes_val_miou": 83.04},
                                  source="official Saved_weights/cityscapes/Wavemix_28M_83.04.py, README 83.04 mIoU; "
                                         "count from its layer shapes"), **_CITYSCAPES)
def wavemix_seg_192_16_l3(**kw: Any) -> WaveMixSegmentation:
    """WaveMix segmenter on the ImageNet 28M trunk (level 3, C=192, depth 16, pachify p=4), decoder 128/64."""
    return WaveMixSegmentation(**{"depth": 16, "final_dim": 192, "ff_channel": 192, "level": 3, "stem": "pachify",
                                  "patch_size": 4, "decoder_dims": (128, 64), "dropout": 0.5, **kw})


@register_model(reported=Reported(params=10_256_532, params_exact=True, metrics={"cityscapes_val_miou": 75.32},
                                  source="official SemanticSegmentation_WaveMixLite.py (count from its layer shapes); "
                                         "README WaveMix-Lite 75.32 mIoU (attribution to this script unconfirmed)"),
                **_CITYSCAPES)
def wavemixlite_seg_256_7(**kw: Any) -> WaveMixSegmentation:
    """WaveMix-Lite segmenter, level 1, C=256, depth 7, strided stem s=2."""
    return WaveMixSegmentation(**{"depth": 7, "final_dim": 256, "ff_channel": 256, "level": 1, "stem": "strided",
                                  "stride": 2, "dropout": 0.5, **kw})


@register_model(paper="wavemix", task="segmentation2d", test_only=True, input_size=(3, 32, 32),
                test_input_size=(3, 32, 32), num_classes=5)
def test_wavemix_seg(**kw: Any) -> WaveMixSegmentation:
    """Tiny WaveMix segmenter (level 2, C=16, depth 2, strided s=2) for the generic tests."""
    args = dict(depth=2, final_dim=16, ff_channel=16, level=2, stem="strided", stride=2, num_classes=5)
    args.update(kw)
    return WaveMixSegmentation(**args)
