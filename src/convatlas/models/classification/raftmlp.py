"""RaftMLP (card: raftmlp, arXiv 2108.04384, official code okojoalg/raft-mlp, Apache-2.0).

An MLP-Mixer variant whose token mixing is split into a vertical MLP (along H) then a horizontal MLP (along W);
each spatial MLP mixes a "raft" of r channels jointly with the spatial axis (vectors of length r*h or r*w).
Channels are grouped with stride C/r: raft member i of group o is channel ``i * C/r + o``. Hierarchical
RaftMLP-S/M/L have four levels, each opened by a cross-scale MLP patch embedding (overlapping unfolds with
several kernel sizes, concatenated, one Linear). Token MLPs are tied to the construction resolution; as in the
official ``RaftShrink``/``RaftExpansion``, other token grids are bicubic-interpolated to it before each layer's
two raft blocks and back before its channel block, and each level bicubic-resizes its input up to a multiple of
its patch (official ``Level.forward``).

Card facts: params/GMACs exactly as the official class with the ImageNet YAMLs (S 9,868,768 / 2.087,
M 21,413,632 / 4.267, L 36,184,672 / 6.544 at 224; MACs count the Linear layers, not unfold/interpolation) and
the single-level ablations (12 x 768, patch 16: r=1/2/4 and the MLP-Mixer "org-mixer"). The LayerNorm inside a
raft block normalises channels arranged as (o, i) (weight index o*r + i), as the official code does, so its
weights load without permutation. Top-1 (76.1 / 78.8 / 79.4) is as recalled on the card (unconfirmed; the paper
text was not reachable: the stored copies of hugging.y1ng.com/papers/2108.04384.md, huggingface.co/papers/2108.04384,
catalyzex and pythonrepo hold only the abstract / introduction, and the official README (every stored version) has
no result table, so the paper's rounded params/FLOPs cannot be compared either; the registered params/GMACs are
the exact counts of the official class). Audit against the official libs/modules.py: MLPs end with a Dropout
(index 4) as officially; the two further ablations the README runs are registered (``raftmlp_m_mixer_emb``: official
``imagenet-raft-mlp-hierarchy-m``, plain patch embeddings; ``raftmlp_12_r2_cross_emb``); the multi-level
"shortcut" head (off in every config) is not built.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from convatlas.layers import DropPath
from convatlas.models.backbone import LinearHeadBackbone, checkpoint_seq
from convatlas.registry import Reported, register_model

__all__ = [
    "checkpoint_filter_fn", "imagenet_train_config", "IMAGENET1K_RECIPE",
    "RaftMLP", "RaftTokenMixing", "CrossScaleEmbedding", "ChannelBlock", "OriginalTokenMixing",
    "PatchMixerEmbedding",
]


class CrossScaleEmbedding(nn.Module):
    """Cross-scale MLP patch embedding: (B, C_in, H, W) -> (B, H/s, W/s, C_out), s = min(kernels).

    For each kernel k: unfold(k, stride s, padding (k - s)/2) -> (B, C_in*k*k, L); concatenated over kernels
    along features -> Linear(C_in * sum k^2 -> C_out).
    """

    def __init__(self, cin: int, cout: int, kernels: Sequence[int]) -> None:
        super().__init__()
        self.kernels = tuple(sorted(kernels))
        self.stride = min(self.kernels)
        self.fc = nn.Linear(cin * sum(k * k for k in self.kernels), cout)

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        s = self.stride
        cols = [F.unfold(x, k, padding=(k - s) // 2, stride=s) for k in self.kernels]
        tokens = torch.cat(cols, dim=1).transpose(1, 2)  # (B, L, F)
        return self.fc(tokens).view(b, h // s, w // s, -1)


class PatchMixerEmbedding(nn.Module):
    """MLP-Mixer patch embedding (official ``emb_mixer``): (B, C_in, H, W) -> (B, H/p, W/p, C_out).

    Non-overlapping p x p patches flattened in (p1, p2, c) order (official ``Rearrange``), then Linear.
    """

    def __init__(self, cin: int, cout: int, patch: int) -> None:
        super().__init__()
        self.stride = patch
        self.fc = nn.Linear(cin * patch * patch, cout)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        p = self.stride
        x = x.view(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1).reshape(b, h // p, w // p, p * p * c)
        return self.fc(x)


class _TokenMlp(nn.Sequential):
    # Official indices: fn.0 Linear, fn.1 GELU, fn.2 Dropout, fn.3 Linear, fn.4 Dropout.
    def __init__(self, n: int, e: int, drop: float) -> None:
        super().__init__(nn.Linear(n, n * e), nn.GELU(), nn.Dropout(drop), nn.Linear(n * e, n), nn.Dropout(drop))


def _resize_tokens(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Bicubic resize of a (B, h, w, C) token grid."""
    if tuple(x.shape[1:3]) == size:
        return x
    return F.interpolate(x.permute(0, 3, 1, 2), size=size, mode="bicubic", align_corners=False).permute(0, 2, 3, 1)


