"""Point cloud -> image projection with learned per-point features (P2P-style encoder used by UniRepLKNet).

Card: unireplknet ("point cloud -> multi-view 2-D projections produced by conv layers, 3 x 224 x 224"). Facts from the
official ``AILab-CVC/UniRepLKNet/Point`` code (``models/layers/encoder.py`` ``ProjEnc``, ``models/layers/fusion.py``
``MultiViewFusionV2``, ``models/p2p_adaptor_lk.py``; read with the search tools, written from scratch here):

1. views: the cloud is rotated by V fixed Euler angles (table below, first V used; official ModelNet-40 config V=4)
   and projected orthographically onto the x-y plane;
2. per-point features: Conv1d 3->8 on the *unrotated* coordinates, an EdgeConv on the k=32 nearest neighbours
   (concat(f_j - f_i, f_i) -> 1x1 conv 16->64 (no bias) -> GroupNorm(4) -> LeakyReLU(0.2) -> max over j),
   Conv1d 64->64;
3. rasterisation: each point's feature is summed into the 3x3 pixels around its grid cell on an ``obj_size`` grid
   (grid step = largest x/y extent / (obj_size - 3), object centred), zero-padded to ``img_size``;
4. image block: ResNet BasicBlock(64) -> 1x1 conv; multi-view fusion (``MultiViewFusionV2``): 7x7 stride-7 conv
   64->128, one pre-norm transformer layer (8 heads x 128, MLP 256) over the tokens of all V views together,
   nearest upsampling back, 3x3 conv 128->64 + GELU, concat with the input, 1x1 conv 128->64 + GELU;
5. 1x1 conv 64->3 -> sigmoid -> ImageNet mean/std normalisation: a (B*V, 3, img_size, img_size) image batch.

Deviations: ``torch_scatter.scatter(sum)`` is ``Tensor.index_add_``-equivalent ``scatter_add``; the official
bounds ``assert`` is a clamp (it never triggers for finite inputs); kNN uses ``torch.cdist`` + ``topk``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["VIEW_ANGLES", "euler_to_matrix", "knn_indices", "EdgeConvFeatures", "MultiViewFusion",
           "PointProjectionEncoder"]

# Official view table (x, y, z Euler angles in radians): 4 side views, 4 oblique views, bottom, top.
VIEW_ANGLES: tuple[tuple[float, float, float], ...] = (
    (0.0, 0.0, math.pi / 2), (math.pi / 2, 0.0, math.pi / 2), (math.pi, 0.0, math.pi / 2),
    (3 * math.pi / 2, 0.0, math.pi / 2),
    (5 * math.pi / 4, -math.pi / 4, math.pi / 2), (5 * math.pi / 4, math.pi / 4, math.pi / 2),
    (7 * math.pi / 4, -math.pi / 4, math.pi / 2), (7 * math.pi / 4, math.pi / 4, math.pi / 2),
    (0.0, -math.pi / 2, math.pi / 2), (0.0, math.pi / 2, math.pi / 2),
)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def euler_to_matrix(angles: Tensor) -> Tensor:
    """(V, 3) Euler angles (x, y, z) -> (V, 3, 3) rotation matrices R = Rx @ Ry @ Rz."""
    x, y, z = angles.unbind(-1)
    o, i = torch.zeros_like(x), torch.ones_like(x)

    def mat(*rows: Tensor) -> Tensor:
        return torch.stack(rows, -1).reshape(*x.shape, 3, 3)

    rz = mat(z.cos(), -z.sin(), o, z.sin(), z.cos(), o, o, o, i)
    ry = mat(y.cos(), o, y.sin(), o, i, o, -y.sin(), o, y.cos())
    rx = mat(i, o, o, o, x.cos(), -x.sin(), o, x.sin(), x.cos())
    return rx @ ry @ rz


def knn_indices(points: Tensor, k: int) -> Tensor:
    """(B, N, 3) -> (B, N, k) indices of each point's k nearest neighbours (itself included)."""
    d = torch.cdist(points, points)
    return d.topk(k, dim=-1, largest=False).indices


