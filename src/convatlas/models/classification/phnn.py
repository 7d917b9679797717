"""PHC ResNets and VGG (card: phnn, arXiv 2110.04176, official code eleGAN23/HyperNets, MIT).

CIFAR-style networks whose every convolution is a parameterised hypercomplex convolution
(:class:`~convatlas.layers.phc_conv.PHConv`): ResNet18/50/152 "Large" (stem 60, stages 60/120/240/516, widths
divisible by 2, 3 and 4) and VGG19-BN "Large" (24..648 widths, PHM classifier). Inputs (B, C, 32, 32) where
C = 4 (grayscale channel + RGB, :func:`add_grayscale_channel`) for n = 2 or 4 and C = 3 for n = 3, as in the
official code.

Card facts / decisions:
- The official PHConv creates a ``bias`` it never adds. Here convs inside the networks have no bias, so the
  registered counts are the card's bracketed figures (official count minus unused biases), reproduced exactly;
  e.g. ResNet18Large n=4: 2,731,578 (official ``cnt`` incl. unused biases: 2,736,258).
- The official head is ``avg_pool2d(4)`` (ResNet) / flatten of a 1x1 map (VGG) at 32x32; here global average
  pooling, identical at 32x32 and defined at other sizes.
- ``algebra="real"`` builds the real-valued baseline (nn.Conv2d, nn.Linear) and ``algebra="quaternion"`` the
  quaternion baseline (n = 4, Hamilton product fixed).
- Besides the "Large" networks, the official ``phcresnet.py`` builds non-large CIFAR ResNets (stem and stages
  64/64/128/256/512, ``PHCResNet18()`` / ``PHCResNet50(channels=4, n=4)``): registered as ``phc_resnet{18,50}_
  {real,n2,n4}``. Real counts are the card's (11,173,962 / 23,520,842); the PHC counts (n=2: 5,594,794 /
  11,797,938; n=4: 2,805,962 / 5,938,954) follow from the official layer shapes (unused biases excluded) and are
  re-derived in the tests. n = 3 is impossible at these widths (64 is not divisible by 3), as the card notes.
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from convatlas.layers.phc_conv import PHConv, PHMLinear
from convatlas.models.backbone import LinearHeadBackbone
from convatlas.registry import Reported, register_model

__all__ = ["PHCResNet", "PHCVGG", "add_grayscale_channel", "checkpoint_filter_fn", "CIFAR_RECIPE",
           "cifar_train_config"]

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


def add_grayscale_channel(x: Tensor) -> Tensor:
    """(B, 3, H, W) RGB -> (B, 4, H, W) with a luma channel first (the official ``Concat_GrayScale``)."""
    gray = 0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
    return torch.cat([gray, x], dim=1)


def _conv_factory(n: int, algebra: str, real_bias: bool = False) -> Callable[..., nn.Module]:
    """conv(cin, cout, k, stride, padding) for the chosen algebra.

    PHC convs carry no bias (every conv is followed by BN; the official one is created but never added); the
    real VGG baseline's nn.Conv2d keeps its bias as in the official ``models/real/vgg.py`` (``real_bias``).
    """
    if algebra == "real":
        return lambda cin, cout, k, stride=1, padding=0: nn.Conv2d(cin, cout, k, stride, padding, bias=real_bias)
    return lambda cin, cout, k, stride=1, padding=0: PHConv(
        n, cin, cout, k, stride, padding, bias=False, algebra=algebra
    )


def _linear_factory(n: int, algebra: str) -> Callable[[int, int], nn.Module]:
    if algebra == "real":
        return nn.Linear
    return partial(PHMLinear, n)


class BasicBlock(nn.Module):
    """Two 3x3 convs + shortcut (1x1 conv + BN when the shape changes): (B, C_in, H, W) -> (B, C, H/s, W/s)."""

    expansion = 1

    def __init__(self, conv: Callable[..., nn.Module], cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv(cin, planes, 3, stride, 1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv(planes, planes, 3, 1, 1)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != planes:
            self.shortcut = nn.Sequential(conv(cin, planes, 1, stride, 0), nn.BatchNorm2d(planes))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride) -> 1x1 (x4) + shortcut: (B, C_in, H, W) -> (B, 4*planes, H/s, W/s)."""

    expansion = 4

    def __init__(self, conv: Callable[..., nn.Module], cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = conv(cin, planes, 1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv(planes, planes, 3, stride, 1)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv(planes, out, 1)
        self.bn3 = nn.BatchNorm2d(out)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != out:
            self.shortcut = nn.Sequential(conv(cin, out, 1, stride, 0), nn.BatchNorm2d(out))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class PHCResNet(LinearHeadBackbone):
    """CIFAR ResNet with PHC convolutions: (B, in_chans, H, W) -> (B, num_classes).

    Args:
        block: ``"basic"`` or ``"bottleneck"``.
        layers: blocks per stage.
        widths: stem width followed by the four stage widths (``planes``), e.g. (60, 60, 120, 240, 516).
        n: hypercomplex dimension.
        algebra: ``"learned"`` (PHC), ``"quaternion"`` (n = 4 fixed Hamilton product) or ``"real"`` (nn.Conv2d).
        in_chans: 4 (gray + RGB) for n = 2/4, 3 for n = 3.
        num_classes: classifier outputs (head is a plain nn.Linear, as in the official code).
    """

    min_input_size = 1

    def __init__(
        self,
        block: str = "basic",
        layers: Sequence[int] = (2, 2, 2, 2),
        widths: Sequence[int] = (60, 60, 120, 240, 516),
        n: int = 4,
        algebra: str = "learned",
        in_chans: int = 4,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        blk = {"basic": BasicBlock, "bottleneck": Bottleneck}[block]
        conv = _conv_factory(n, algebra)
        self.in_chans, self.n = in_chans, n
        self.stem = nn.Sequential(conv(in_chans, widths[0], 3, 1, 1), nn.BatchNorm2d(widths[0]), nn.ReLU())
        cin = widths[0]
        stages, self.feature_info = [], []
        for i, (planes, depth) in enumerate(zip(widths[1:], layers)):
            stride = 1 if i == 0 else 2
            blocks = []
            for j in range(depth):
                blocks.append(blk(conv, cin, planes, stride if j == 0 else 1))
                cin = planes * blk.expansion
            stages.append(nn.Sequential(*blocks))
            self.feature_info.append({"num_chs": cin, "reduction": 2**i, "module": f"stages.{i}"})
        self.stages = nn.Sequential(*stages)
        self.num_features = cin
        self.reset_classifier(num_classes)


VGG19_LARGE = (24, 24, "M", 72, 72, "M", 216, 216, 216, 216, "M", 648, 648, 648, 648, "M", 648, 648, 648, 648, "M")


class PHCVGG(LinearHeadBackbone):
    """VGG-BN with PHC convolutions and a PHM classifier: (B, in_chans, 32, 32) -> (B, num_classes).

    Args:
        cfg: widths with ``"M"`` for 2x2 max-pooling (default VGG19 'E_large').
        hidden: classifier width (516 for 'large').
        n / algebra / in_chans / num_classes: as in :class:`PHCResNet`.
        drop_rate: dropout before each PHM layer (official ``nn.Dropout()`` = 0.5).

    Features are globally averaged (the official code flattens a 1x1 map at 32x32: the same thing).
    """

    min_input_size = 1
    pre_head_modules = ("pre_logits",)

    def __init__(
        self,
        cfg: Sequence[int | str] = VGG19_LARGE,
        hidden: int = 516,
        n: int = 4,
        algebra: str = "learned",
        in_chans: int = 4,
        num_classes: int = 10,
        drop_rate: float = 0.5,
    ) -> None:
        super().__init__()
        conv = _conv_factory(n, algebra, real_bias=True)
        linear = _linear_factory(n, algebra)
        self.in_chans, self.n = in_chans, n
        self.stem = nn.Identity()
        stages: list[nn.Module] = []
        cur: list[nn.Module] = []
        cin, reduction = in_chans, 1
        self.feature_info = []
        for v in cfg:
            if v == "M":
                cur.append(nn.MaxPool2d(2, 2))
                reduction *= 2
                stages.append(nn.Sequential(*cur))
                self.feature_info.append({"num_chs": cin, "reduction": reduction, "module": f"stages.{len(stages) - 1}"})
                cur = []
            else:
                c = int(v)
                # The official layers add no conv bias either (PHConv ignores it); BN follows.
                cur += [conv(cin, c, 3, 1, 1), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
                cin = c
        if cur:
            raise ValueError("PHCVGG: cfg must end with 'M'")
        self.stages = nn.Sequential(*stages)
        self.num_features = cin
        self.pre_logits = nn.Sequential(
            nn.Dropout(drop_rate), linear(cin, hidden), nn.ReLU(True),
            nn.Dropout(drop_rate), linear(hidden, hidden), nn.ReLU(True),
        )
        self.head_hidden_size = hidden
        self.reset_classifier(num_classes)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.pre_logits(x.mean((2, 3)))
        return x if pre_logits else self.head(x)


def checkpoint_filter_fn(state_dict: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """Map an official HyperNets image-classification checkpoint (PHCResNet / PHCResNetLarge / PHCVGG) to
    ``model``'s layout: ``conv1``/``bn1``/``layerX``/``linear`` (ResNet) or flat ``features.N`` /
    ``classifier.{1,4,6}`` (VGG); PHConv/PHM ``a``/``s`` become ``A``/``F`` (``a``/``s`` for PHMLinear) and the
    official PHConv biases, never added in its forward, are dropped (so the function is unchanged)."""
    import re

    flat: dict[int, str] = {}
    if isinstance(model, PHCVGG):
        i = 0
        for si, stage in enumerate(model.stages):
            for li in range(len(stage)):
                flat[i] = f"stages.{si}.{li}"
                i += 1
    conv_names = {n for n, m in model.named_modules() if isinstance(m, PHConv)}
    out = {}
    for k, v in state_dict.items():
        nk = k
        if isinstance(model, PHCResNet):
            nk = re.sub(r"^conv1\.", "stem.0.", nk)
            nk = re.sub(r"^bn1\.", "stem.1.", nk)
            nk = re.sub(r"^layer(\d)\.", lambda m: f"stages.{int(m[1]) - 1}.", nk)
            nk = re.sub(r"^linear\.", "head.", nk)
        else:
            nk = re.sub(r"^features\.(\d+)\.", lambda m: flat[int(m[1])] + ".", nk)
            nk = re.sub(r"^classifier\.([14])\.", lambda m: f"pre_logits.{m[1]}.", nk)
            nk = re.sub(r"^classifier\.6\.", "head.", nk)
        mod, _, leaf = nk.rpartition(".")
        if mod in conv_names:
            if leaf == "bias" and getattr(model.get_submodule(mod), "bias", None) is None:
                continue
            leaf = {"a": "A", "s": "F"}.get(leaf, leaf)
        out[f"{mod}.{leaf}" if mod else leaf] = v
    return out


# Official training procedure (image-classification/main.py + configs/config_{resnet50,vgg11}_cifar.txt): SGD,
# momentum 0.9, weight decay 5e-4 (on every parameter), CosineAnnealingLR(T_max=200) without warm-up, 200 epochs,
# batch 128, lr 0.1 for the ResNets and 0.01 for VGG; 4-channel gray+RGB input (``quat_data``) for n = 2/4.
CIFAR_RECIPE: dict = {
    "optimizer": "sgd", "momentum": 0.9, "weight_decay": 5e-4, "epochs": 200, "batch_size": 128,
    "lr": {"resnet": 0.1, "vgg": 0.01}, "schedule": "cosine, T_max 200 epochs, no warm-up, to lr 0",
}  # fmt: skip


def cifar_train_config(arch: str = "resnet", **overrides):  # noqa: ANN201 (engine TrainConfig, imported lazily)
    """Engine ``TrainConfig`` of the official CIFAR recipe for ``arch`` = ``"resnet"`` or ``"vgg"``.

    Differences from the official loop: the engine steps the cosine per optimizer step (official: per epoch) and
    applies SGD weight decay to >= 2-D weights only (official: every parameter, BN included).
    """
    from convatlas.engine.trainer import TrainConfig

    if arch not in CIFAR_RECIPE["lr"]:
        raise ValueError(f"cifar_train_config: arch must be one of {sorted(CIFAR_RECIPE['lr'])}, got {arch!r}")
    r = CIFAR_RECIPE
    cfg = {"epochs": r["epochs"], "batch_size": r["batch_size"], "lr": r["lr"][arch], "optimizer": r["optimizer"],
           "momentum": r["momentum"], "weight_decay": r["weight_decay"], "warmup_epochs": 0.0, "min_lr": 0.0}
    cfg.update(overrides)
    return TrainConfig(**cfg)


# --- registered variants --------------------------------------------------------------------------------------

_SRC = "card phnn: official HyperNets classes instantiated (10 classes), unused PHConv biases excluded"
_LARGE = (60, 60, 120, 240, 516)
_RESNETS = {  # name -> (block, layers, {n: params})
    "resnet18": ("basic", (2, 2, 2, 2), {1: 10_877_062, 2: 5_446_226, 3: 3_635_914, 4: 2_731_578}),
    "resnet50": ("bottleneck", (3, 4, 6, 3), {1: 22_538_086, 2: 11_305_754, 3: 7_562_149, 4: 5_692_074}),
    # The official *real* ResNet152Large builds BasicBlocks (a bug: 52,578,694 params); the real baseline here
    # uses Bottlenecks like its PHC counterpart, measured 52,985,446.
    "resnet152": ("bottleneck", (3, 8, 36, 3), {1: 52_985_446, 2: 26_576_330, 3: 17_775_463, 4: 13_379_562}),
}
_VGG = {1: 29_806_930, 2: 14_909_938, 3: 9_946_504, 4: 7_465_390}


# Non-large CIFAR ResNets of the official phcresnet.py (widths 64..512): real counts from the card, PHC counts from
# the official layer shapes (n^3 + C_out*C_in*k^2/n per PHConv, BN 2C, real Linear head; unused biases excluded).
_SMALL = (64, 64, 128, 256, 512)
_SMALL_RESNETS = {
    "resnet18": ("basic", (2, 2, 2, 2), {1: 11_173_962, 2: 5_594_794, 4: 2_805_962}),
    "resnet50": ("bottleneck", (3, 4, 6, 3), {1: 23_520_842, 2: 11_797_938, 4: 5_938_954}),
}
_SRC_SMALL = ("card phnn (real non-large CIFAR ResNets); PHC counts from the official phcresnet.py layer shapes "
              "(10 classes, 4-channel input, unused PHConv biases excluded)")


def _register(arch: str, n: int, large: bool = True) -> None:
    """Register ``phc_{arch}[_large]_{n2,n3,n4,real}`` (n = 1: the real-valued baseline) for a ResNet or VGG19."""
    suffix = "real" if n == 1 else f"n{n}"
    name, c = f"phc_{arch}{'_large' if large else ''}_{suffix}", 3 if n in (1, 3) else 4
    args = dict(n=max(n, 1), algebra="real" if n == 1 else "learned", in_chans=c, num_classes=10)
    source = _SRC
    if arch == "vgg19":
        cls, params, size, what = PHCVGG, _VGG[n], 32, "PHC VGG19-BN Large"
    elif large:
        block, layers, counts = _RESNETS[arch]
        cls, params, size, what = PHCResNet, counts[n], 16, f"PHC {arch} Large"
        args.update(block=block, layers=layers, widths=_LARGE)
    else:
        block, layers, counts = _SMALL_RESNETS[arch]
        cls, params, size, what, source = PHCResNet, counts[n], 16, f"PHC {arch} (widths 64..512)", _SRC_SMALL
        args.update(block=block, layers=layers, widths=_SMALL)

    def builder(**kw):
        return cls(**{**args, **kw})

    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = f"{what}, {'real-valued baseline' if n == 1 else f'n={n}'} (card phnn), CIFAR-10 head."
    register_model(
        builder, paper="phnn", name=name, input_size=(c, 32, 32), test_input_size=(c, size, size), num_classes=10,
        mean=CIFAR_MEAN if c == 3 else (0.48, *CIFAR_MEAN), std=CIFAR_STD if c == 3 else (0.24, *CIFAR_STD),
        reported=Reported(params=params, resolution=32, params_exact=True, source=source),
        tags=("cifar",) + (("baseline",) if n == 1 else ()),
    )


for _arch in (*_RESNETS, "vgg19"):
    for _n in (1, 2, 3, 4):
        _register(_arch, _n)
for _arch in _SMALL_RESNETS:
    for _n in (1, 2, 4):
        _register(_arch, _n, large=False)


@register_model(paper="phnn", test_only=True, input_size=(4, 16, 16), test_input_size=(4, 16, 16), num_classes=10)
def test_phnn(**kw) -> PHCResNet:
    """Tiny PHC ResNet (n = 4, widths 8..32, one block per stage) for the generic tests."""
    args = dict(block="basic", layers=(1, 1, 1, 1), widths=(8, 8, 16, 16, 32), n=4, in_chans=4, num_classes=10)
    args.update(kw)
    return PHCResNet(**args)
