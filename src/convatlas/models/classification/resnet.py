"""Plain ResNet in torchvision's layout (He et al. 2016): the host network for drop-in conv layers (card: fdconv).

Key names match torchvision (``conv1``, ``bn1``, ``layer1.0.conv2``, ``layer1.0.downsample.0``, ``fc``), so
torchvision checkpoints load strictly; ResNet-50 has 25,557,032 parameters and 4.09 GMACs at 224 (torchvision /
timm ``resnet50``, tested in tests/models/classification/test_fdconv.py). Registered as the host of the fdconv
paper (``fdconv_resnet50_host``); the FDConv variants are in ``fdconv_nets.py``.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from convatlas.layers.conv_bn_act import bn_foldable, conv_bn_act
from convatlas.models.backbone import LinearHeadBackbone
from convatlas.ops.residual_mlp import use_fast_inference
from convatlas.registry import Reported, register_model

__all__ = ["ResNet", "BasicBlock", "Bottleneck", "resnet_kwargs"]

ConvFactory = Callable[..., nn.Module]


def _conv(cin: int, cout: int, k: int, stride: int = 1, padding: int = 0) -> nn.Module:
    return nn.Conv2d(cin, cout, k, stride, padding, bias=False)


class BasicBlock(nn.Module):
    """3x3 -> 3x3 + shortcut: (B, C_in, H, W) -> (B, planes, H/s, W/s)."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 conv: ConvFactory = _conv) -> None:
        super().__init__()
        self.conv1 = conv(cin, planes, 3, stride, 1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv(planes, planes, 3, 1, 1)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        if _fast(self, x, ("conv1", "bn1"), ("conv2", "bn2")):
            out = conv_bn_act(conv_bn_act(x, self.conv1, self.bn1, self.relu), self.conv2, self.bn2)
            return out.add_(_shortcut(self.downsample, x)).relu_()
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += x if self.downsample is None else self.downsample(x)  # BN output: safe to update in place
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride, torchvision "v1.5") -> 1x1 (x4) + shortcut: (B, C_in, H, W) -> (B, 4*planes, H/s, W/s)."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 conv: ConvFactory = _conv) -> None:
        super().__init__()
        self.conv1 = conv(cin, planes, 1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv(planes, planes, 3, stride, 1)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv(planes, planes * 4, 1)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        if _fast(self, x, ("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")):
            out = conv_bn_act(x, self.conv1, self.bn1, self.relu)
            out = conv_bn_act(out, self.conv2, self.bn2, self.relu)
            out = conv_bn_act(out, self.conv3, self.bn3)
            return out.add_(_shortcut(self.downsample, x)).relu_()
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += x if self.downsample is None else self.downsample(x)  # BN output: safe to update in place
        return self.relu(out)


# The channels-last / folded-BN inference path from this batch size on. Measured ResNet-50, 2 threads, ours/timm in
# one process: batch 16 0.93 (module path) -> 1.84-1.92; batch 1 0.67-0.94 with it (channels-last reorders and
# per-call folds do not pay for 49-3136 positions), 0.99 without, so batch 1 keeps the module path.
_FAST_MIN_BATCH = 4


def _fast(block: nn.Module, x: Tensor, *pairs: tuple[str, str]) -> bool:
    """Inference fast path (eval BN folded into plain convs, in-place ReLU and residual): plain ``nn.Conv2d``
    layers only (drop-in convs such as FDConv keep the module forward), eval BN, CPU inference."""
    down = block.downsample
    if down is not None and not (isinstance(down, nn.Sequential) and len(down) == 2 and type(down[0]) is nn.Conv2d
                                 and bn_foldable(down[1])):
        return False
    return x.shape[0] >= _FAST_MIN_BATCH and use_fast_inference(x) and all(
        type(getattr(block, c)) is nn.Conv2d and bn_foldable(getattr(block, b)) for c, b in pairs
    )


def _shortcut(down: nn.Module | None, x: Tensor) -> Tensor:
    return x if down is None else conv_bn_act(x, down[0], down[1])


class ResNet(LinearHeadBackbone):
    """ImageNet ResNet (7x7 s2 stem + max-pool, four stages, global pool, Linear): (B, 3, H, W) -> (B, classes).

    Args:
        block: ``"basic"`` or ``"bottleneck"``.
        layers: blocks per stage, e.g. (3, 4, 6, 3) for ResNet-50.
        widths: stage widths (``planes``), default (64, 128, 256, 512).
        in_chans / num_classes: input channels / classifier outputs.
        conv_layer: ``conv(cin, cout, k, stride, padding)`` used inside the blocks (e.g. a drop-in conv);
            the stem and downsample convs stay ``nn.Conv2d``. To swap layers into a built model use
            :func:`convatlas.layers.swap.swap_convs` instead.
        zero_init_residual: zero the last BN of each block (torchvision option, off by default).
    """

    min_input_size = 1
    classifier_name = "fc"  # torchvision layout: conv1/bn1/layer1..4/fc

    def __init__(
        self,
        block: str = "bottleneck",
        layers: Sequence[int] = (3, 4, 6, 3),
        widths: Sequence[int] = (64, 128, 256, 512),
        in_chans: int = 3,
        num_classes: int = 1000,
        conv_layer: ConvFactory = _conv,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        blk = {"basic": BasicBlock, "bottleneck": Bottleneck}[block]
        self.in_chans = in_chans
        stem = widths[0]
        self.conv1 = nn.Conv2d(in_chans, stem, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = stem
        self.feature_info = []
        for i, (planes, depth) in enumerate(zip(widths, layers)):
            stride = 1 if i == 0 else 2
            down = None
            if stride != 1 or cin != planes * blk.expansion:
                down = nn.Sequential(nn.Conv2d(cin, planes * blk.expansion, 1, stride, bias=False),
                                     nn.BatchNorm2d(planes * blk.expansion))
            blocks = [blk(cin, planes, stride, down, conv_layer)]
            cin = planes * blk.expansion
            blocks += [blk(cin, planes, 1, None, conv_layer) for _ in range(depth - 1)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            self.feature_info.append({"num_chs": cin, "reduction": 4 * 2**i, "module": f"layer{i + 1}"})
        self.num_features = cin
        self.reset_classifier(num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, (Bottleneck, BasicBlock)):
                    nn.init.zeros_((m.bn3 if isinstance(m, Bottleneck) else m.bn2).weight)

    @property
    def stages(self) -> list[nn.Sequential]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def stem(self, x: Tensor) -> Tensor:
        """(B, in_chans, H, W) -> (B, widths[0], H/4, W/4). CPU inference runs channels-last from here on
        (oneDNN's convolutions are faster there; the maps keep their shape and values)."""
        if x.dim() == 4 and x.shape[0] >= _FAST_MIN_BATCH and bn_foldable(self.bn1) and use_fast_inference(x):
            x = x.contiguous(memory_format=torch.channels_last)
            return self.maxpool(conv_bn_act(x, self.conv1, self.bn1, self.relu))
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))


def resnet_kwargs(depth: int) -> dict:
    """Architecture arguments of torchvision's resnet{18,34,50,101,152}."""
    table = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)), 50: ("bottleneck", (3, 4, 6, 3)),
             101: ("bottleneck", (3, 4, 23, 3)), 152: ("bottleneck", (3, 8, 36, 3))}
    block, layers = table[depth]
    return {"block": block, "layers": layers}


@register_model(
    paper="fdconv", reference="timm:resnet50", tags=("host",),
    reported=Reported(params=25_557_032, gmacs=4.089, resolution=224, params_exact=True,
                      source="torchvision/timm resnet50 (the FDConv paper's backbone: 23.5M without fc)"),
)
def fdconv_resnet50_host(**kw) -> ResNet:
    """Plain ResNet-50 (torchvision layout) that FDConv is swapped into (card: fdconv)."""
    return ResNet(**{**resnet_kwargs(50), **kw})


@register_model(paper="fdconv", test_only=True, input_size=(3, 64, 64), test_input_size=(3, 64, 64), num_classes=10)
def test_resnet(**kw) -> ResNet:
    """Tiny ResNet (basic blocks, widths 8..32) for the generic tests."""
    return ResNet(**{"block": "basic", "layers": (1, 1, 1, 1), "widths": (8, 16, 24, 32), "num_classes": 10, **kw})
