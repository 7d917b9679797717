"""Isotropic ConvNeXt (card: convnext, paper Sec. 3.3 / appendix): ViT-style, no downsampling.

Stem: Conv2d(in_chans -> dim, 16x16, stride 16, bias) with no norm; ``depth`` ConvNeXt blocks at constant width
on the (H/16, W/16) grid; head: global average pool -> LayerNorm (eps 1e-6) -> Linear. Input (B, 3, H, W) with
H, W multiples of 16 -> logits (B, num_classes).

Configuration confirmed in the official repository (facebookresearch/ConvNeXt ``models/convnext_isotropic.py``
and TRAINING.md, read for this implementation): S = 18 blocks x 384, B = 18 x 768, L = 36 x 1024; stem 16x16 s16
conv without a norm; ``layer_scale_init_value`` defaults to 0 there, which means *no* gamma parameter; S and B are
trained with it (``--layer_scale_init_value 0``), L with main.py's default 1e-6 (so L has gamma, S/B do not).

Figures (1000 classes, 224x224; MACs = FlopCounterMode FLOPs / 2): S 22,308,712 params / 4.287 G,
B 87,083,752 / 16.90 G, L 305,942,504 / 59.70 G. The paper reports 22M / 87M / 306M and 4.3 / 16.9 / 59.7 G;
22.31M rounds to 22M but is 1.4% above it, so S is checked with a 2.5% tolerance (what rounding to 1M allows).
ImageNet-1k top-1: 78.7 / 82.0 / 82.6.

State-dict keys follow the ConvNeXt family here (``stem``, ``blocks.i.{conv_dw,norm,mlp.fc1,mlp.fc2,gamma}``,
``head.norm``, ``head.fc``); :func:`checkpoint_filter_fn` converts the official layout (``blocks.i.dwconv``,
``pwconv1/2``, final ``norm``, ``head``; weights under ``"model"``).
"""

from __future__ import annotations

import re
from typing import Any, Callable

import torch
from torch import Tensor, nn

from convatlas.layers.classifier import NormMlpClassifierHead
from convatlas.layers.drop_path import drop_path_rates
from convatlas.models.backbone import checkpoint_seq
from convatlas.models.classification.convnext import ConvNeXtBlock, ConvNeXtContract, init_weights
from convatlas.registry import Reported, register_model

__all__ = ["ConvNeXtIsotropic", "checkpoint_filter_fn"]


class ConvNeXtIsotropic(ConvNeXtContract):
    """Isotropic ConvNeXt (card: convnext): (B, in_chans, H, W) -> (B, num_classes); H, W multiples of ``patch_size``.

    Args:
        in_chans: input channels.
        num_classes: classifier outputs (0: identity classifier).
        global_pool: ``"avg"``, ``"max"`` or ``"avgmax"``.
        depth: number of blocks.
        dim: channels of every block.
        patch_size: stem kernel and stride (16).
        ls_init_value: layer-scale init; None (the official ``0``) means no layer scale.
        kernel_size / mlp_ratio / conv_mlp: block options (see :class:`ConvNeXtBlock`).
        head_init_scale: classifier weight/bias multiplier at init.
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth, linear 0 -> rate over the blocks.

    Attributes:
        feature_info: one entry per block (``blocks.i``, ``dim`` channels, reduction ``patch_size``), as timm
            does for ViTs; ``features_only`` picks blocks with ``out_indices``.
    """

    stage_attr = "blocks"  # forward_stages / features_only return block outputs

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        depth: int = 18,
        dim: int = 384,
        patch_size: int = 16,
        ls_init_value: float | None = None,
        kernel_size: int = 7,
        mlp_ratio: float = 4.0,
        conv_mlp: bool = False,
        norm_eps: float = 1e-6,
        act_layer: Callable[[], nn.Module] = nn.GELU,
        head_init_scale: float = 1.0,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"ConvNeXtIsotropic: depth must be >= 1, got {depth}")
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"ConvNeXtIsotropic: drop_path_rate must be in [0, 1), got {drop_path_rate}")
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.patch_size = self.total_stride = patch_size
        self.grad_checkpointing = False
        self.stem = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)
        rates = drop_path_rates([depth], drop_path_rate)[0]
        self.blocks = nn.Sequential(
            *[
                ConvNeXtBlock(dim, kernel_size=kernel_size, mlp_ratio=mlp_ratio, conv_mlp=conv_mlp,
                              ls_init_value=ls_init_value, norm_eps=norm_eps, act_layer=act_layer,
                              drop_path=rates[i])  # fmt: skip
                for i in range(depth)
            ]
        )
        self.num_features = self.head_hidden_size = dim
        self.feature_info = [{"num_chs": dim, "reduction": patch_size, "module": f"blocks.{i}"} for i in range(depth)]
        self.head: NormMlpClassifierHead | None = NormMlpClassifierHead(
            dim, num_classes, pool_type=global_pool, drop_rate=drop_rate, norm_eps=norm_eps
        )
        init_weights(self, head_init_scale)

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, dim, H/16, W/16)."""
        x = self.stem(self._check(x))
        if self.grad_checkpointing and torch.is_grad_enabled():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing per block."""
        self.grad_checkpointing = enable