class RaftTokenMixing(nn.Module):
    """Vertical (``axis="h"``) or horizontal (``axis="w"``) raft token-mixing block with pre-LN and residual.

    (B, h, w, C) -> (B, h, w, C). Vectors of length r*n (n = grid size along the axis, index ``i * n + y``) go
    through Linear(r*n -> e*r*n) -> GELU -> Linear(e*r*n -> r*n); weights are shared over the other axis and the
    C/r channel groups.
    """

    def __init__(self, dim: int, raft: int, grid: tuple[int, int], axis: str, expansion: int = 2,
                 drop: float = 0.0, drop_path: float = 0.0) -> None:
        super().__init__()
        if dim % raft:
            raise ValueError(f"RaftTokenMixing: dim ({dim}) must be divisible by the raft size ({raft})")
        if axis not in ("h", "w"):
            raise ValueError(f"axis must be 'h' or 'w', got {axis!r}")
        self.dim, self.raft, self.grid, self.axis = dim, raft, tuple(grid), axis
        n = grid[0] if axis == "h" else grid[1]
        self.norm = nn.LayerNorm(dim)
        self.fn = _TokenMlp(raft * n, expansion, drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def mix(self, x: Tensor) -> Tensor:
        """The un-normalised mixing on a (B, h, w, C) grid of the construction size."""
        b, h, w, c = x.shape
        r, o = self.raft, c // self.raft
        y = x.view(b, h, w, r, o)
        if self.axis == "h":
            y = y.permute(0, 4, 2, 3, 1).reshape(b, o * w, r * h)  # (B, o*w, r*h), index i*h + y
            y = self.fn(y).view(b, o, w, r, h).permute(0, 4, 2, 3, 1)
        else:
            y = y.permute(0, 4, 1, 3, 2).reshape(b, o * h, r * w)
            y = self.fn(y).view(b, o, h, r, w).permute(0, 2, 4, 3, 1)
        return y.reshape(b, h, w, c)

    def forward(self, x: Tensor) -> Tensor:
        """(B, h, w, C) on the construction grid (``RaftLayer`` resizes other grids around both raft blocks)."""
        b, h, w, c = x.shape
        r, o = self.raft, c // self.raft
        # LayerNorm over channels arranged (o, i) like the official code (affine index o*r + i).
        y = x.view(b, h, w, r, o).transpose(-1, -2).reshape(b, h, w, c)
        y = self.norm(y).view(b, h, w, o, r).transpose(-1, -2).reshape(b, h, w, c)
        return x + self.drop_path(self.mix(y))


class OriginalTokenMixing(nn.Module):
    """MLP-Mixer token mixing over all h*w tokens (the ``org_mixer`` ablation): (B, h, w, C) -> (B, h, w, C)."""

    def __init__(self, dim: int, grid: tuple[int, int], expansion: int = 2, drop: float = 0.0,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        self.grid = tuple(grid)
        self.norm = nn.LayerNorm(dim)
        self.fn = _TokenMlp(grid[0] * grid[1], expansion, drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """(B, h, w, C) on the construction grid (``RaftLayer`` resizes other grids)."""
        b, h, w, c = x.shape
        y = self.fn(self.norm(x).reshape(b, h * w, c).transpose(1, 2)).transpose(1, 2).reshape(b, h, w, c)
        return x + self.drop_path(y)


class ChannelBlock(nn.Module):
    """Pre-LN channel MLP with residual: (..., C) -> (..., C), hidden C * expansion."""

    def __init__(self, dim: int, expansion: int = 4, drop: float = 0.0, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fn = _TokenMlp(dim, expansion, drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return x + self.drop_path(self.fn(self.norm(x)))


class RaftLayer(nn.Sequential):
    """Vertical raft block -> horizontal raft block -> channel block (``ser_pm``); or org-mixer -> channel.

    (B, h, w, C) -> (B, h, w, C). On a grid other than the construction grid the layer follows the official
    ``RaftShrink``/``RaftExpansion``: the whole token map is bicubic-resized to the construction grid before the
    token blocks (their norms and residuals act there) and resized back before the channel block.
    """

    def __init__(self, dim: int, raft: int | None, grid: tuple[int, int], token_exp: int, channel_exp: int,
                 drop: float, drop_path: float) -> None:
        if raft is None:
            mods = [OriginalTokenMixing(dim, grid, token_exp, drop, drop_path)]
        else:
            mods = [RaftTokenMixing(dim, raft, grid, "h", token_exp, drop, drop_path),
                    RaftTokenMixing(dim, raft, grid, "w", token_exp, drop, drop_path)]
        super().__init__(*mods, ChannelBlock(dim, channel_exp, drop, drop_path))
        self.grid = tuple(grid)

    def forward(self, x: Tensor) -> Tensor:
        size = tuple(x.shape[1:3])
        y = _resize_tokens(x, self.grid)
        for blk in list(self)[:-1]:
            y = blk(y)
        return self[-1](_resize_tokens(y, size))


class RaftMLP(LinearHeadBackbone):
    """Hierarchical RaftMLP: (B, 3, H, W) -> (B, num_classes).

    Args:
        levels: rows (depth, dim, patch, raft, kernels); ``raft=None`` uses MLP-Mixer token mixing.
        img_size: construction resolution (token MLP sizes follow it; other sizes are interpolated).
        token_expansion / channel_expansion: MLP ratios (2 / 4).
        drop_rate: dropout inside MLPs; drop_path_rate: the same stochastic-depth rate on every residual branch.
        embedding: ``"cross"`` (cross-scale MLP embedding with the rows' kernels, official ``emb_cross_mlp``) or
            ``"mixer"`` (non-overlapping linear patch embedding, official ``emb_mixer``; kernels ignored).
        in_chans / num_classes: input channels / classes.

    Inputs whose size at a level is not a multiple of that level's patch are bicubic-resized up to the next
    multiple there (official ``Level.forward``); token grids other than the construction grid are interpolated
    inside each layer (see :class:`RaftLayer`).
    """

    min_input_size = 1
    pre_head_modules = ("norm",)

    def __init__(
        self,
        levels: Sequence[tuple[int, int, int, int | None, Sequence[int]]],
        img_size: int = 224,
        token_expansion: int = 2,
        channel_expansion: int = 4,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        in_chans: int = 3,
        num_classes: int = 1000,
        embedding: str = "cross",
    ) -> None:
        super().__init__()
        if embedding not in ("cross", "mixer"):
            raise ValueError(f"RaftMLP: embedding must be 'cross' or 'mixer', got {embedding!r}")
        self.in_chans, self.img_size = in_chans, img_size
        self.patches: list[int] = []
        cin, grid, red = in_chans, img_size, 1
        self.levels = nn.ModuleList()
        self.feature_info = []
        for i, (depth, dim, patch, raft, kernels) in enumerate(levels):
            if embedding == "cross" and min(kernels) != patch:
                raise ValueError(f"RaftMLP level {i}: the smallest kernel must equal the patch size {patch}")
            grid, red = math.ceil(grid / patch), red * patch
            self.patches.append(patch)
            emb = (CrossScaleEmbedding(cin, dim, kernels) if embedding == "cross"
                   else PatchMixerEmbedding(cin, dim, patch))
            layers = [RaftLayer(dim, raft, (grid, grid), token_expansion, channel_expansion, drop_rate,
                                drop_path_rate) for _ in range(depth)]
            self.levels.append(nn.Sequential(emb, *layers))
            self.feature_info.append({"num_chs": dim, "reduction": red, "module": f"levels.{i}"})
            cin = dim
        self.total_stride = red
        self.num_features = cin
        self.norm = nn.LayerNorm(cin)
        self.reset_classifier(num_classes)

    @staticmethod
    def _fit_patch(x: Tensor, patch: int) -> Tensor:
        """Bicubic resize of a (B, C, H, W) map up to multiples of ``patch`` (official ``Level.forward``)."""
        h, w = x.shape[-2:]
        th, tw = math.ceil(h / patch) * patch, math.ceil(w / patch) * patch
        if (th, tw) != (h, w):
            x = F.interpolate(x, size=(th, tw), mode="bicubic", align_corners=False)
        return x

    def forward_stages(self, x: Tensor, max_index: int | None = None) -> list[Tensor]:
        """[(B, C_i, ceil(H/r_i), ceil(W/r_i))] channels-first maps after each level (sizes rounded up per level)."""
        self._check(x)
        out = []
        last = len(self.levels) - 1 if max_index is None else max_index
        for i, level in enumerate(self.levels):
            x = self._fit_patch(x, self.patches[i])
            tokens = checkpoint_seq(level, x) if self.grad_checkpointing and self.training else level(x)
            x = tokens.permute(0, 3, 1, 2)
            out.append(x)
            if i >= last:
                break
        return out

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.norm(x.permute(0, 2, 3, 1)).mean((1, 2))
        return x if pre_logits else self.head(x)


def checkpoint_filter_fn(state_dict: dict[str, Tensor], model: nn.Module | None = None) -> dict[str, Tensor]:
    """Map official raft-mlp keys (card: ``levels.i.fn.0.fc``, ``levels.i.fn.{2+j}.{1,3,5}.*``, ``heads.0.1``,
    ``classifier``) to this layout. Raft-block LayerNorms are ``.norm.1.`` (after a rearrange) officially."""
    import re

    block = {"1": "0", "3": "1", "5": "2"}  # vertical, horizontal, channel block
    out = {}
    for k, v in state_dict.items():
        m = re.match(r"levels\.(\d+)\.fn\.0\.fc\.(.*)", k) or re.match(r"levels\.(\d+)\.fn\.1\.(weight|bias)$", k)
        if m:  # cross-scale embedding (fn.0.fc) or emb_mixer Linear (fn.1)
            out[f"levels.{m[1]}.0.fc.{m[2]}"] = v
            continue
        m = re.match(r"levels\.(\d+)\.fn\.(\d+)\.([135])\.(norm\.1|norm|fn\.\d+)\.(.*)", k)
        if m:
            sub = "norm" if m[4].startswith("norm") else m[4]
            out[f"levels.{m[1]}.{int(m[2]) - 1}.{block[m[3]]}.{sub}.{m[5]}"] = v
            continue
        if k.startswith("heads.0.1."):
            out["norm." + k[len("heads.0.1."):]] = v
        elif k.startswith("classifier."):
            out["head." + k[len("classifier."):]] = v
        else:
            out[k] = v
    return out


# ---- training recipe (official configs/settings/imagenet-raft-mlp-cross-mlp-emb-{s,m,l}.yaml) -----------------------
IMAGENET1K_RECIPE: dict[str, Any] = {
    "optimizer": "adamw (not named in the YAML; presumed)", "lr": 2e-3, "lr_reference_batch": 2048, "min_lr": 1e-5,
    "epochs": 305, "warmup_epochs": 5, "weight_decay": 0.05, "label_smoothing": 0.1, "drop_path_rate": 0.1,
    "dropout": 0.0, "amp": False,
    "augmentation": {"mixup": 0.8, "cutmix": 1.0, "mixup_cutmix_p": 1.0, "random_erasing": 0.25, "color_jitter": 0.4},
}  # fmt: skip


def imagenet_train_config(total_batch: int = 2048, **overrides: Any) -> Any:
    """Engine ``TrainConfig`` of the official ImageNet-1k recipe (lr scaled linearly from 2e-3 at batch 2048).

    The augmentations (``IMAGENET1K_RECIPE["augmentation"]``) belong to the data pipeline; pass
    ``drop_path_rate=0.1`` to ``create_model``.
    """
    from convatlas.engine.trainer import TrainConfig

    r = IMAGENET1K_RECIPE
    cfg = {"epochs": r["epochs"], "batch_size": total_batch, "lr": r["lr"] * total_batch / r["lr_reference_batch"],
           "warmup_epochs": r["warmup_epochs"], "min_lr": r["min_lr"], "weight_decay": r["weight_decay"],
           "label_smoothing": r["label_smoothing"]}
    cfg.update(overrides)
    return TrainConfig(**cfg)


_SRC = "card raftmlp: official RaftMLP class with the ImageNet YAML settings (FlopCounterMode, Linear layers)"
_ENTRY = dict(paper="raftmlp", input_size=(3, 224, 224), test_input_size=(3, 64, 64))


def _rep(params: int, gmacs: float, top1: float | None = None) -> Reported:
    return Reported(params=params, gmacs=gmacs, resolution=224, params_exact=True, source=_SRC,
                    metrics={} if top1 is None else {"imagenet_top1_recalled": top1})


def _hier(d: Sequence[int]) -> list:
    return [(2, d[0], 4, 2, (4, 8)), (2, d[1], 2, 2, (2, 4)), (6, d[2], 2, 2, (2, 4)), (2, d[3], 2, 2, (2,))]


@register_model(reported=_rep(9_868_768, 2.087, 76.1), **_ENTRY)
def raftmlp_s(**kw: Any) -> RaftMLP:
    """RaftMLP-S (card: raftmlp)."""
    return RaftMLP(**{"levels": _hier((64, 128, 256, 512)), **kw})


@register_model(reported=_rep(21_413_632, 4.267, 78.8), **_ENTRY)
def raftmlp_m(**kw: Any) -> RaftMLP:
    """RaftMLP-M (card: raftmlp)."""
    return RaftMLP(**{"levels": _hier((96, 192, 384, 768)), **kw})


@register_model(reported=_rep(36_184_672, 6.544, 79.4), **_ENTRY)
def raftmlp_l(**kw: Any) -> RaftMLP:
    """RaftMLP-L (card: raftmlp)."""
    return RaftMLP(**{"levels": _hier((128, 192, 512, 1024)), **kw})


def _ablation(raft: int | None) -> list:
    return [(12, 768, 16, raft, (16,))]


@register_model(reported=_rep(58_105_432, 11.417), tags=("ablation",), **_ENTRY)
def raftmlp_12_r1(**kw: Any) -> RaftMLP:
    """Ablation: one level, 12 x 768, patch 16, raft r = 1 (card: raftmlp)."""
    return RaftMLP(**{"levels": _ablation(1), **kw})


@register_model(reported=_rep(58_162_888, 11.619), tags=("ablation",), **_ENTRY)
def raftmlp_12_r2(**kw: Any) -> RaftMLP:
    """Ablation: one level, 12 x 768, patch 16, raft r = 2."""
    return RaftMLP(**{"levels": _ablation(2), **kw})


@register_model(reported=_rep(58_390_696, 12.024), tags=("ablation",), **_ENTRY)
def raftmlp_12_r4(**kw: Any) -> RaftMLP:
    """Ablation: one level, 12 x 768, patch 16, raft r = 4 (the paper's 'raft-mlp')."""
    return RaftMLP(**{"levels": _ablation(4), **kw})


@register_model(reported=_rep(59_918_200, 12.631), tags=("ablation",), **_ENTRY)
def raftmlp_12_org_mixer(**kw: Any) -> RaftMLP:
    """Ablation baseline: MLP-Mixer token mixing (Mixer-B/16-like) in the same single-level frame."""
    return RaftMLP(**{"levels": _ablation(None), **kw})


# Official ablation configs not on the card's table (README "abrasion study" commands; counts from the same layer
# shapes, checked in the tests against the card's counts plus the embedding difference):
# imagenet-raft-mlp-hierarchy-m (RaftMLP-M with emb_mixer patch embeddings: the multi-scale embedding ablation) and
# imagenet-raft-mlp-r-2-cross-mlp-emb (the r = 2 single-level model with a (16, 32) cross-scale embedding).
_SRC_ABL = "official configs/settings YAML (README ablation commands); count from the official layer shapes"


@register_model(reported=Reported(params=19_920_640, gmacs=3.747, resolution=224, params_exact=True, source=_SRC_ABL),
                tags=("ablation",), **_ENTRY)
def raftmlp_m_mixer_emb(**kw: Any) -> RaftMLP:
    """Ablation: RaftMLP-M with plain (MLP-Mixer) patch embeddings instead of cross-scale ones."""
    return RaftMLP(**{"levels": _hier((96, 192, 384, 768)), "embedding": "mixer", **kw})


@register_model(reported=Reported(params=60_522_184, gmacs=12.081, resolution=224, params_exact=True, source=_SRC_ABL),
                tags=("ablation",), **_ENTRY)
def raftmlp_12_r2_cross_emb(**kw: Any) -> RaftMLP:
    """Ablation: one level, 12 x 768, raft r = 2, cross-scale embedding with kernels (16, 32)."""
    return RaftMLP(**{"levels": [(12, 768, 16, 2, (16, 32))], **kw})


@register_model(paper="raftmlp", test_only=True, input_size=(3, 32, 32), test_input_size=(3, 32, 32), num_classes=10)
def test_raftmlp(**kw: Any) -> RaftMLP:
    """Tiny two-level RaftMLP (dims 16/32) for the generic tests."""
    args = dict(levels=[(1, 16, 4, 2, (4, 8)), (1, 32, 2, 2, (2, 4))], img_size=32, num_classes=10)
    args.update(kw)
    return RaftMLP(**args)
