"""The backbone contract every classification family follows, and the generic ``features_only`` wrapper.

A classification backbone (timm's API where timm has the concept) provides:

- ``forward_features(x)``: (B, C, H, W) -> last feature map (or tokens) before the head;
- ``forward_head(x, pre_logits=False)``: features -> logits (B, num_classes), or pooled features if pre_logits;
- ``forward(x) = forward_head(forward_features(x))``;
- ``reset_classifier(num_classes, global_pool=None)``; ``num_classes``; ``num_features``;
- ``set_grad_checkpointing(enable=True)``;
- ``feature_info``: a list of dicts ``{"num_chs": C_i, "reduction": stride_i, "module": "stages.i"}``;
- ``forward_stages(x)``: list of per-stage maps, one per ``feature_info`` entry (B, C_i, H/r_i, W/r_i);
- ``remove_head()``: drop every module only the classifier uses (so feature extractors carry no dead weights).

``create_model(name, features_only=True, out_indices=(...))`` wraps any such backbone in
:class:`FeatureExtractor`, which returns the list of maps; no family needs its own features-only code.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from convatlas.layers.validation import check_input

__all__ = ["FeatureExtractor", "LinearHeadBackbone", "StagedBackbone", "checkpoint_seq", "trunc_normal_init"]


class FeatureExtractor(nn.Module):
    """Returns per-stage feature maps of a backbone: (B, C, H, W) -> [(B, C_i, H/r_i, W/r_i), ...].

    Args:
        model: a backbone following the contract above.
        out_indices: which stages to return (default: all). Negative indices count from the end.

    Attributes:
        feature_info: the selected entries of ``model.feature_info`` (channels, reduction, module name).
    """

    def __init__(self, model: nn.Module, out_indices: Sequence[int] | None = None) -> None:
        super().__init__()
        info = list(model.feature_info)
        n = len(info)
        idx = list(range(n)) if out_indices is None else [i % n for i in out_indices]
        if any(not -n <= i < n for i in (out_indices or [])):
            raise ValueError(f"out_indices {tuple(out_indices)} out of range for {n} stages")
        model.remove_head()
        self.model = model
        self.out_indices = tuple(idx)
        self.feature_info = [info[i] for i in idx]
        self.pretrained_cfg = getattr(model, "pretrained_cfg", {})

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = self.model.forward_stages(x, max_index=max(self.out_indices))
        return [feats[i] for i in self.out_indices]

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.model.set_grad_checkpointing(enable)


def checkpoint_seq(blocks: nn.Sequential, x: Tensor) -> Tensor:
    """Run a sequence of blocks with activation checkpointing per block (saves memory, costs a recompute)."""
    from torch.utils.checkpoint import checkpoint

    for block in blocks:
        x = checkpoint(block, x, use_reentrant=False)
    return x


class StagedBackbone(nn.Module):
    """Base class implementing the backbone contract for the common stem -> stages -> head layout.

    A subclass builds ``self.stem`` (module), ``self.stages`` (``nn.Sequential`` of stages, each exposing a
    ``grad_checkpointing`` flag if it supports checkpointing), ``self.head`` (a head module with
    ``forward(x, pre_logits=False)``, ``reset(num_classes, pool_type)`` and ``fc``; see ``layers/classifier.py``),
    and sets ``self.in_chans``, ``self.num_classes``, ``self.num_features`` and ``self.feature_info``.
    ``self.min_input_size`` (default 32) and ``self.input_multiple`` (default 1) bound the accepted spatial size.
    With grad checkpointing on (in training), a stage with its own ``grad_checkpointing`` flag handles it; any
    other ``nn.Sequential`` stage is checkpointed block by block here. Subclasses may override ``forward_head``
    (e.g. for a final norm before the head), ``forward_stages`` or ``_check``.
    """

    min_input_size: int = 32
    input_multiple: int = 1
    grad_checkpointing: bool = False

    def _check(self, x: Tensor) -> None:
        name = getattr(self, "pretrained_cfg", {}).get("architecture", type(self).__name__)
        check_input(name, x, ndim=4, channels=self.in_chans, min_size=self.min_input_size,
                    multiple_of=self.input_multiple if self.input_multiple > 1 else None)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Checkpoint activations block by block (memory for recompute)."""
        self.grad_checkpointing = enable
        for stage in getattr(self, "stages", ()):
            if hasattr(stage, "grad_checkpointing"):
                stage.grad_checkpointing = enable

    def forward_stages(self, x: Tensor, max_index: int | None = None) -> list[Tensor]:
        """(B, C, H, W) -> per-stage maps [(B, C_i, H/r_i, W/r_i)] up to stage ``max_index``."""
        self._check(x)
        x = self.stem(x)
        last = len(self.stages) - 1 if max_index is None else max_index
        out = []
        ckpt = self.grad_checkpointing and self.training
        for i, stage in enumerate(self.stages):
            if ckpt and isinstance(stage, nn.Sequential) and not hasattr(stage, "grad_checkpointing"):
                x = checkpoint_seq(stage, x)
            else:
                x = stage(x)
            out.append(x)
            if i >= last:
                break
        return out

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> last stage map (B, num_features, H/r, W/r)."""
        return self.forward_stages(x)[-1]

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Last stage map -> logits (B, num_classes), or pooled pre-logit features."""
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier with ``num_classes`` outputs (0: return pooled features)."""
        self.num_classes = num_classes
        self.head.reset(num_classes, global_pool)

    def remove_head(self) -> None:
        """Drop the head (used by :class:`FeatureExtractor`)."""
        self.head = nn.Identity()
        self.num_classes = 0


class LinearHeadBackbone(StagedBackbone):
    """A :class:`StagedBackbone` whose classifier is a plain ``nn.Linear`` (``nn.Identity`` for 0 classes).

    The classifier is the attribute ``classifier_name`` (``"head"``; torchvision layouts: ``"fc"``) over
    ``head_hidden_size`` features (default ``num_features``); build it with ``self.reset_classifier(num_classes)``.
    The default head is global average pooling -> classifier; a subclass with modules in between (a norm, an
    embedding) overrides ``forward_head`` and lists them in ``pre_head_modules`` so that ``remove_head`` drops them.
    """

    classifier_name: str = "head"
    pre_head_modules: tuple[str, ...] = ()

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """(B, C, H, W) -> logits (B, num_classes), or the pooled (B, C) features if ``pre_logits``."""
        x = x.mean((2, 3))
        return x if pre_logits else self.get_classifier()(x)

    def get_classifier(self) -> nn.Module:
        return getattr(self, self.classifier_name)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier with ``num_classes`` outputs (0: return pooled features)."""
        if global_pool not in (None, "avg"):
            raise ValueError(f"{type(self).__name__}: only global_pool='avg' is supported, got {global_pool!r}")
        self.num_classes = num_classes
        width = getattr(self, "head_hidden_size", self.num_features)
        setattr(self, self.classifier_name, nn.Linear(width, num_classes) if num_classes > 0 else nn.Identity())

    def remove_head(self) -> None:
        """Drop the classifier and ``pre_head_modules`` (used by :class:`FeatureExtractor`)."""
        for name in (*self.pre_head_modules, self.classifier_name):
            setattr(self, name, nn.Identity())
        self.num_classes = 0


@torch.no_grad()
def trunc_normal_init(module: nn.Module, std: float = 0.02) -> None:
    """timm-style init for one module (use with ``model.apply``): conv/linear weights N(0, std) truncated at
    +-2, biases zero."""
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
        nn.init.trunc_normal_(module.weight, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
