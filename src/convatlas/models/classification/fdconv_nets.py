"""ResNets with Frequency Dynamic Convolution (card: fdconv, arXiv 2503.18783, official code Linwei-Chen/FDConv).

Built by swapping :class:`~convatlas.layers.fdconv.FDConv` into the plain torchvision-layout ResNet
(:mod:`convatlas.models.classification.resnet`) with :func:`convatlas.layers.swap.swap_convs`.

Card facts / reproduced figures (ResNet-50, kernel_num 64, 1000 classes; measured on the meta device):
- Paper rule (official ``ResNet_FDConv``: conv1/conv2/conv3 of every bottleneck are FDConv, downsample convs
  stay plain, the 7x7 stem falls back to a plain conv): 48 layers replaced, +3,647,120 params over 25,557,032
  = 29,204,152. The paper reports "+3.6M" (README table), which this reproduces.
- Every eligible 1x1/3x3 conv including downsample (``fdconv_resnet50_all``): +4,046,424 = 29,603,456, the
  card's count from the official layer.
- MACs at 224: 4.255 G (paper rule) vs 4.089 G for ResNet-50 (the dynamic kernels add little; FFTs are not
  counted by the MAC counter). The paper's "+1.8G FLOPs" refers to Faster R-CNN at detection resolution.
"""

from __future__ import annotations

from typing import Any

from convatlas.layers.swap import swap_convs
from convatlas.models.classification.resnet import ResNet, resnet_kwargs
from convatlas.registry import Reported, register_model

__all__ = ["fdconv_resnet"]

_PAPER = dict(kernel_num=64, param_ratio=1, reduction=0.0625, att_multi=2.0, kernel_temp=1.0)


def fdconv_resnet(depth: int = 50, rule: str = "fdconv_paper", fdconv_kwargs: dict | None = None, **kw: Any) -> ResNet:
    """ResNet-``depth`` with FDConv swapped in by ``rule`` (``"fdconv_paper"`` or ``"fdconv_all"``).

    ``model.swapped`` lists the replaced module names. Input (B, 3, H, W) -> (B, num_classes).
    """
    model = ResNet(**{**resnet_kwargs(depth), **kw})
    model.swapped = swap_convs(model, "fdconv", rule, **{**_PAPER, **(fdconv_kwargs or {})})
    return model


@register_model(
    paper="fdconv",
    reported=Reported(params=29_157_032, resolution=224, source="README: ResNet-50 25,557,032 + '+3.6M' (rounded)",
                      metrics={"coco_faster_rcnn_ap_box": 39.4, "coco_mask_rcnn_ap_box": 42.4,
                               "coco_mask_rcnn_ap_mask": 38.6}),
)
def fdconv_resnet50(**kw: Any) -> ResNet:
    """ResNet-50 + FDConv (kernel_num 64) in every bottleneck conv, the paper's backbone (card: fdconv)."""
    return fdconv_resnet(50, "fdconv_paper", **kw)


@register_model(
    paper="fdconv",
    reported=Reported(params=29_603_456, resolution=224, params_exact=True,
                      source="card: official FDConv in every eligible 1x1/3x3 conv of torchvision resnet50"),
)
def fdconv_resnet50_all(**kw: Any) -> ResNet:
    """ResNet-50 with FDConv in every eligible conv (downsample convs included): an ablation of the swap rule."""
    return fdconv_resnet(50, "fdconv_all", **kw)


@register_model(paper="fdconv", test_only=True, input_size=(3, 64, 64), test_input_size=(3, 64, 64), num_classes=10)
def test_fdconv(**kw: Any) -> ResNet:
    """Tiny FDConv ResNet (basic blocks, widths 32..64, kernel_num 4) for the generic tests."""
    args = dict(block="basic", layers=(1, 1, 1, 1), widths=(32, 32, 64, 64), num_classes=10)
    args.update(kw)
    model = ResNet(**args)
    model.swapped = swap_convs(model, "fdconv", "fdconv_paper", kernel_num=4)
    return model
