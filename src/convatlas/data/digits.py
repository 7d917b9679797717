"""Embedded default dataset: scikit-learn's handwritten digits (1797 real 8x8 images, 10 classes).

Source: the UCI "Optical Recognition of Handwritten Digits" test set (Alpaydin & Kaynak, 1998), as shipped by
scikit-learn (``sklearn.datasets.load_digits``, BSD-3-Clause; UCI data licensed CC BY 4.0). ``digits.npz`` in
this package was generated once with scikit-learn 1.9.1::

    d = sklearn.datasets.load_digits()
    np.savez_compressed("digits.npz", images=d.images.astype(np.uint8), labels=d.target.astype(np.uint8))

``images``: uint8 (1797, 8, 8), values 0..16 (count of inked pixels in each 4x4 block of the 32x32 original;
16 = fully inked). ``labels``: uint8 (1797,), 0..9. scikit-learn is *not* a runtime dependency.

The split is fixed and deterministic: 1400 train / 397 val, stratified per class with a seeded permutation.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import numpy as np
import torch
from torch.utils.data import TensorDataset

from convatlas.data.transforms import resize_normalize

__all__ = ["load_digits_arrays", "load_digits_dataset", "digits_split_indices", "DIGITS_CLASSES", "NUM_TRAIN"]

DIGITS_CLASSES = [str(i) for i in range(10)]
NUM_TRAIN = 1400
_MAX_VALUE = 16


@lru_cache(maxsize=1)
def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The raw embedded arrays: images uint8 (1797, 8, 8) in 0..16 and labels uint8 (1797,)."""
    with resources.files("convatlas.data").joinpath("digits.npz").open("rb") as f:
        with np.load(f) as npz:
            images, labels = npz["images"], npz["labels"]
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def digits_split_indices(split: str, seed: int = 0, num_train: int = NUM_TRAIN) -> np.ndarray:
    """Sorted sample indices of ``split`` ("train" or "val"): stratified, deterministic for a given ``seed``.

    Each class contributes ``round(num_train * class_count / total)`` samples to train (largest-remainder
    rounding so the total is exactly ``num_train``); the rest go to val.
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    _, labels = load_digits_arrays()
    n = len(labels)
    if not 0 < num_train < n:
        raise ValueError(f"num_train must be in (0, {n}), got {num_train}")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * num_train / n
    take = np.floor(quota).astype(int)
    rest = num_train - take.sum()
    take[np.argsort(-(quota - take), kind="stable")[:rest]] += 1
    train = []
    for c, k in zip(classes, take):
        idx = np.flatnonzero(labels == c)
        train.append(rng.permutation(idx)[:k])
    train_idx = np.sort(np.concatenate(train))
    if split == "train":
        return train_idx
    mask = np.ones(n, dtype=bool)
    mask[train_idx] = False
    return np.flatnonzero(mask)


def load_digits_dataset(
    split: str = "train", size: int = 32, channels: int = 3, seed: int = 0, num_train: int = NUM_TRAIN
) -> TensorDataset:
    """The digits split as a ``TensorDataset`` of ``(image (C, size, size) float32 in [-1, 1], label int64)``.

    Args:
        split: "train" (1400 samples) or "val" (397 samples).
        size: output side; the 8x8 images are upsampled bilinearly.
        channels: 1 or 3 (the grey plane repeated).
        seed: split seed (keep the default 0 to compare runs).
        num_train: training-set size.

    The dataset has ``classes`` (list of names), ``data_info`` (dict recorded in checkpoints).
    """
    images, labels = load_digits_arrays()
    idx = digits_split_indices(split, seed=seed, num_train=num_train)
    x = torch.from_numpy(images[idx].copy())[:, None]  # (N, 1, 8, 8) uint8
    x = resize_normalize(x, size, max_value=_MAX_VALUE, channels=channels)
    y = torch.from_numpy(labels[idx].astype(np.int64))
    ds = TensorDataset(x, y)
    ds.classes = list(DIGITS_CLASSES)
    ds.data_info = {"name": "digits", "split": split, "img_size": size, "channels": channels, "seed": seed,
                    "classes": list(DIGITS_CLASSES), "normalize": "[-1,1]"}
    return ds