class EdgeConvFeatures(nn.Module):
    """Per-point features from coordinates: (B, N, 3) -> (B, N, out_dim) (official ``input_trans``/``graph_layer``/
    ``proj_layer``).

    Args:
        trans_dim: width of the first 1x1 conv (8).
        out_dim: feature width (``graph_dim``, 64; GroupNorm with 4 groups).
        k: neighbours (``local_size``, 32).
    """

    def __init__(self, trans_dim: int = 8, out_dim: int = 64, k: int = 32) -> None:
        super().__init__()
        self.k = k
        self.input_trans = nn.Conv1d(3, trans_dim, 1)
        self.graph_layer = nn.Sequential(
            nn.Conv2d(2 * trans_dim, out_dim, 1, bias=False), nn.GroupNorm(4, out_dim), nn.LeakyReLU(0.2),
        )
        self.proj_layer = nn.Conv1d(out_dim, out_dim, 1)

    def forward(self, points: Tensor) -> Tensor:
        b, n, _ = points.shape
        f = self.input_trans(points.transpose(1, 2))                               # (B, C, N)
        idx = knn_indices(points.detach(), min(self.k, n))                          # (B, N, k)
        batch = torch.arange(b, device=f.device)[:, None, None]
        nbr = f.transpose(1, 2)[batch, idx].permute(0, 3, 1, 2)                      # (B, C, N, k)
        ctr = f.unsqueeze(-1).expand_as(nbr)
        g = self.graph_layer(torch.cat([nbr - ctr, ctr], dim=1)).amax(dim=-1)       # (B, out, N)
        return self.proj_layer(g).transpose(1, 2)                                   # (B, N, out)


