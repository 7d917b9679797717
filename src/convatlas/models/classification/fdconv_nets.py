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
- Rule source: official ``FDConv_detection/mmdet_custom/resnet.py``: ``ResLayer`` builds the downsample conv with
  ``build_conv_layer(None, ...)`` (its ``conv_cfg`` argument commented out), the bottleneck convs and the 7x7 stem
  with ``conv_cfg`` = FDConv; FDConv's own fallback keeps the stem plain (C_in = 3, k = 7). FBM goes to every 3x3
  (stride 2 included: ``use_fbm_if_k_in=[3]``; ``use_fbm_for_stride`` only adds strided non-3x3 layers, off).
- Training facts (official Mask R-CNN config, read): ``need_grad_list=['KSM', 'FBM']`` acts only in
  ``_freeze_stages``: in the frozen stages (mmdet ``frozen_stages=1``: stem + layer1) every parameter is frozen
  except those whose name contains 'KSM' or 'FBM', which keep training; AdamW lr 1e-4, weight decay 0.05 (none on
  norm / bias), 12 epochs with steps at 8 and 11, 4 images per GPU, DETR-style multi-scale augmentation, fp16.
  The detection/segmentation frameworks themselves (Faster/Mask R-CNN, UPerNet) are not built here.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor, nn

from convatlas.layers.fdconv import FDConv, fdconv_weight_to_dft
from convatlas.layers.swap import swap_convs
from convatlas.models.classification.resnet import ResNet, resnet_kwargs
from convatlas.registry import Reported, register_model

__all__ = ["fdconv_resnet", "convert_to_fdconv"]

_PAPER = dict(kernel_num=64, param_ratio=1, reduction=0.0625, att_multi=2.0, kernel_temp=1.0)


def fdconv_resnet(depth: int = 50, rule: str = "fdconv_paper", fdconv_kwargs: dict | None = None, **kw: Any) -> ResNet:
    """ResNet-``depth`` with FDConv swapped in by ``rule`` (``"fdconv_paper"`` or ``"fdconv_all"``).

    ``model.swapped`` lists the replaced module names. Input (B, 3, H, W) -> (B, num_classes).
    """
    model = ResNet(**{**resnet_kwargs(depth), **kw})
    model.swapped = swap_convs(model, "fdconv", rule, **{**_PAPER, **(fdconv_kwargs or {})})
    return model


@torch.no_grad()
def convert_to_fdconv(state_dict: Mapping[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """Standard-conv checkpoint -> state dict for ``model`` with FDConv layers (official ``convert_to_fdconv``).

    For every dynamic :class:`~convatlas.layers.fdconv.FDConv` in ``model``, ``<name>.weight`` (C_out, C_in, k, k)
    becomes ``<name>.dft_weight`` = rfft2 of the (C_out*k, C_in*k) matrix / (min(C_in, C_out)//2), repeated
    ``param_ratio`` times, so the layer's static kernel equals the checkpoint's; every other key is kept. Keys the
    checkpoint cannot provide (KSM/FBM attention parameters) are taken from ``model``'s current (initial) state,
    as the official tool loads with ``strict=False``. The result loads with ``model.load_state_dict(...)``
    strictly. Example: ``model.load_state_dict(convert_to_fdconv(torchvision_resnet50_sd, fdconv_resnet50()))``.
    """
    fd = {name: m for name, m in model.named_modules() if isinstance(m, FDConv) and m.dynamic}
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        mod, _, leaf = key.rpartition(".")
        if leaf == "weight" and mod in fd:
            m = fd[mod]
            if tuple(value.shape) != (m.out_channels, m.in_channels, *m.kernel_size):
                raise ValueError(f"convert_to_fdconv: {key} has shape {tuple(value.shape)}, the FDConv expects "
                                 f"{(m.out_channels, m.in_channels, *m.kernel_size)}")
            dft = fdconv_weight_to_dft(value.float()) / m.scale
            out[f"{mod}.dft_weight"] = dft.unsqueeze(0).repeat(m.param_ratio, 1, 1, 1).to(m.dft_weight.dtype)
        else:
            out[key] = value
    for key, value in model.state_dict().items():
        out.setdefault(key, value.clone())
    return out


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
