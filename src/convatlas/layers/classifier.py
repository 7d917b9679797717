"""Classifier heads for (B, C, H, W) feature maps, with timm's key names (``head.norm``, ``head.fc``, ...).

- :class:`ClassifierHead`: global pool -> dropout -> Linear.
- :class:`NormMlpClassifierHead`: global pool -> LayerNorm -> optional Linear+act (``pre_logits.fc``) -> dropout
  -> Linear. ConvNeXt's head (card: convnext: pool first, then LN, then the classifier).

Pooling types: ``"avg"`` (mean over H, W), ``"max"``, ``"avgmax"`` (mean of the two). Both heads accept
``num_classes=0``, which makes the classifier an identity (the pooled features are returned).
"""

from __future__ import annotations

from typing import Callable

from torch import Tensor, nn

from convatlas.layers.norm import LayerNorm

__all__ = ["global_pool2d", "ClassifierHead", "NormMlpClassifierHead", "POOL_TYPES"]

POOL_TYPES = ("avg", "max", "avgmax")


def _check_pool(pool_type: str) -> str:
    if pool_type not in POOL_TYPES:
        raise ValueError(f"global_pool must be one of {POOL_TYPES}, got {pool_type!r}")
    return pool_type


def global_pool2d(x: Tensor, pool_type: str = "avg") -> Tensor:
    """(B, C, H, W) -> (B, C) by global average / max / average-of-both pooling."""
    if pool_type == "avg":
        return x.mean((2, 3))
    if pool_type == "max":
        return x.amax((2, 3))
    if pool_type == "avgmax":
        return 0.5 * (x.mean((2, 3)) + x.amax((2, 3)))
    raise ValueError(f"global_pool must be one of {POOL_TYPES}, got {pool_type!r}")


class ClassifierHead(nn.Module):
    """Global pool -> dropout -> Linear: (B, C, H, W) -> (B, num_classes). Keys: ``fc``.

    Args:
        in_features: C.
        num_classes: outputs (0: identity classifier, returns pooled features).
        pool_type: ``"avg"``, ``"max"`` or ``"avgmax"``.
        drop_rate: dropout before the classifier.
    """

    def __init__(self, in_features: int, num_classes: int, pool_type: str = "avg", drop_rate: float = 0.0) -> None:
        super().__init__()
        self.in_features = self.num_features = in_features
        self.pool_type = _check_pool(pool_type)
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()

    def reset(self, num_classes: int, pool_type: str | None = None) -> None:
        """Replace the classifier (and optionally the pooling type)."""
        if pool_type is not None:
            self.pool_type = _check_pool(pool_type)
        ref = next(self.parameters(), None)
        kw = {"device": ref.device, "dtype": ref.dtype} if ref is not None else {}
        self.fc = nn.Linear(self.num_features, num_classes, **kw) if num_classes > 0 else nn.Identity()

    def forward(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.drop(global_pool2d(x, self.pool_type))
        return x if pre_logits else self.fc(x)


class NormMlpClassifierHead(nn.Module):
    """Global pool -> LayerNorm -> [Linear -> act] -> dropout -> Linear: (B, C, H, W) -> (B, num_classes).

    Keys: ``norm``, ``pre_logits.fc`` (only with ``hidden_size``), ``fc`` (timm's ``NormMlpClassifierHead``).

    Args:
        in_features: C.
        num_classes: outputs (0: identity classifier).
        hidden_size: width of the optional pre-logits Linear+act layer (ConvNeXt-L "mlp" head: 1536).
        pool_type: ``"avg"``, ``"max"`` or ``"avgmax"``.
        drop_rate: dropout before the classifier.
        norm_eps: LayerNorm epsilon (1e-6 in ConvNeXt).
        act_layer: activation of the pre-logits layer (default exact GELU).
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        hidden_size: int | None = None,
        pool_type: str = "avg",
        drop_rate: float = 0.0,
        norm_eps: float = 1e-6,
        act_layer: Callable[[], nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.hidden_size = hidden_size
        self.pool_type = _check_pool(pool_type)
        self.norm = LayerNorm(in_features, eps=norm_eps)
        if hidden_size:
            self.pre_logits = nn.Sequential()
            self.pre_logits.add_module("fc", nn.Linear(in_features, hidden_size))
            self.pre_logits.add_module("act", act_layer())
            self.num_features = hidden_size
        else:
            self.pre_logits = nn.Identity()
            self.num_features = in_features
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def reset(self, num_classes: int, pool_type: str | None = None) -> None:
        """Replace the classifier (and optionally the pooling type); norm and pre-logits are kept."""
        if pool_type is not None:
            self.pool_type = _check_pool(pool_type)
        ref = self.norm.weight
        kw = {"device": ref.device, "dtype": ref.dtype} if ref is not None else {}
        self.fc = nn.Linear(self.num_features, num_classes, **kw) if num_classes > 0 else nn.Identity()

    def forward(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.norm(global_pool2d(x, self.pool_type))
        x = self.drop(self.pre_logits(x))
        return x if pre_logits else self.fc(x)