class _BasicBlock(nn.Module):
    """ResNet basic block (timm ``BasicBlock(C, C)``): conv3x3-BN-ReLU-conv3x3-BN + x -> ReLU."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(dim)
        self.conv2 = nn.Conv2d(dim, dim, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(dim)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


class _PreNormAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(dim)
        self.to_qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.to_out = nn.Linear(heads * dim_head, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        q, k, v = self.to_qkv(self.norm(x)).view(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        return x + self.to_out(y.transpose(1, 2).reshape(b, n, -1))


class MultiViewFusion(nn.Module):
    """Cross-view fusion (official ``MultiViewFusionV2``): (B*V, C, S, S) -> (B*V, C, S, S).

    Args:
        dim: C (64).
        num_views: V.
        patch: stride/kernel of the token conv (7).
        width: token width (128); heads 8 x ``width``, MLP ``mlp_dim`` (256).
    """

    def __init__(self, dim: int, num_views: int, patch: int = 7, width: int = 128, heads: int = 8,
                 mlp_dim: int = 256) -> None:
        super().__init__()
        self.num_views = num_views
        self.conv1 = nn.Conv2d(dim, width, patch, stride=patch, bias=False)
        self.attn = _PreNormAttention(width, heads, width)
        self.ff_norm = nn.LayerNorm(width)
        self.ff = nn.Sequential(nn.Linear(width, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, width))
        self.conv2 = nn.Sequential(nn.Conv2d(width, dim, 3, padding=1), nn.GELU())
        self.conv3 = nn.Sequential(nn.Conv2d(2 * dim, dim, 1), nn.GELU())

    def forward(self, x: Tensor) -> Tensor:
        bv, _, s, _ = x.shape
        t = self.conv1(x)                                                     # (B*V, W, s', s')
        w, sp = t.shape[1], t.shape[-1]
        v = self.num_views
        tok = t.reshape(bv // v, v, w, sp * sp).permute(0, 1, 3, 2).reshape(bv // v, v * sp * sp, w)
        tok = self.attn(tok)
        tok = tok + self.ff(self.ff_norm(tok))
        t = tok.reshape(bv // v, v, sp * sp, w).permute(0, 1, 3, 2).reshape(bv, w, sp, sp)
        t = self.conv2(F.interpolate(t, size=(s, s), mode="nearest"))
        return self.conv3(torch.cat([t, x], dim=1))


class PointProjectionEncoder(nn.Module):
    """Point cloud -> V normalised pseudo-images: (B, N, 3) -> (B*V, 3, img_size, img_size) (card: unireplknet).

    Args:
        num_views: V (official ModelNet-40 config: 4; at most 10).
        img_size: output image size (224).
        obj_size: rasterisation grid (<= img_size; zero-padded to img_size).
        trans_dim, graph_dim, k: EdgeConv widths and neighbours (8, 64, 32).
        fusion: add :class:`MultiViewFusion` (official ``atten_fusion: True``).
        fusion_patch: token conv size of the fusion (7).
        fusion_width: token width of the fusion (128; attention 8 heads x width, MLP 2 x width).
    """

    def __init__(self, num_views: int = 4, img_size: int = 224, obj_size: int | None = None, trans_dim: int = 8,
                 graph_dim: int = 64, k: int = 32, fusion: bool = True, fusion_patch: int = 7,
                 fusion_width: int = 128) -> None:
        super().__init__()
        obj_size = img_size if obj_size is None else obj_size
        if not 1 <= num_views <= len(VIEW_ANGLES):
            raise ValueError(f"PointProjectionEncoder: num_views must be in 1..{len(VIEW_ANGLES)}, got {num_views}")
        if not 4 <= obj_size <= img_size:
            raise ValueError(f"PointProjectionEncoder: need 4 <= obj_size <= img_size, got {obj_size}, {img_size}")
        if fusion and img_size < fusion_patch:
            raise ValueError(f"PointProjectionEncoder: img_size {img_size} < fusion patch {fusion_patch}")
        self.num_views, self.img_size, self.obj_size = num_views, img_size, obj_size
        self.register_buffer("rotations", euler_to_matrix(torch.tensor(VIEW_ANGLES[:num_views])), persistent=False)
        self.register_buffer("offsets", torch.tensor([[i, j] for i in (-1, 0, 1) for j in (-1, 0, 1)],
                                                     dtype=torch.float32), persistent=False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.point_features = EdgeConvFeatures(trans_dim, graph_dim, k)
        self.img_block = nn.Sequential(_BasicBlock(graph_dim), nn.Conv2d(graph_dim, graph_dim, 1))
        self.fusion = (MultiViewFusion(graph_dim, num_views, fusion_patch, fusion_width, mlp_dim=2 * fusion_width)
                       if fusion else None)
        self.img_layer = nn.Conv2d(graph_dim, 3, 1)

    def pixel_indices(self, points: Tensor) -> Tensor:
        """(B, N, 3) -> (B*V, 9N) flat pixel indices on the obj_size grid (3x3 footprint per point, centred)."""
        b, n, _ = points.shape
        v, s = self.num_views, self.obj_size
        pc = (points.unsqueeze(1) @ self.rotations.to(points.dtype).transpose(1, 2)).reshape(b * v, n, 3)
        xy = pc[..., :2]
        lo = xy.amin(dim=1, keepdim=True)
        step = (xy.amax(dim=1, keepdim=True) - lo).amax(dim=-1, keepdim=True).clamp_min(1e-12) / (s - 3)
        cell = torch.floor((xy - lo) / step)                                            # (BV, N, 2)
        dense = (cell.unsqueeze(2) + self.offsets.to(cell.dtype)).reshape(b * v, 9 * n, 2) + 1
        centre = torch.floor((dense.amax(dim=1) + dense.amin(dim=1)) / 2)               # (BV, 2)
        dense = dense + (s / 2 - centre - 1).unsqueeze(1)
        dense = dense.clamp(0, s - 1).long()
        return dense[..., 0] * s + dense[..., 1]

    def forward(self, points: Tensor, feature_points: Tensor | None = None) -> Tensor:
        """``points`` (B, N, 3) are projected; per-point features come from ``feature_points`` (same shape,
        default ``points``): the official training loop projects a randomly rotated copy (``pc``) while the
        features see the original cloud (``original_pc``)."""
        b, n, _ = points.shape
        v, s, size = self.num_views, self.obj_size, self.img_size
        if feature_points is not None and feature_points.shape != points.shape:
            raise ValueError(f"PointProjectionEncoder: feature_points {tuple(feature_points.shape)} must match "
                             f"points {tuple(points.shape)}")
        feat = self.point_features(points if feature_points is None else feature_points)  # (B, N, C)
        c = feat.shape[-1]
        feat = feat.repeat_interleave(v, dim=0).unsqueeze(2).expand(b * v, n, 9, c).reshape(b * v, 9 * n, c)
        idx = self.pixel_indices(points)
        grid = feat.new_zeros(b * v, s * s, c).scatter_add(1, idx.unsqueeze(-1).expand(-1, -1, c), feat)
        img = grid.view(b * v, s, s, c).permute(0, 3, 1, 2)
        if s < size:
            lo = (size - s) // 2
            img = F.pad(img, (lo, size - s - lo, lo, size - s - lo))
        img = self.img_block(img)
        if self.fusion is not None:
            img = self.fusion(img)
        img = torch.sigmoid(self.img_layer(img))
        return (img - self.mean.to(img.dtype)) / self.std.to(img.dtype)
