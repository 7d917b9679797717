"""WaveMix: token mixing with a parameter-free 2-D Haar DWT (card: wavemix, arXiv 2205.14375,
official code pranavphoenix/WaveMix (pip ``wavemix``), MIT).

Each WaveMix block reduces the channels to C/4, takes a multi-level Haar DWT of the reduced map, and at every
scale j concatenates the approximation LL_j with the three detail bands (-> C channels at H/2^j). Scales are
processed coarse to fine by small 1x1-conv MLPs ending in a stride-2 transposed conv + BN, the coarser output
being concatenated to the next finer scale's input; the block output (B, C, H, W) is added to its input.

Card facts: ImageNet configs from the official ``Saved_weights/ImageNet``; params exactly as the official
package builds them (12,494,536 / 27,857,608 / 49,416,808 / 62,764,776). Submodule names follow the official
package (``reduction``, ``feedforward{j}.{0,3,4,5}``); :func:`checkpoint_filter_fn` maps the stem (``conv`` ->
``stem``) and head (``pool.2`` -> ``head``; the level-1 block's ``feedforward`` -> ``feedforward1``).
Besides the ImageNet configs, every other classification config of the official repository is registered (CIFAR-10/100,
Tiny-ImageNet, Places-365, ImageNet-64 Lite, and the README's WaveMix-Lite-8/10, 8/5, 32/7, 64/6 whose exact
counts 3,566 / 7,156 / 37,058 / 520,106 are reproduced; the two tiniest use parameter-free x2 upsampling instead
of transposed convs, ``upsample="bilinear"``: mode unconfirmed). Segmentation heads:
``convatlas.models.segmentation.wavemix_seg``; the x2 super-resolution head (``wavemix.sisr``):
``convatlas.models.restoration.wavemix_sr``.
The MAC counter ignores the DWT (adds only). No MACs are reported (the paper's tables past its Table 1 were not
reachable offline; Table 1 of arXiv v5 gives Places-365 56.45 % at 28 M params, while the official Places-365
checkpoint registered here, 28,449,261 params, is named 54.94 %: which run gives 56.45 is not stated).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from convatlas.models.backbone import LinearHeadBackbone, checkpoint_seq
from convatlas.ops.wavelets import haar_dwt2d_multilevel
from convatlas.registry import Reported, register_model

__all__ = ["CIFAR10_RECIPE", "WaveMix", "WaveBlock", "checkpoint_filter_fn", "wavemix_stem"]


def _ff(cin: int, dim: int, mult: int, ff_channel: int, cout: int, dropout: float,
        upsample: str = "transposed") -> nn.Sequential:
    """Official indices: 0 conv1x1, 1 GELU, 2 Dropout, 3 conv1x1, 4 ConvTranspose2d(k4, s2, p1), 5 BN.

    ``upsample="bilinear"``/``"nearest"`` (WaveMix-Lite's tiniest models): index 3 maps straight to ``cout``
    channels and index 4 is a parameter-free x2 ``nn.Upsample`` (``ff_channel`` unused).
    """
    if upsample == "transposed":
        return nn.Sequential(
            nn.Conv2d(cin, dim * mult, 1), nn.GELU(), nn.Dropout(dropout), nn.Conv2d(dim * mult, ff_channel, 1),
            nn.ConvTranspose2d(ff_channel, cout, 4, stride=2, padding=1), nn.BatchNorm2d(cout),
        )
    if upsample not in ("bilinear", "nearest"):
        raise ValueError(f"WaveBlock: upsample must be 'transposed', 'bilinear' or 'nearest', got {upsample!r}")
    return nn.Sequential(
        nn.Conv2d(cin, dim * mult, 1), nn.GELU(), nn.Dropout(dropout), nn.Conv2d(dim * mult, cout, 1),
        nn.Upsample(scale_factor=2, mode=upsample), nn.BatchNorm2d(cout),
    )


class WaveBlock(nn.Module):
    """Multi-level wavelet mixing block: (B, C, H, W) -> (B, C, H, W) (no residual; the model adds it).

    Args:
        dim: C (divisible by 4).
        level: number of DWT scales L (H, W divisible by 2^L).
        mult: MLP expansion (hidden C * mult).
        ff_channel: channels before the transposed conv (default 16, the official default). The parameter-free
            upsampling has no such layer: there ``ff_channel`` must be left out or equal ``dim``.
        dropout: dropout inside every MLP.
        upsample: ``"transposed"`` (stride-2 transposed conv, the default everywhere) or ``"bilinear"`` /
            ``"nearest"`` (parameter-free x2 upsampling, WaveMix-Lite's tiniest models).
    """

    def __init__(self, dim: int, level: int = 1, mult: int = 2, ff_channel: int | None = None,
                 dropout: float = 0.5, upsample: str = "transposed") -> None:
        super().__init__()
        if dim % 4:
            raise ValueError(f"WaveBlock: dim must be divisible by 4, got {dim}")
        if upsample != "transposed" and ff_channel not in (None, dim):
            raise ValueError(
                f"WaveBlock: ff_channel={ff_channel} only applies to upsample='transposed'; with {upsample!r} "
                f"upsampling the MLP maps straight to the output channels (leave ff_channel out or set it to {dim})"
            )
        ff_channel = 16 if ff_channel is None else ff_channel
        self.level = level
        self.reduction = nn.Conv2d(dim, dim // 4, 1)
        for j in range(1, level + 1):
            cin = dim if (j == level) else dim + dim // 2  # coarsest: x_L only; others: concat(x_j, y_{j+1})
            cout = dim if j == 1 else dim // 2
            self.add_module(f"feedforward{j}", _ff(cin, dim, mult, ff_channel, cout, dropout, upsample))

    def forward(self, x: Tensor) -> Tensor:
        r = self.reduction(x)
        b = r.shape[0]
        # One DWT of r per scale: the J-level transform provides LL_j at each level and the j-th details.
        lls, dets = [], []
        ll = r
        for _ in range(self.level):
            ll, det = haar_dwt2d_multilevel(ll, 1)
            lls.append(ll)
            dets.append(det[0])
        y = None
        for j in range(self.level, 0, -1):
            d = dets[j - 1]
            xj = torch.cat((lls[j - 1], d.reshape(b, -1, d.shape[-2], d.shape[-1])), dim=1)  # channel-major bands
            if y is not None:
                xj = torch.cat((xj, y), dim=1)
            y = getattr(self, f"feedforward{j}")(xj)
        return y


def wavemix_stem(stem: str, dim: int, in_chans: int = 3, patch_size: int = 4,
                 stride: int = 2) -> tuple[nn.Sequential, int]:
    """The WaveMix stems and their total stride: (B, in_chans, H, W) -> (B, dim, H/r, W/r), returns (stem, r).

    ``"pachify"``: 3x3 (C/4) -> 3x3 (C/2) -> p x p stride-p conv (C) -> GELU -> BN; ``"strided"``: two stride-s
    3x3 convs (C/2, C), no norm; ``"lite"``: the strided stem with s = 1 (WaveMix-Lite, CIFAR/MNIST configs).
    """
    c = dim
    if stem == "pachify":
        return nn.Sequential(
            nn.Conv2d(in_chans, c // 4, 3, 1, 1), nn.Conv2d(c // 4, c // 2, 3, 1, 1),
            nn.Conv2d(c // 2, c, patch_size, patch_size), nn.GELU(), nn.BatchNorm2d(c),
        ), patch_size
    if stem in ("strided", "lite"):
        s = 1 if stem == "lite" else stride
        return nn.Sequential(nn.Conv2d(in_chans, c // 2, 3, s, 1), nn.Conv2d(c // 2, c, 3, s, 1)), s * s
    raise ValueError(f"WaveMix: stem must be 'pachify', 'strided' or 'lite', got {stem!r}")


class WaveMix(LinearHeadBackbone):
    """WaveMix classifier: (B, in_chans, H, W) -> (B, num_classes).

    Args:
        depth: number of WaveMix blocks; final_dim: C; mult / ff_channel (default C) / level / dropout / upsample:
            block options.
        stem: ``"pachify"`` (3x3 -> 3x3 -> p x p stride p conv -> GELU -> BN), ``"strided"`` (two stride-s
            3x3 convs) or ``"lite"`` (two stride-1 3x3 convs, WaveMix-Lite); see :func:`wavemix_stem`.
        patch_size: p for the pachify stem; stride: s for the strided stem.
        in_chans / num_classes: input channels / classes.
    """

    min_input_size = 1

    def __init__(
        self,
        depth: int = 16,
        final_dim: int = 192,
        mult: int = 2,
        ff_channel: int | None = None,
        level: int = 3,
        dropout: float = 0.5,
        stem: str = "pachify",
        patch_size: int = 4,
        stride: int = 2,
        in_chans: int = 3,
        num_classes: int = 1000,
        upsample: str = "transposed",
    ) -> None:
        super().__init__()
        c = final_dim
        self.in_chans, self.level = in_chans, level
        self.stem, self.reduction = wavemix_stem(stem, c, in_chans, patch_size, stride)
        ffc = c if ff_channel is None else ff_channel
        self.layers = nn.Sequential(*[WaveBlock(c, level, mult, ffc, dropout, upsample) for _ in range(depth)])
        self.num_features = c
        self.feature_info = [{"num_chs": c, "reduction": self.reduction, "module": "layers"}]
        self.input_multiple = self.reduction * 2**level
        self.reset_classifier(num_classes)

    def forward_stages(self, x: Tensor, max_index: int | None = None) -> list[Tensor]:
        """One resolution-preserving stage: [(B, C, H/r, W/r)]."""
        self._check(x)
        x = self.stem(x)
        for blk in self.layers:
            if self.grad_checkpointing and self.training:
                x = checkpoint_seq(nn.Sequential(blk), x) + x
            else:
                x = blk(x) + x
        return [x]


def checkpoint_filter_fn(state_dict: dict[str, Tensor], model: nn.Module | None = None) -> dict[str, Tensor]:
    """Map an official ``wavemix`` state dict (``conv.*``, ``layers.*`` incl. level-1 ``feedforward.*``,
    ``pool.2.*``) to this layout."""
    out = {}
    for k, v in state_dict.items():
        parts = k.split(".")
        if len(parts) > 3 and parts[0] == "layers" and parts[2] == "feedforward":
            k = ".".join(parts[:2] + ["feedforward1"] + parts[3:])  # official Level1Waveblock: ``feedforward``
        if k.startswith("conv."):
            k = "stem." + k[len("conv."):]
        elif k.startswith("pool.2."):
            k = "head." + k[len("pool.2."):]
        out[k] = v
    return out


# Official training procedure (Image_Classification/example_cifar10.py; the ImageNet scripts were not read): Lion
# (lr 1e-4, weight decay 1e-2) until 20 epochs without test-accuracy improvement, then reload the best weights and
# continue with SGD (lr 1e-3, momentum 0.9) with the same patience; batch 512, AMP, CIFAR mean/std normalisation
# only (no augmentation), cross-entropy. (The engine's trainer is AdamW-only, so this is recorded, not wired.)
CIFAR10_RECIPE: dict[str, Any] = {
    "stages": [{"optimizer": "lion", "lr": 1e-4, "weight_decay": 1e-2, "patience_epochs": 20},
               {"optimizer": "sgd", "lr": 1e-3, "momentum": 0.9, "patience_epochs": 20, "init": "best of stage 1"}],
    "batch_size": 512, "amp": True, "augmentation": None,
    "mean": (0.4914, 0.4822, 0.4465), "std": (0.2470, 0.2435, 0.2616),
}  # fmt: skip

_SRC = "card wavemix: official wavemix classes instantiated with the Saved_weights/ImageNet configs"
_ENTRY = dict(paper="wavemix", input_size=(3, 256, 256), test_input_size=(3, 64, 64))


def _rep(params: int, top1: float) -> Reported:
    return Reported(params=params, resolution=256, params_exact=True, source=_SRC, metrics={"imagenet_top1": top1})


@register_model(reported=_rep(12_494_536, 71.18), **_ENTRY)
def wavemix_192_16_l1(**kw: Any) -> WaveMix:
    """WaveMix level 1, C=192, depth 16 (ImageNet 12M checkpoint, 71.18%; same config: 'wavemix_lite_70.66',
    Galaxy10 90.23% with 10 classes)."""
    return WaveMix(**{"depth": 16, "final_dim": 192, "ff_channel": 192, "level": 1, **kw})


@register_model(reported=_rep(27_857_608, 75.06), **_ENTRY)
def wavemix_192_16_l3(**kw: Any) -> WaveMix:
    """WaveMix level 3, C=192, depth 16 (README default; ImageNet 28M checkpoint 75.06%, also 75.04/73.06/71.49;
    same config: Galaxy10 95.42% (10 classes), Tiny-ImageNet 71.69% at 64 px / 78.76% at 128 px (200 classes))."""
    return WaveMix(**{"depth": 16, "final_dim": 192, "ff_channel": 192, "level": 3, **kw})


@register_model(reported=_rep(49_416_808, 73.0), **_ENTRY)
def wavemix_256_16_l3(**kw: Any) -> WaveMix:
    """WaveMix level 3, C=256, depth 16 (ImageNet checkpoint 'wavemix_73')."""
    return WaveMix(**{"depth": 16, "final_dim": 256, "ff_channel": 256, "level": 3, **kw})


@register_model(reported=_rep(62_764_776, 70.42), **_ENTRY)
def wavemix_256_16_l4_strided(**kw: Any) -> WaveMix:
    """WaveMix level 4, C=256, depth 16, strided stem (stride 2) (ImageNet checkpoint 70.42%)."""
    return WaveMix(**{"depth": 16, "final_dim": 256, "ff_channel": 256, "level": 4, "stem": "strided",
                      "stride": 2, **kw})


# Dataset-specific configurations of the official repository (``Saved_weights/<dataset>/*.py``; the README's
# WaveMix-Lite parameter-efficiency table). name: (config, input size, classes, params, metric name, value, source).
# Counts of the checkpoint configs are those of the official layer shapes (reproduced in closed form by the tests);
# the four Lite-C/D counts are the README's own exact figures (3,566 / 7,156 / 37,058 / 520,106), reproduced here
# with 1-channel input for the (Fashion-)MNIST models and mult 2. The README says the tiniest models replace the
# transposed convs by upsampling: the counts fix which (Lite-8/10 and Lite-32/7 match only with upsampling, Lite-8/5
# and Lite-64/6 only with transposed convs of ff_channel = C); the upsampling mode is not given (bilinear here).
_LITE = dict(level=1, stem="lite")
_SRC_CKPT = "card wavemix: official Saved_weights/<dataset> config; count from the official layer shapes"
_SRC_LITE = "official README (WaveMix-Lite parameter efficiency table): exact parameter count"
_VARIANTS: dict[str, tuple[dict[str, Any], tuple[int, int, int], int, int, str, float, str]] = {
    "wavemixlite_8_10_mnist": (dict(depth=10, final_dim=8, upsample="bilinear", **_LITE), (1, 28, 28), 10, 3_566,
                               "mnist_top1_at_least", 99.0, _SRC_LITE),
    "wavemixlite_8_5_fmnist": (dict(depth=5, final_dim=8, ff_channel=8, **_LITE), (1, 28, 28), 10, 7_156,
                               "fashion_mnist_top1_at_least", 90.0, _SRC_LITE),
    "wavemixlite_32_7_cifar10": (dict(depth=7, final_dim=32, upsample="bilinear", **_LITE), (3, 32, 32), 10, 37_058,
                                 "cifar10_top1_at_least", 80.0, _SRC_LITE),
    "wavemixlite_64_6_cifar10": (dict(depth=6, final_dim=64, ff_channel=64, **_LITE), (3, 32, 32), 10, 520_106,
                                 "cifar10_top1_at_least", 90.0, _SRC_LITE),
    "wavemix_144_7_cifar10": (dict(depth=7, final_dim=144, ff_channel=144, **_LITE), (3, 32, 32), 10, 3_042_550,
                              "cifar10_top1", 94.58, _SRC_CKPT),
    "wavemix_320_8_cifar10": (dict(depth=8, final_dim=320, ff_channel=320, **_LITE), (3, 32, 32), 10, 17_073_610,
                              "cifar10_top1", 95.37, _SRC_CKPT),
    "wavemix_256_8_cifar100": (dict(depth=8, final_dim=256, ff_channel=256, **_LITE), (3, 32, 32), 100, 10_954_084,
                               "cifar100_top1", 77.82, _SRC_CKPT),
    "wavemix_256_10_cifar100": (dict(depth=10, final_dim=256, ff_channel=256, **_LITE), (3, 32, 32), 100,
                                13_611_492, "cifar100_top1", 78.81, _SRC_CKPT),
    "wavemix_256_12_tinyimagenet": (dict(depth=12, final_dim=256, ff_channel=256, **_LITE), (3, 64, 64), 200,
                                    16_294_600, "tinyimagenet_top1", 62.51, _SRC_CKPT),
    "wavemixlite_256_7_imagenet64": (dict(depth=7, final_dim=256, ff_channel=256, **_LITE),
                                     (3, 64, 64), 1000, 9_856_680, "", 0.0,
                                     "card wavemix: official imagenet64_wavemix_256_lite.py; "
                                     "count from its layer shapes"),
    # Places-365: level 2, C=256, depth 12, pachify p=8 (checkpoint 54.94%; the paper's Places-365 row: 28 M).
    "wavemix_256_12_l2_places365": (dict(depth=12, final_dim=256, ff_channel=256, level=2, patch_size=8),
                                    (3, 256, 256), 365, 28_449_261, "places365_top1", 54.94, _SRC_CKPT),
}


def _register_variant(name: str) -> None:
    cfg, size, classes, params, metric, value, src = _VARIANTS[name]
    # Checkpoint configs train with dropout 0.5 (as the ImageNet ones); the README Lite models use the Lite
    # class default 0.
    drop = 0.0 if src == _SRC_LITE else 0.5
    args = {"ff_channel": cfg["final_dim"], "dropout": drop, **cfg, "in_chans": size[0], "num_classes": classes}

    def builder(**kw: Any) -> WaveMix:
        return WaveMix(**{**args, **kw})

    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = f"WaveMix{'-Lite' if 'lite' in name else ''} {name} ({src})."
    register_model(
        builder, paper="wavemix", name=name, input_size=size, num_classes=classes,
        test_input_size=(size[0], min(size[1], 64), min(size[2], 64)),
        mean=(0.5,) * size[0], std=(0.5,) * size[0],
        reported=Reported(params=params, resolution=size[1], params_exact=True, source=src,
                          metrics={metric: value} if metric else {}),
        tags=("lite",) if cfg.get("stem") == "lite" else (),
    )


for _name in _VARIANTS:
    _register_variant(_name)


@register_model(paper="wavemix", test_only=True, input_size=(3, 32, 32), test_input_size=(3, 32, 32), num_classes=10)
def test_wavemix(**kw: Any) -> WaveMix:
    """Tiny WaveMix (level 2, C=16, depth 2, pachify 2) for the generic tests."""
    args = dict(depth=2, final_dim=16, ff_channel=16, level=2, patch_size=2, dropout=0.0, num_classes=10)
    args.update(kw)
    return WaveMix(**args)
