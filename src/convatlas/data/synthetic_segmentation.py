"""Synthetic semantic-segmentation scenes (CPU stand-ins for ADE20K-style dense prediction).

:func:`make_stripe_scenes`: rectangles filled with horizontal (class 1) or vertical (class 2) stripes on a flat
background (class 0). Both stripe classes use the same random colours, widths and periods, so a pixel's class
cannot be read from its own value, only from its neighbourhood (orientation of the local pattern) and, at the
stripes' dark lines, from the region around it. Cheap enough for a CPU learning check at 32x32.

:func:`make_shape_scenes`: filled squares vs. filled discs of the same colour/size distribution (class 1 / 2;
``with_rings=True`` adds 3 = ring) on a noisy background: the class depends on the outline, i.e. on spatial
context over tens of pixels (harder; needs more training).

:func:`make_noisy_rect_scenes`: rectangles whose class k shifts the mean colour by ``delta`` along channel k-1, under
i.i.d. pixel noise much larger than the shift: a single pixel is classified poorly (the per-pixel Bayes rule's
accuracy is returned by :func:`pixelwise_bayes_labels`), averaging over a neighbourhood recovers the regions. A
model beating the per-pixel optimum must aggregate spatial context. Cheapest of the three to learn.

Both return images (n, 3, S, S) float32 and label maps (n, S, S) int64 and are deterministic per seed.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["make_shape_scenes", "make_stripe_scenes", "make_noisy_rect_scenes", "pixelwise_bayes_labels"]


def make_shape_scenes(n: int, size: int = 64, *, max_shapes: int = 3, noise: float = 0.15, with_rings: bool = False,
                      seed: int = 0) -> tuple[Tensor, Tensor]:
    """``n`` scenes -> images (n, 3, size, size) float32 and label maps (n, size, size) int64."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing="ij")
    images = torch.empty(n, 3, size, size)
    labels = torch.zeros(n, size, size, dtype=torch.int64)
    kinds = 3 if with_rings else 2
    lo, hi = max(4, size // 8), max(6, size // 4)
    for i in range(n):
        bg = torch.rand(3, 1, 1, generator=g) * 0.3
        img = bg.expand(3, size, size).clone()
        lab = labels[i]
        for _ in range(int(torch.randint(1, max_shapes + 1, (1,), generator=g))):
            kind = int(torch.randint(0, kinds, (1,), generator=g))
            r = float(torch.randint(lo, hi + 1, (1,), generator=g))
            cy, cx = (float(v) for v in torch.randint(int(r), size - int(r), (2,), generator=g))
            if kind == 0:
                mask = ((yy - cy).abs() <= r * 0.85) & ((xx - cx).abs() <= r * 0.85)
            else:
                d = ((yy - cy) ** 2 + (xx - cx) ** 2).sqrt()
                mask = d <= r if kind == 1 else (d <= r) & (d >= r - 2.5)
            mask &= lab == 0  # keep earlier shapes on top (no relabelling of drawn pixels)
            colour = 0.4 + torch.rand(3, 1, generator=g) * 0.6
            img[:, mask] = colour
            lab[mask] = kind + 1
        images[i] = img + noise * torch.randn(3, size, size, generator=g)
    return images, labels


def make_stripe_scenes(n: int, size: int = 32, *, max_rects: int = 3, noise: float = 0.1, grid: int = 1,
                       sides: tuple[int, int] | None = None, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``n`` scenes of striped rectangles -> images (n, 3, size, size) float32, labels (n, size, size) int64.

    ``grid`` snaps rectangle corners to multiples of ``grid`` pixels (e.g. 8: region borders fall on the cells of
    a stride-8 feature map, which makes a quick learning check independent of boundary upsampling). ``sides``:
    (min, max) rectangle side in pixels (default (size//4, size//2)).
    """
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    images = torch.empty(n, 3, size, size)
    labels = torch.zeros(n, size, size, dtype=torch.int64)
    lo, hi = sides or (max(6, size // 4), max(8, size // 2))
    for i in range(n):
        img = (torch.rand(3, 1, 1, generator=g) * 0.5).expand(3, size, size).clone()
        lab = labels[i]
        for _ in range(int(torch.randint(1, max_rects + 1, (1,), generator=g))):
            vertical = bool(torch.randint(0, 2, (1,), generator=g))
            h, w = (max(grid, int(v) // grid * grid) for v in torch.randint(lo, hi + 1, (2,), generator=g))
            y0 = int(torch.randint(0, size - h + 1, (1,), generator=g)) // grid * grid
            x0 = int(torch.randint(0, size - w + 1, (1,), generator=g)) // grid * grid
            period = int(torch.randint(3, 5, (1,), generator=g))
            mask = (yy >= y0) & (yy < y0 + h) & (xx >= x0) & (xx < x0 + w) & (lab == 0)
            coord = xx if vertical else yy
            on = (coord % period) < (period // 2 + 1)
            c1, c2 = torch.rand(3, 1, generator=g), torch.rand(3, 1, generator=g)
            img[:, mask & on] = c1
            img[:, mask & ~on] = c2
            lab[mask] = 2 if vertical else 1
        images[i] = img + noise * torch.randn(3, size, size, generator=g)
    return images, labels


def make_noisy_rect_scenes(n: int, size: int = 32, *, num_classes: int = 3, max_rects: int = 2, delta: float = 1.0,
                           noise: float = 1.0, grid: int = 8, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``n`` scenes -> images (n, 3, size, size), labels (n, size, size): background 0, rectangles of class
    1..num_classes-1 (<= 3 channels) with mean ``delta`` on channel k-1, plus N(0, noise^2) on every pixel."""
    if not 2 <= num_classes <= 4:
        raise ValueError(f"make_noisy_rect_scenes: num_classes must be in [2, 4], got {num_classes}")
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    labels = torch.zeros(n, size, size, dtype=torch.int64)
    lo, hi = max(grid, size // 2), size
    for i in range(n):
        lab = labels[i]
        for _ in range(int(torch.randint(1, max_rects + 1, (1,), generator=g))):
            k = int(torch.randint(1, num_classes, (1,), generator=g))
            h, w = (max(grid, int(v) // grid * grid) for v in torch.randint(lo, hi + 1, (2,), generator=g))
            y0 = int(torch.randint(0, size - h + 1, (1,), generator=g)) // grid * grid
            x0 = int(torch.randint(0, size - w + 1, (1,), generator=g)) // grid * grid
            lab[(yy >= y0) & (yy < y0 + h) & (xx >= x0) & (xx < x0 + w) & (lab == 0)] = k
    mean = torch.zeros(n, 3, size, size)
    for k in range(1, num_classes):
        mean[:, k - 1] += delta * (labels == k).float()
    return mean + noise * torch.randn(n, 3, size, size, generator=g), labels


def pixelwise_bayes_labels(images: Tensor, num_classes: int = 3, delta: float = 1.0) -> Tensor:
    """Per-pixel maximum-likelihood class of :func:`make_noisy_rect_scenes` images (equal priors; no context)."""
    means = torch.zeros(num_classes, 3)
    for k in range(1, num_classes):
        means[k, k - 1] = delta
    d = ((images[:, None] - means[None, :, :, None, None]) ** 2).sum(2)
    return d.argmin(1)
