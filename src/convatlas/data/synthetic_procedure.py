"""Synthetic "procedure" videos: ordered phases with noisy frame features (stand-in for REAL-Colon, card colontcn).

Each video visits the ``num_classes`` phases in order (0, 1, ..., K-1), each for a random duration; every frame's
feature is its phase prototype + a per-video ("center") offset + i.i.d. Gaussian noise (plus occasional outlier
frames whose feature is drawn from a random other phase, mimicking blurry/uninformative frames). A per-frame
classifier is therefore noisy and fragmented, while a temporal model that uses context can recover the phases.

Videos are grouped into ``num_centers`` centers with a center-specific feature offset, so cross-center evaluation
(the dual k-fold protocol, :mod:`convatlas.engine.kfold`) measures generalisation to an unseen domain.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["ProcedureVideo", "make_procedures", "pad_collate"]


@dataclass
class ProcedureVideo:
    """One synthetic video: features (C, T) float32, labels (T,) int64, its center id and a name."""

    features: Tensor
    labels: Tensor
    center: int
    name: str


def make_procedures(
    num_videos: int = 24,
    *,
    num_classes: int = 9,
    feat_dim: int = 64,
    min_phase: int = 15,
    max_phase: int = 60,
    noise: float = 2.0,
    outlier_rate: float = 0.1,
    center_shift: float = 0.5,
    num_centers: int = 4,
    seed: int = 0,
) -> list[ProcedureVideo]:
    """Generate ``num_videos`` videos (round-robin over centers).

    Args:
        num_videos: number of videos.
        num_classes: phases per video, visited in order.
        feat_dim: frame feature size.
        min_phase / max_phase: phase duration range in frames (uniform).
        noise: std of the per-frame Gaussian noise (prototypes have unit-norm-ish entries ~ N(0, 1)).
        outlier_rate: fraction of frames replaced by another phase's prototype (+ noise).
        center_shift: std of the per-center feature offset.
        num_centers: number of acquisition centers.
        seed: generator seed (prototypes are shared by all videos of one seed).
    """
    if num_classes < 2 or feat_dim < 1 or not 0 < min_phase <= max_phase:
        raise ValueError("make_procedures: need num_classes >= 2, feat_dim >= 1 and 0 < min_phase <= max_phase")
    g = torch.Generator().manual_seed(seed)
    protos = torch.randn(num_classes, feat_dim, generator=g)
    offsets = center_shift * torch.randn(num_centers, feat_dim, generator=g)
    videos = []
    for v in range(num_videos):
        c = v % num_centers
        durs = torch.randint(min_phase, max_phase + 1, (num_classes,), generator=g)
        labels = torch.repeat_interleave(torch.arange(num_classes), durs)
        t = labels.numel()
        src = labels.clone()
        out = torch.rand(t, generator=g) < outlier_rate
        src[out] = torch.randint(0, num_classes, (int(out.sum()),), generator=g)
        feats = protos[src] + offsets[c] + noise * torch.randn(t, feat_dim, generator=g)
        videos.append(ProcedureVideo(feats.T.contiguous(), labels, c, f"synthetic_{v:03d}_c{c}"))
    return videos


def pad_collate(videos: list[ProcedureVideo]) -> tuple[Tensor, Tensor, Tensor]:
    """Batch videos of different lengths: features (B, C, T_max) zero-padded, labels (B, T_max) with -100 on
    padding, mask (B, T_max) float (1 = valid frame)."""
    t_max = max(v.labels.numel() for v in videos)
    c = videos[0].features.shape[0]
    x = torch.zeros(len(videos), c, t_max)
    y = torch.full((len(videos), t_max), -100, dtype=torch.long)
    m = torch.zeros(len(videos), t_max)
    for i, v in enumerate(videos):
        t = v.labels.numel()
        x[i, :, :t] = v.features
        y[i, :t] = v.labels
        m[i, :t] = 1.0
    return x, y, m
