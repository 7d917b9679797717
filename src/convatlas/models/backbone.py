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

from torch import Tensor, nn

__all__ = ["FeatureExtractor", "checkpoint_seq"]


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
