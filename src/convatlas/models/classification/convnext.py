"""ConvNeXt (card: convnext, arXiv 2201.03545, "A ConvNet for the 2020s").

A ResNet modernised towards Swin: patchify stem (4x4 s4 conv + LN), stages of ConvNeXt blocks (7x7 depthwise
conv -> LN -> Linear C->4C -> GELU -> Linear 4C->C -> layer scale -> drop-path -> residual) separated by
LN + 2x2 s2 conv downsamplers, head pool -> LN -> Linear. Input (B, 3, H, W) -> logits (B, num_classes);
per-stage maps (B, C_i, H/r_i, W/r_i) with r = 4, 8, 16, 32.

State dicts are key-for-key identical to timm's ``ConvNeXt`` (``stem.0/1``, ``stages.i.downsample.{0,1}``,
``stages.i.blocks.j.{conv_dw,norm,mlp.fc1,mlp.fc2,gamma}``, ``head.norm``, ``head.fc``; ``norm_pre`` for the
``head_norm_first`` variants; 4-D fc weights with ``conv_mlp=True``), so timm checkpoints load strictly.
:func:`checkpoint_filter_fn` converts the official facebookresearch/ConvNeXt layout.

Resolution: any H, W that are multiples of 32 (the total stride) and >= 32; other sizes raise ``ValueError``
(timm and the official code silently drop the rows/columns that do not fill a 4x4 patch / 2x2 downsampling
window; pad or resize instead).

Speed (CPU): the network runs channels-last internally (the input is converted once; identical numbers), so
the block's NHWC LayerNorm/Linear see contiguous memory with no permute copies, and at inference (grad disabled)
the LN -> fc1 -> GELU (in place) -> fc2 -> gamma + residual (one addcmul) chain runs as one fused call
(:func:`convatlas.ops.residual_mlp.residual_norm_mlp`). Training, autograd, autocast, torch.compile and export
use the plain module-by-module forward. Measured (ConvNeXt-T, 224, same weights, timm 1.0.31, 2-core EPYC,
2 threads, alternating runs): fp32 b16 19.6 vs 15.9 img/s (1.23x) at load ~1.7 (0.85-1.11x when the machine
is oversubscribed at load 5-9, see :mod:`convatlas.ops.residual_mlp`), pure bf16 b16 57.7 vs 41.8 img/s
(1.38x); 1 thread fp32 b16 1.09-1.17x, b1 1.04-1.08x; training step (b8, 128x128, 1 thread) 1.06x.

Card facts / figures (timm 1.0.31, 1000 classes; MACs = FlopCounterMode FLOPs / 2 at 224):
    atto 3,695,520 / 0.547 G; femto 5,217,784 / 0.780; pico 9,045,672 / 1.367; nano 15,593,560 / 2.446;
    tiny 28,589,128 / 4.456; small 50,223,688 / 8.684; base 88,591,464 / 15.355; large 197,767,336 / 34.361;
    xlarge 350,196,968 / 60.921; xxlarge 846,471,016 / 151.570; large_mlp 200,128,168 / 34.364;
    tiny_hnf 28,589,128 / 4.456; atto_ols 3,702,912 / 0.577.
    Paper (official README) T/S/B/L/XL: 28M/50M/89M/198M/350M, 4.5/8.7/15.4/34.4/60.9 G; ImageNet-1k top-1
    82.1/83.1/83.8/84.3/- (1k only), 82.9/84.6/85.8/86.6/87.0 (22k pre-trained).
    Not implemented from timm: ``output_stride`` < 32 (dilated stages), GRN (ConvNeXt-V2, its own family),
    RMS/simple norms.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from convatlas.identities import register_identity
from convatlas.layers.classifier import ClassifierHead, NormMlpClassifierHead
from convatlas.layers.drop_path import DropPath, drop_path_rates
from convatlas.layers.mlp import ConvMlp, Mlp
from convatlas.layers.norm import LayerNorm, LayerNorm2d
from convatlas.layers.validation import check_input
from convatlas.models.backbone import checkpoint_seq
from convatlas.ops.residual_mlp import residual_norm_mlp, use_fast_inference
from convatlas.registry import Reported, register_model

__all__ = [
    "ConvNeXtBlock", "ConvNeXtStage", "ConvNeXt", "checkpoint_filter_fn", "init_weights", "imagenet_train_config",
    "IMAGENET1K_RECIPE", "IMAGENET22K_RECIPE", "FINETUNE_384_RECIPE",
]  # fmt: skip

STEM_TYPES = ("patch", "overlap", "overlap_tiered", "overlap_act")


class ConvNeXtBlock(nn.Module):
    """ConvNeXt block: (B, C, H, W) -> (B, C, H, W).

    ``x + drop_path(gamma * fc2(GELU(fc1(LN(dwconv7x7(x))))))``. Two layouts with identical numbers:
    ``conv_mlp=False`` permutes to NHWC and uses LayerNorm + Linear (timm default, official code);
    ``conv_mlp=True`` stays NCHW with LayerNorm2d + 1x1 convs (4-D fc weights; timm's atto..nano).

    Args:
        dim: channels C.
        kernel_size: depthwise kernel (7).
        mlp_ratio: hidden width = ``int(mlp_ratio * dim)``.
        conv_mlp: layout, see above.
        conv_bias: bias of the depthwise conv (the MLP always has biases, as in timm).
        ls_init_value: layer-scale init (1e-6); None disables layer scale (no ``gamma`` parameter).
        norm_eps: LayerNorm epsilon (1e-6; xxlarge 1e-5).
        act_layer: activation class (exact-erf GELU).
        drop_path: stochastic-depth probability of this block.
    """

    def __init__(
        self,
        dim: int,
        kernel_size: int = 7,
        mlp_ratio: float = 4.0,
        conv_mlp: bool = False,
        conv_bias: bool = True,
        ls_init_value: float | None = 1e-6,
        norm_eps: float = 1e-6,
        act_layer: Callable[[], nn.Module] = nn.GELU,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"ConvNeXtBlock: kernel_size must be odd, got {kernel_size}")
        hidden = int(mlp_ratio * dim)
        self.conv_mlp = conv_mlp
        self.conv_dw = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim, bias=conv_bias)
        if conv_mlp:
            self.norm: nn.LayerNorm = LayerNorm2d(dim, eps=norm_eps)
            self.mlp: nn.Module = ConvMlp(dim, hidden, act_layer=act_layer)
        else:
            self.norm = LayerNorm(dim, eps=norm_eps)
            self.mlp = Mlp(dim, hidden, act_layer=act_layer)
        self.gamma = nn.Parameter(torch.full((dim,), float(ls_init_value))) if ls_init_value is not None else None
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        # the fused kernel hard-codes exact GELU and no dropout inside the MLP
        self._fusable = act_layer is nn.GELU

    def _fast_ok(self, x: Tensor) -> bool:
        if not self._fusable or not use_fast_inference(x):
            return False
        if self.training and isinstance(self.drop_path, DropPath):
            return False
        drops = (getattr(self.mlp, n, None) for n in ("drop1", "drop2", "drop"))
        return not (self.training and any(isinstance(d, nn.Dropout) and d.p > 0 for d in drops))

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x
        x = self.conv_dw(x)
        if self._fast_ok(x):
            fc1, fc2 = self.mlp.fc1, self.mlp.fc2
            out = residual_norm_mlp(
                x.permute(0, 2, 3, 1), shortcut.permute(0, 2, 3, 1),
                self.norm.weight, self.norm.bias, self.norm.eps,
                fc1.weight, fc1.bias, fc2.weight, fc2.bias, self.gamma,
            )  # fmt: skip
            return out.permute(0, 3, 1, 2)
        if self.conv_mlp:
            x = self.mlp(self.norm(x))
            if self.gamma is not None:
                x = x * self.gamma.reshape(1, -1, 1, 1)
        else:
            x = self.mlp(self.norm(x.permute(0, 2, 3, 1)))
            if self.gamma is not None:
                x = x * self.gamma
            x = x.permute(0, 3, 1, 2)
        return self.drop_path(x) + shortcut


class ConvNeXtStage(nn.Module):
    """Optional downsampler (LayerNorm2d -> k2 s2 conv) followed by ``depth`` blocks: (B, C_in, H, W) -> (B, C, H', W').

    Args:
        in_chs / out_chs: channels in and out.
        stride: 2 adds the downsampler (1: none, in_chs must equal out_chs).
        depth: number of blocks.
        drop_path_rates: per-block stochastic-depth rates (len ``depth``).
        norm_eps: LayerNorm epsilon.
        **block_kwargs: passed to :class:`ConvNeXtBlock`.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        stride: int = 2,
        depth: int = 2,
        drop_path_rates: Sequence[float] | None = None,
        norm_eps: float = 1e-6,
        conv_bias: bool = True,
        **block_kwargs: Any,
    ) -> None:
        super().__init__()
        self.grad_checkpointing = False
        if stride > 1 or in_chs != out_chs:
            self.downsample: nn.Module = nn.Sequential(
                LayerNorm2d(in_chs, eps=norm_eps),
                nn.Conv2d(in_chs, out_chs, kernel_size=stride, stride=stride, bias=conv_bias),
            )
        else:
            self.downsample = nn.Identity()
        rates = list(drop_path_rates) if drop_path_rates is not None else [0.0] * depth
        self.blocks = nn.Sequential(
            *[
                ConvNeXtBlock(out_chs, drop_path=rates[i], norm_eps=norm_eps, conv_bias=conv_bias, **block_kwargs)
                for i in range(depth)
            ]
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.downsample(x)
        if self.grad_checkpointing and torch.is_grad_enabled():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)


