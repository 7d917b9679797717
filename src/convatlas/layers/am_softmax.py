"""Additive-margin softmax classifier (AM-Softmax, CosFace-style) used to train TVConv's face models (card: tvconv).

The official ``face_recognition/model/heads.py`` (``AM_Softmax``, from FaceX-Zoo; margin 0.35, scale 32 in
``model_interface.py``): logits = s * cos(theta), with cos(theta_y) - m at the target class during training.
Cosines are between the L2-normalised embedding and the L2-normalised class centres.

Shapes: embedding (B, D) -> logits (B, num_classes); labels (B,) long (optional).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from convatlas.identities import register_component

__all__ = ["AMSoftmax"]


@register_component("tvconv")
class AMSoftmax(nn.Module):
    """Cosine classifier with an additive margin: (B, D) [+ labels (B,)] -> (B, num_classes).

    Args:
        in_features: embedding width D (512).
        num_classes: number of identities.
        margin: m subtracted from the target cosine when labels are given (0.35).
        scale: s multiplying all cosines (32).

    ``weight`` is stored (num_classes, D) like ``nn.Linear`` (the official parameter is its transpose, (D, K);
    the TVConv checkpoint converter transposes it). Without labels (evaluation) the logits are ``s * cos``, whose
    arg-max is the nearest class centre; with labels the target logit is ``s * (cos - m)`` (official behaviour).
    """

    def __init__(self, in_features: int, num_classes: int, margin: float = 0.35, scale: float = 32.0) -> None:
        super().__init__()
        if num_classes <= 0:
            raise ValueError(f"AMSoftmax: num_classes must be positive, got {num_classes}")
        self.in_features, self.num_classes = in_features, num_classes
        self.margin, self.scale = margin, scale
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        # Official init: uniform(-1, 1), each class centre renormed to unit length.
        self.weight.uniform_(-1.0, 1.0)
        self.weight.div_(self.weight.norm(dim=1, keepdim=True).clamp_min(1e-12))

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"AMSoftmax: expected embeddings (B, {self.in_features}), got {tuple(x.shape)}")
        cos = F.linear(F.normalize(x, dim=1), F.normalize(self.weight, dim=1)).clamp(-1.0, 1.0)
        if labels is not None:
            if labels.shape != (x.shape[0],):
                raise ValueError(f"AMSoftmax: expected labels ({x.shape[0]},), got {tuple(labels.shape)}")
            cos = cos - self.margin * F.one_hot(labels.long(), self.num_classes).to(cos.dtype)
        return self.scale * cos

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.num_classes}, margin={self.margin}, scale={self.scale}"