def checkpoint_filter_fn(state_dict: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """Convert the official isotropic layout (optionally under ``"model"``) to ours; ours passes unchanged.

    ``blocks.i.dwconv`` -> ``blocks.i.conv_dw``; ``pwconv1/2`` -> ``mlp.fc1/2``; ``norm.`` -> ``head.norm.``;
    ``head.`` -> ``head.fc.``; Linear weights reshaped to 1x1 kernels for ``conv_mlp`` models.
    """
    if "model" in state_dict and isinstance(state_dict["model"], dict):
        state_dict = state_dict["model"]
    if "head.norm.weight" in state_dict:
        return dict(state_dict)
    target = model.state_dict()
    out: dict[str, Tensor] = {}
    for k, v in state_dict.items():
        k = k.replace("dwconv", "conv_dw")
        k = re.sub(r"pwconv(\d)", r"mlp.fc\1", k)
        if k.startswith("head."):
            k = "head.fc." + k[len("head.") :]
        elif k.startswith("norm."):
            k = "head." + k
        if k in target and v.ndim == 2 and target[k].ndim == 4:
            v = v.reshape(target[k].shape)
        out[k] = v
    return out


_SRC = "paper Table (official README); architecture: official models/convnext_isotropic.py"
_ENTRY = {"paper": "convnext", "input_size": (3, 224, 224), "test_input_size": (3, 64, 64)}


@register_model(paper="convnext", test_only=True, input_size=(3, 64, 64), test_input_size=(3, 64, 64), num_classes=10)
def test_convnext_isotropic(**kwargs: Any) -> ConvNeXtIsotropic:
    """Tiny isotropic ConvNeXt for the generic tests (2 blocks x 16 channels)."""
    return ConvNeXtIsotropic(**{"depth": 2, "dim": 16, "ls_init_value": 1e-6, "num_classes": 10, **kwargs})


@register_model(
    reference="official:convnext_isotropic_small",
    reported=Reported(params=22_000_000, params_tol=0.025, gmacs=4.3, resolution=224, source=_SRC,
                      metrics={"imagenet_top1": 78.7}),
    **_ENTRY,
)  # fmt: skip
def convnext_isotropic_small(**kwargs: Any) -> ConvNeXtIsotropic:
    return ConvNeXtIsotropic(**{"depth": 18, "dim": 384, "ls_init_value": None, **kwargs})


@register_model(
    reference="official:convnext_isotropic_base",
    reported=Reported(params=87_000_000, gmacs=16.9, resolution=224, source=_SRC, metrics={"imagenet_top1": 82.0}),
    **_ENTRY,
)
def convnext_isotropic_base(**kwargs: Any) -> ConvNeXtIsotropic:
    return ConvNeXtIsotropic(**{"depth": 18, "dim": 768, "ls_init_value": None, **kwargs})


@register_model(
    reference="official:convnext_isotropic_large",
    reported=Reported(params=306_000_000, gmacs=59.7, resolution=224, source=_SRC, metrics={"imagenet_top1": 82.6}),
    **_ENTRY,
)
def convnext_isotropic_large(**kwargs: Any) -> ConvNeXtIsotropic:
    return ConvNeXtIsotropic(**{"depth": 36, "dim": 1024, "ls_init_value": 1e-6, **kwargs})