def _make_divisible(v: float, divisor: int = 8) -> int:
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


class ConvNeXtContract(nn.Module):
    """Input check and head half of the backbone contract shared by :class:`ConvNeXt` and the isotropic
    variant (card: convnext). A subclass sets ``in_chans``, ``num_classes``, ``total_stride`` (the input must be
    a multiple of it), ``head`` (a head with ``forward(x, pre_logits)``, ``reset`` and ``fc``) and optionally
    ``norm_pre``, and defines ``forward_features``; ``forward_stages`` runs ``stem`` then the modules of
    ``stage_attr``.
    """

    stage_attr: str = "stages"

    @property
    def _name(self) -> str:
        return getattr(self, "pretrained_cfg", {}).get("architecture", type(self).__name__)

    def _check(self, x: Tensor) -> Tensor:
        check_input(self._name, x, ndim=4, channels=self.in_chans, min_size=self.total_stride,
                    multiple_of=self.total_stride)  # fmt: skip
        # channels-last internally: the NHWC LayerNorm/Linear of every block then read contiguous memory
        return x.contiguous(memory_format=torch.channels_last)

    def forward_stages(self, x: Tensor, max_index: int | None = None) -> list[Tensor]:
        """(B, C, H, W) -> the output of each module of ``self.<stage_attr>`` (stages, or the isotropic blocks)
        [(B, C_i, H/r_i, W/r_i)], up to index ``max_index`` (default all)."""
        x = self.stem(self._check(x))
        stages = getattr(self, self.stage_attr)
        last = len(stages) - 1 if max_index is None else max_index
        feats = []
        for i, stage in enumerate(stages):
            if i > last:
                break
            x = stage(x)
            feats.append(x)
        return feats

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """(B, num_features, h, w) -> logits (B, num_classes), or pooled features if ``pre_logits``."""
        if self.head is None:
            raise RuntimeError(f"{self._name}: the head was removed (remove_head/features_only)")
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_chans, H, W) -> (B, num_classes)."""
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier with a fresh one of ``num_classes`` outputs (0: identity)."""
        if self.head is None:
            raise RuntimeError(f"{self._name}: the head was removed (remove_head/features_only)")
        self.num_classes = num_classes
        self.head.reset(num_classes, global_pool)

    def get_classifier(self) -> nn.Module:
        return self.head.fc if self.head is not None else nn.Identity()

    def remove_head(self) -> None:
        """Drop the head (and ``norm_pre``): only the stem and the blocks remain."""
        self.head = None
        if hasattr(self, "norm_pre"):
            self.norm_pre = nn.Identity()
        self.num_classes = 0

    def no_weight_decay(self) -> set[str]:
        """Names of 1-D parameters (norms, biases, layer scales), exempt from weight decay by convention."""
        return {n for n, p in self.named_parameters() if p.ndim <= 1}


