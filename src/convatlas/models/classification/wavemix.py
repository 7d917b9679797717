"""WaveMix: token mixing with a parameter-free 2-D Haar DWT (card: wavemix, arXiv 2205.14375,
official code pranavphoenix/WaveMix (pip ``wavemix``), MIT).

Each WaveMix block reduces the channels to C/4, takes a multi-level Haar DWT of the reduced map, and at every
scale j concatenates the approximation LL_j with the three detail bands (-> C channels at H/2^j). Scales are
processed coarse to fine by small 1x1-conv MLPs ending in a stride-2 transposed conv + BN, the coarser output
being concatenated to the next finer scale's input; the block output (B, C, H, W) is added to its input.

Card facts: ImageNet configs from the official ``Saved_weights/ImageNet``; params exactly as the official
package builds them (12,494,536 / 27,857,608 / 49,416,808 / 62,764,776). Submodule names follow the official
package (``reduction``, ``feedforward{j}.{0,3,4,5}``); :func:`checkpoint_filter_fn` maps the stem (``conv`` ->
``stem``) and head (``pool.2`` -> ``head``). WaveMix-Lite's tiniest MNIST/CIFAR models use an upsampling layer
not read on the card (unconfirmed), so they are not registered; ``WaveMix(level=1, stem="lite")`` builds the
Lite family's transposed-conv form. The MAC counter ignores the DWT (adds only). No MACs are reported.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from convatlas.models.backbone import LinearHeadBackbone, checkpoint_seq
from convatlas.ops.wavelets import haar_dwt2d_multilevel
from convatlas.registry import Reported, register_model

__all__ = ["WaveMix", "WaveBlock", "checkpoint_filter_fn"]


def _ff(cin: int, dim: int, mult: int, ff_channel: int, cout: int, dropout: float) -> nn.Sequential:
    # Official indices: 0 conv1x1, 1 GELU, 2 Dropout, 3 conv1x1, 4 ConvTranspose2d(k4, s2, p1), 5 BN.
    return nn.Sequential(
        nn.Conv2d(cin, dim * mult, 1), nn.GELU(), nn.Dropout(dropout), nn.Conv2d(dim * mult, ff_channel, 1),
        nn.ConvTranspose2d(ff_channel, cout, 4, stride=2, padding=1), nn.BatchNorm2d(cout),
    )


class WaveBlock(nn.Module):
    """Multi-level wavelet mixing block: (B, C, H, W) -> (B, C, H, W) (no residual; the model adds it).

    Args:
        dim: C (divisible by 4).
        level: number of DWT scales L (H, W divisible by 2^L).
        mult: MLP expansion (hidden C * mult).
        ff_channel: channels before the transposed conv.
        dropout: dropout inside every MLP.
    """

    def __init__(self, dim: int, level: int = 1, mult: int = 2, ff_channel: int = 16, dropout: float = 0.5) -> None:
        super().__init__()
        if dim % 4:
            raise ValueError(f"WaveBlock: dim must be divisible by 4, got {dim}")
        self.level = level
        self.reduction = nn.Conv2d(dim, dim // 4, 1)
        for j in range(1, level + 1):
            cin = dim if (j == level) else dim + dim // 2  # coarsest: x_L only; others: concat(x_j, y_{j+1})
            cout = dim if j == 1 else dim // 2
            self.add_module(f"feedforward{j}", _ff(cin, dim, mult, ff_channel, cout, dropout))

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


class WaveMix(LinearHeadBackbone):
    """WaveMix classifier: (B, 3, H, W) -> (B, num_classes).

    Args:
        depth: number of WaveMix blocks; final_dim: C; mult / ff_channel / level / dropout: block options.
        stem: ``"pachify"`` (3x3 -> 3x3 -> p x p stride p conv -> GELU -> BN), ``"strided"`` (two stride-s
            3x3 convs) or ``"lite"`` (two stride-1 3x3 convs, WaveMix-Lite).
        patch_size: p for the pachify stem; stride: s for the strided stem.
        in_chans / num_classes: input channels / classes.
    """

    min_input_size = 1

    def __init__(
        self,
        depth: int = 16,
        final_dim: int = 192,
        mult: int = 2,
        ff_channel: int = 192,
        level: int = 3,
        dropout: float = 0.5,
        stem: str = "pachify",
        patch_size: int = 4,
        stride: int = 2,
        in_chans: int = 3,
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        c = final_dim
        self.in_chans, self.level = in_chans, level
        if stem == "pachify":
            self.stem = nn.Sequential(
                nn.Conv2d(in_chans, c // 4, 3, 1, 1), nn.Conv2d(c // 4, c // 2, 3, 1, 1),
                nn.Conv2d(c // 2, c, patch_size, patch_size), nn.GELU(), nn.BatchNorm2d(c),
            )
            self.reduction = patch_size
        elif stem == "strided":
            self.stem = nn.Sequential(nn.Conv2d(in_chans, c // 2, 3, stride, 1), nn.Conv2d(c // 2, c, 3, stride, 1))
            self.reduction = stride * stride
        elif stem == "lite":
            self.stem = nn.Sequential(nn.Conv2d(in_chans, c // 2, 3, 1, 1), nn.Conv2d(c // 2, c, 3, 1, 1))
            self.reduction = 1
        else:
            raise ValueError(f"WaveMix: stem must be 'pachify', 'strided' or 'lite', got {stem!r}")
        self.layers = nn.Sequential(*[WaveBlock(c, level, mult, ff_channel, dropout) for _ in range(depth)])
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
    """Map an official ``wavemix`` package state dict (``conv.*``, ``layers.*``, ``pool.2.*``) to this layout."""
    out = {}
    for k, v in state_dict.items():
        if k.startswith("conv."):
            k = "stem." + k[len("conv."):]
        elif k.startswith("pool.2."):
            k = "head." + k[len("pool.2."):]
        out[k] = v
    return out


_SRC = "card wavemix: official wavemix classes instantiated with the Saved_weights/ImageNet configs"
_ENTRY = dict(paper="wavemix", input_size=(3, 256, 256), test_input_size=(3, 64, 64))


def _rep(params: int, top1: float) -> Reported:
    return Reported(params=params, resolution=256, params_exact=True, source=_SRC, metrics={"imagenet_top1": top1})


@register_model(reported=_rep(12_494_536, 71.18), **_ENTRY)
def wavemix_192_16_l1(**kw: Any) -> WaveMix:
    """WaveMix level 1, C=192, depth 16 (ImageNet 12M checkpoint, 71.18%)."""
    return WaveMix(**{"depth": 16, "final_dim": 192, "ff_channel": 192, "level": 1, **kw})


@register_model(reported=_rep(27_857_608, 75.06), **_ENTRY)
def wavemix_192_16_l3(**kw: Any) -> WaveMix:
    """WaveMix level 3, C=192, depth 16 (README default; ImageNet 28M checkpoint, 75.06%)."""
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


@register_model(paper="wavemix", test_only=True, input_size=(3, 32, 32), test_input_size=(3, 32, 32), num_classes=10)
def test_wavemix(**kw: Any) -> WaveMix:
    """Tiny WaveMix (level 2, C=16, depth 2, pachify 2) for the generic tests."""
    args = dict(depth=2, final_dim=16, ff_channel=16, level=2, patch_size=2, dropout=0.0, num_classes=10)
    args.update(kw)
    return WaveMix(**args)
