"""Synthetic multichannel sound-event-detection data (card: phnn, stand-in for L3DAS21 Task 2 spectrograms).

:func:`synthetic_sed` draws noisy spectrogram-like inputs (n, C, F, T) and multi-hot frame targets (n, T/hop, K).
Each event class is a *pair* of frequency bands, and classes share bands (class k uses bands k and k+1 of a set of
K+1 band positions), so a single active band is ambiguous: detecting an event needs the band combination. Every
clip also holds unlabelled single-band distractors at the same band positions and background noise; each event
gets its own random per-channel gain (a crude direction of arrival). Events start and end on label-frame
boundaries (``hop`` spectrogram frames per label frame, as the official 100 ms label frames over 8 STFT frames).
Deterministic given ``seed``.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["synthetic_sed"]


def synthetic_sed(
    n: int,
    *,
    channels: int = 4,
    freq: int = 32,
    frames: int = 64,
    classes: int = 3,
    hop: int = 8,
    events_per_class: float = 1.0,
    distractors: int = 2,
    noise: float = 0.5,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """``n`` clips: inputs (n, channels, freq, frames) float32 and targets (n, frames // hop, classes) in {0, 1}.

    Args:
        channels / freq / frames: input shape per clip (frames divisible by ``hop``).
        classes: K event classes (K + 1 band positions spread over the frequency axis).
        hop: spectrogram frames per label frame.
        events_per_class: expected events per class and clip (Poisson).
        distractors: unlabelled single-band tones per clip.
        noise: standard deviation of the Gaussian background.
        seed: generator seed.
    """
    if frames % hop:
        raise ValueError(f"synthetic_sed: frames ({frames}) must be divisible by hop ({hop})")
    if freq < 4 * (classes + 1):
        raise ValueError(f"synthetic_sed: freq ({freq}) too small for {classes} classes (need >= {4 * (classes + 1)})")
    g = torch.Generator().manual_seed(seed)
    labels = frames // hop
    centres = torch.linspace(2, freq - 3, classes + 1)
    bins = torch.arange(freq, dtype=torch.float32)
    bands = torch.exp(-0.5 * ((bins[None] - centres[:, None]) / 1.0) ** 2)  # (K+1, F)
    x = noise * torch.randn(n, channels, freq, frames, generator=g)
    y = torch.zeros(n, labels, classes)

    def place(i: int, profile: Tensor, start: int, stop: int) -> None:
        gain = 0.4 + 0.6 * torch.rand(channels, generator=g)
        amp = 0.8 + 0.6 * torch.rand(1, generator=g)
        x[i, :, :, start * hop:stop * hop] += (amp * gain)[:, None, None] * profile[None, :, None]

    for i in range(n):
        for k in range(classes):
            count = int(torch.poisson(torch.tensor(events_per_class), generator=g).item())
            for _ in range(count):
                length = int(torch.randint(1, max(2, labels // 2) + 1, (1,), generator=g))
                start = int(torch.randint(0, labels - length + 1, (1,), generator=g))
                place(i, bands[k] + bands[k + 1], start, start + length)
                y[i, start:start + length, k] = 1.0
        for _ in range(distractors):
            b = int(torch.randint(0, classes + 1, (1,), generator=g))
            length = int(torch.randint(1, max(2, labels // 2) + 1, (1,), generator=g))
            start = int(torch.randint(0, labels - length + 1, (1,), generator=g))
            place(i, bands[b], start, start + length)
    return x, y