class ConvNeXt(ConvNeXtContract):
    """ConvNeXt classifier / backbone (card: convnext): (B, in_chans, H, W) -> (B, num_classes).

    Args:
        in_chans: input channels.
        num_classes: classifier outputs (0: no classifier, ``forward`` returns pooled features).
        global_pool: ``"avg"`` (default), ``"max"`` or ``"avgmax"``.
        depths: blocks per stage (4 stages).
        dims: channels per stage.
        kernel_sizes: depthwise kernel size, one int or one per stage.
        ls_init_value: layer-scale init (1e-6); None disables layer scale.
        stem_type: ``"patch"`` (4x4 s4 conv + LN, the paper) or timm's ``"overlap"``, ``"overlap_tiered"``,
            ``"overlap_act"`` (two 3x3 s2 convs; tiered halves the first width; act adds GELU between them).
        patch_size: patch-stem size (4).
        head_init_scale: classifier weight/bias multiplier at init (1.0 from scratch, 0.001 when fine-tuning).
        head_norm_first: LN before pooling (``norm_pre`` + plain pool/fc head; timm ``_hnf``) instead of the
            paper's pool -> LN -> fc.
        head_hidden_size: width of a Linear+GELU pre-logits layer in the head (timm ``large_mlp``: 1536).
        conv_mlp: NCHW 1x1-conv MLP layout (see :class:`ConvNeXtBlock`).
        conv_bias: biases in stem, downsample and depthwise convs.
        mlp_ratio: block MLP expansion (4).
        norm_eps: LayerNorm epsilon everywhere (1e-6; 1e-5 for xxlarge).
        act_layer: block activation class (exact GELU).
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth, linear 0 -> rate over all blocks.

    Attributes:
        feature_info: ``[{"num_chs", "reduction", "module"}]`` per stage.
        num_features: channels of ``forward_features`` output.
    """

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        depths: Sequence[int] = (3, 3, 9, 3),
        dims: Sequence[int] = (96, 192, 384, 768),
        kernel_sizes: int | Sequence[int] = 7,
        ls_init_value: float | None = 1e-6,
        stem_type: str = "patch",
        patch_size: int = 4,
        head_init_scale: float = 1.0,
        head_norm_first: bool = False,
        head_hidden_size: int | None = None,
        conv_mlp: bool = False,
        conv_bias: bool = True,
        mlp_ratio: float = 4.0,
        norm_eps: float = 1e-6,
        act_layer: Callable[[], nn.Module] = nn.GELU,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        depths, dims = tuple(depths), tuple(dims)
        if len(depths) != 4 or len(dims) != 4:
            raise ValueError(f"ConvNeXt: depths and dims need 4 entries, got {depths} and {dims}")
        if stem_type not in STEM_TYPES:
            raise ValueError(f"ConvNeXt: stem_type must be one of {STEM_TYPES}, got {stem_type!r}")
        if head_norm_first and head_hidden_size:
            raise ValueError("ConvNeXt: head_hidden_size is not supported with head_norm_first=True")
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"ConvNeXt: drop_path_rate must be in [0, 1), got {drop_path_rate}")
        ks = (kernel_sizes,) * 4 if isinstance(kernel_sizes, int) else tuple(kernel_sizes)
        if len(ks) != 4:
            raise ValueError(f"ConvNeXt: kernel_sizes needs 1 or 4 entries, got {kernel_sizes}")
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.head_norm_first = head_norm_first

        if stem_type == "patch":
            self.stem = nn.Sequential(
                nn.Conv2d(in_chans, dims[0], kernel_size=patch_size, stride=patch_size, bias=conv_bias),
                LayerNorm2d(dims[0], eps=norm_eps),
            )
            stem_stride = patch_size
        else:
            mid = _make_divisible(dims[0] // 2) if "tiered" in stem_type else dims[0]
            layers: list[nn.Module] = [nn.Conv2d(in_chans, mid, 3, stride=2, padding=1, bias=conv_bias)]
            if "act" in stem_type:
                layers.append(act_layer())
            layers += [
                nn.Conv2d(mid, dims[0], 3, stride=2, padding=1, bias=conv_bias),
                LayerNorm2d(dims[0], eps=norm_eps),
            ]
            self.stem = nn.Sequential(*layers)
            stem_stride = 4
        self.stem_stride = stem_stride

        rates = drop_path_rates(depths, drop_path_rate)
        stages, prev, stride = [], dims[0], stem_stride
        self.feature_info: list[dict[str, Any]] = []
        for i in range(4):
            s = 1 if i == 0 else 2
            stride *= s
            stages.append(
                ConvNeXtStage(
                    prev, dims[i], stride=s, depth=depths[i], drop_path_rates=rates[i], norm_eps=norm_eps,
                    conv_bias=conv_bias, kernel_size=ks[i], mlp_ratio=mlp_ratio, conv_mlp=conv_mlp,
                    ls_init_value=ls_init_value, act_layer=act_layer,
                )  # fmt: skip
            )
            prev = dims[i]
            self.feature_info.append({"num_chs": prev, "reduction": stride, "module": f"stages.{i}"})
        self.stages = nn.Sequential(*stages)
        self.num_features = prev
        self.total_stride = stride

        self.head: nn.Module | None
        if head_norm_first:
            self.norm_pre: nn.Module = LayerNorm2d(prev, eps=norm_eps)
            self.head = ClassifierHead(prev, num_classes, pool_type=global_pool, drop_rate=drop_rate)
        else:
            self.norm_pre = nn.Identity()
            self.head = NormMlpClassifierHead(
                prev, num_classes, hidden_size=head_hidden_size, pool_type=global_pool, drop_rate=drop_rate,
                norm_eps=norm_eps,
            )  # fmt: skip
        self.head_hidden_size = self.head.num_features
        init_weights(self, head_init_scale)

    # ---- backbone contract (input check, stages and head in ConvNeXtContract) --------------------------------
    def forward_features(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, num_features, H/32, W/32) (normalised for ``head_norm_first`` variants)."""
        x = self.stages(self.stem(self._check(x)))
        return self.norm_pre(x)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing per block in every stage (less memory, one extra forward in backward)."""
        for s in self.stages:
            s.grad_checkpointing = enable


def init_weights(model: nn.Module, head_init_scale: float = 1.0) -> None:
    """Truncated normal (std .02) for Conv2d/Linear weights, zero biases; classifier scaled by ``head_init_scale``."""
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
            if isinstance(m, nn.Linear) and name.startswith("head."):
                with torch.no_grad():
                    m.weight.mul_(head_init_scale)
                    m.bias.mul_(head_init_scale)


def checkpoint_filter_fn(state_dict: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """Convert an official facebookresearch/ConvNeXt state dict (optionally nested under ``"model"``) to ours.

    Mapping (card): ``downsample_layers.0.`` -> ``stem.``; ``downsample_layers.i.k`` -> ``stages.i.downsample.k``;
    ``stages.i.j`` -> ``stages.i.blocks.j``; ``dwconv`` -> ``conv_dw``; ``pwconv`` -> ``mlp.fc``; ``head.`` ->
    ``head.fc.``; final ``norm.`` -> ``head.norm.``. Linear weights are reshaped to 1x1 kernels for ``conv_mlp``
    models. timm/convatlas state dicts (with ``head.norm`` or ``norm_pre``) are returned unchanged.
    """
    if "model" in state_dict and isinstance(state_dict["model"], dict):
        state_dict = state_dict["model"]
    if "head.norm.weight" in state_dict or "norm_pre.weight" in state_dict:
        return dict(state_dict)
    target = model.state_dict()
    out: dict[str, Tensor] = {}
    for k, v in state_dict.items():
        k = k.replace("downsample_layers.0.", "stem.")
        k = re.sub(r"^stages\.(\d+)\.(\d+)\.", r"stages.\1.blocks.\2.", k)
        k = re.sub(r"^downsample_layers\.(\d+)\.(\d+)\.", r"stages.\1.downsample.\2.", k)
        k = k.replace("dwconv", "conv_dw").replace("pwconv", "mlp.fc")
        if k.startswith("head."):
            k = "head.fc." + k[len("head.") :]
        elif k.startswith("norm."):
            k = "head." + k
        if k in target and v.ndim == 2 and target[k].ndim == 4:
            v = v.reshape(target[k].shape)
        out[k] = v
    return out


# ---- training recipes (card: official main.py defaults + TRAINING.md) ------------------------------------------
IMAGENET1K_RECIPE: dict[str, Any] = {
    "optimizer": "adamw", "lr": 4e-3, "lr_reference_batch": 4096, "epochs": 300, "warmup_epochs": 20,
    "min_lr": 1e-6, "weight_decay": 0.05, "label_smoothing": 0.1, "ema_decay": 0.9999, "ls_init_value": 1e-6,
    "head_init_scale": 1.0, "drop_path_rate": {"convnext_tiny": 0.1, "convnext_small": 0.4, "convnext_base": 0.5,
                                               "convnext_large": 0.5},
    "augmentation": {"rand_augment": "rand-m9-mstd0.5-inc1", "mixup": 0.8, "cutmix": 1.0, "random_erasing": 0.25,
                     "interpolation": "bicubic"},
}  # fmt: skip
IMAGENET22K_RECIPE: dict[str, Any] = {
    **IMAGENET1K_RECIPE, "epochs": 90, "warmup_epochs": 5,
    "drop_path_rate": {"convnext_tiny": 0.1, "convnext_small": 0.1, "convnext_base": 0.1, "convnext_large": 0.1,
                       "convnext_xlarge": 0.2},
}  # fmt: skip
FINETUNE_384_RECIPE: dict[str, Any] = {
    "optimizer": "adamw", "lr": 5e-5, "lr_reference_batch": 512, "epochs": 30, "warmup_epochs": 0,
    "weight_decay": 1e-8, "layer_decay": {"in1k_to_384": 0.7, "in22k_to_in1k": 0.8}, "head_init_scale": 0.001,
    "label_smoothing": 0.1, "ema_decay": 0.9999, "augmentation": {"mixup": 0.0, "cutmix": 0.0},
}  # fmt: skip


def imagenet_train_config(variant: str = "convnext_tiny", total_batch: int = 4096, **overrides: Any) -> Any:
    """``TrainConfig`` of the official ImageNet-1k recipe, lr scaled linearly from 4e-3 at batch 4096.

    The engine's trainer covers optimizer, schedule, label smoothing and EMA; the augmentations
    (``IMAGENET1K_RECIPE["augmentation"]``) belong to the data pipeline, and the model's drop-path rate is
    ``IMAGENET1K_RECIPE["drop_path_rate"][variant]`` (pass it to ``create_model``).
    """
    from convatlas.engine.trainer import TrainConfig

    r = IMAGENET1K_RECIPE
    cfg = {
        "epochs": r["epochs"], "batch_size": total_batch, "lr": r["lr"] * total_batch / r["lr_reference_batch"],
        "warmup_epochs": r["warmup_epochs"], "min_lr": r["min_lr"], "weight_decay": r["weight_decay"],
        "label_smoothing": r["label_smoothing"], "ema": True, "ema_decay": r["ema_decay"],
    }  # fmt: skip
    if variant not in r["drop_path_rate"]:
        raise ValueError(f"no official ImageNet-1k recipe for {variant!r}; known: {sorted(r['drop_path_rate'])}")
    cfg.update(overrides)
    return TrainConfig(**cfg)


# ---- variants ------------------------------------------------------------------------------------------------
def _reported(params: int, gmacs: float, top1: float | None = None, top1_22k: float | None = None) -> Reported:
    metrics = {}
    if top1 is not None:
        metrics["imagenet_top1"] = top1
    if top1_22k is not None:
        metrics["imagenet_top1_in22k_ft"] = top1_22k
    return Reported(
        params=params, params_exact=True, gmacs=gmacs, resolution=224, metrics=metrics, macs_tol=0.03,
        source="params/MACs: timm 1.0.31 (card); top-1: official README (paper Tables 1/2)",
    )  # fmt: skip


_ENTRY = {"paper": "convnext", "input_size": (3, 224, 224), "test_input_size": (3, 64, 64)}
_TIMM_ONLY = "timm-only variant (not in the paper)"


def _reg(reference: str, reported: Reported | None = None, **kw: Any) -> Callable:
    return register_model(reference=f"timm:{reference}", reported=reported, **_ENTRY, **kw)


@register_model(paper="convnext", test_only=True, input_size=(3, 64, 64), test_input_size=(3, 64, 64), num_classes=10)
def test_convnext(**kwargs: Any) -> ConvNeXt:
    """Tiny ConvNeXt for the generic tests (1 block per stage, 8..32 channels)."""
    return ConvNeXt(**{"depths": (1, 1, 1, 1), "dims": (8, 16, 24, 32), "num_classes": 10, **kwargs})


@_reg("convnext_atto", _reported(3_695_520, 0.547), tags=(_TIMM_ONLY,))
def convnext_atto(**kwargs: Any) -> ConvNeXt:
    return ConvNeXt(**{"depths": (2, 2, 6, 2), "dims": (40, 80, 160, 320), "conv_mlp": True, **kwargs})


@_reg("convnext_atto_ols", _reported(3_702_912, 0.577), tags=(_TIMM_ONLY,))
def convnext_atto_ols(**kwargs: Any) -> ConvNeXt:
    return ConvNeXt(**{"depths": (2, 2, 6, 2), "dims": (40, 80, 160, 320), "conv_mlp": True,
                       "stem_type": "overlap_tiered", **kwargs})  # fmt: skip


@_reg("convnext_femto", _reported(5_217_784, 0.780), tags=(_TIMM_ONLY,))
def convnext_femto(**kwargs: Any) -> ConvNeXt:
    return ConvNeXt(**{"depths": (2, 2, 6, 2), "dims": (48, 96, 192, 384), "conv_mlp": True, **kwargs})


@_reg("convnext_pico", _reported(9_045_672, 1.367), tags=(_TIMM_ONLY,))
def convnext_pico(**kwargs: Any) -> ConvNeXt:
    return ConvNeXt(**{"depths": (2, 2, 6, 2), "dims": (64, 128, 256, 512), "conv_mlp": True, **kwargs})


@_reg("convnext_nano", _reported(15_593_560, 2.446), tags=(_TIMM_ONLY,))
def convnext_nano(**kwargs: Any) -> ConvNeXt:
    return ConvNeXt(**{"depths": (2, 2, 8, 2), "dims": (80, 160, 320, 640), "conv_mlp": True, **kwargs})


@_reg("convnext_tiny", _reported(28_589_128, 4.456, 82.1, 82.9))
def convnext_tiny(**kwargs: Any) -> ConvNeXt:
    return ConvNeXt(**{"depths": (3, 3, 9, 3), "dims": (96, 192, 384, 768), **kwargs})


@_reg("convnext_tiny_hnf", _reported(28_589_128, 4.456), tags=(_TIMM_ONLY,))
def convnext_tiny_hnf(**kwargs: Any) -> ConvNeXt:
    return ConvNeXt(**{"depths": (3, 3, 9, 3), "dims": (96, 192, 384, 768), "head_norm_first": True,
                       "conv_mlp": True, **kwargs})  # fmt: skip


@_reg("convnext_small", _reported(50_223_688, 8.684, 83.1, 84.6))
def convnext_small(**kwargs: Any) -> ConvNeXt:
    return ConvNeXt(**{"depths": (3, 3, 27, 3), "dims": (96, 192, 384, 768), **kwargs})


@_reg("convnext_base", _reported(88_591_464, 15.355, 83.8, 85.8))
def convnext_base(**kwargs: Any) -> ConvNeXt:
    return ConvNeXt(**{"depths": (3, 3, 27, 3), "dims": (128, 256, 512, 1024), **kwargs})


@_reg("convnext_large", _reported(197_767_336, 34.361, 84.3, 86.6))
def convnext_large(**kwargs: Any) -> ConvNeXt:
    return ConvNeXt(**{"depths": (3, 3, 27, 3), "dims": (192, 384, 768, 1536), **kwargs})


@_reg("convnext_large_mlp", _reported(200_128_168, 34.364), tags=("timm-only head (Linear+GELU 1536 pre-logits)",))
def convnext_large_mlp(**kwargs: Any) -> ConvNeXt:
    return ConvNeXt(**{"depths": (3, 3, 27, 3), "dims": (192, 384, 768, 1536), "head_hidden_size": 1536, **kwargs})


@_reg("convnext_xlarge", _reported(350_196_968, 60.921, None, 87.0))
def convnext_xlarge(**kwargs: Any) -> ConvNeXt:
    return ConvNeXt(**{"depths": (3, 3, 27, 3), "dims": (256, 512, 1024, 2048), **kwargs})


@_reg("convnext_xxlarge", _reported(846_471_016, 151.570), tags=("timm-only (CLIP, LN eps 1e-5)",))
def convnext_xxlarge(**kwargs: Any) -> ConvNeXt:
    return ConvNeXt(**{"depths": (3, 4, 30, 3), "dims": (384, 768, 1536, 3072), "norm_eps": 1e-5, **kwargs})


# ---- identities (card: "How to verify") -----------------------------------------------------------------------
@register_identity("convnext", "block: NHWC Linear+LN layout == NCHW 1x1-conv+LayerNorm2d layout")
def _identity_layouts() -> str:
    torch.manual_seed(0)
    a, b = ConvNeXtBlock(32, conv_mlp=False, ls_init_value=0.5), ConvNeXtBlock(32, conv_mlp=True, ls_init_value=0.5)
    sd = {k: v.reshape(b.state_dict()[k].shape) for k, v in a.state_dict().items()}
    b.load_state_dict(sd)
    x = torch.randn(2, 32, 9, 9)
    with torch.enable_grad():  # the module-by-module forward of both layouts
        err = (a(x) - b(x)).abs().max().item()
    assert err < 1e-5, f"max abs error {err:.2e}"
    return f"max abs error {err:.2e}"


@register_identity("convnext", "LayerNorm2d == F.layer_norm over the permuted channels-last tensor")
def _identity_ln2d() -> str:
    torch.manual_seed(0)
    ln = LayerNorm2d(16)
    nn.init.normal_(ln.weight)
    nn.init.normal_(ln.bias)
    x = torch.randn(2, 16, 5, 7)
    ref = F.layer_norm(x.permute(0, 2, 3, 1), (16,), ln.weight, ln.bias, 1e-6).permute(0, 3, 1, 2)
    err = (ln(x) - ref).abs().max().item()
    assert err < 1e-6, f"max abs error {err:.2e}"
    return f"max abs error {err:.2e}"


@register_identity("convnext", "layer scale 0: every block is the identity (net = stem -> downsamplers -> head)")
def _identity_layer_scale_zero() -> str:
    torch.manual_seed(0)
    m = ConvNeXt(depths=(1, 2, 1, 1), dims=(8, 16, 24, 32), num_classes=5, ls_init_value=0.0).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        y = m.stem(x)
        for s in m.stages:
            y = s.downsample(y)
        ref = m.head(y)
        err = (m(x) - ref).abs().max().item()
    assert err < 1e-6, f"max abs error {err:.2e}"
    return f"max abs error {err:.2e}"


@register_identity("convnext", "fused inference kernel == module-by-module forward (tiny, 64x64)")
def _identity_fast_path() -> str:
    torch.manual_seed(0)
    m = ConvNeXt(depths=(1, 1, 2, 1), dims=(16, 32, 48, 64), num_classes=5, ls_init_value=0.3).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        fast = m(x)
    with torch.enable_grad():
        ref = m(x)
    err = ((fast - ref).abs().max() / ref.abs().max()).item()
    assert err < 1e-5, f"max rel error {err:.2e}"
    return f"max rel error {err:.2e}"
