"""Embedded scikit-learn digits: contents, fixed stratified split, transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from convatlas.data.digits import digits_split_indices, load_digits_arrays, load_digits_dataset
from convatlas.data.transforms import resize_normalize


def test_embedded_arrays():
    images, labels = load_digits_arrays()
    assert images.shape == (1797, 8, 8) and images.dtype == np.uint8 and labels.shape == (1797,)
    assert images.min() == 0 and images.max() == 16
    assert np.bincount(labels).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]  # sklearn's counts
    # first sample of sklearn's load_digits is a 0 with this top row
    assert labels[0] == 0 and images[0, 0].tolist() == [0, 0, 5, 13, 9, 1, 0, 0]


def test_split_is_fixed_stratified_and_disjoint():
    tr, va = digits_split_indices("train"), digits_split_indices("val")
    assert len(tr) == 1400 and len(va) == 397
    assert not set(tr) & set(va) and len(set(tr) | set(va)) == 1797
    assert np.array_equal(tr, digits_split_indices("train"))  # deterministic
    _, labels = load_digits_arrays()
    counts = np.bincount(labels[va], minlength=10)
    assert counts.min() >= 39 and counts.max() <= 40  # stratified: ~22% of every class
    assert not np.array_equal(tr, digits_split_indices("train", seed=1))
    with pytest.raises(ValueError, match="split"):
        digits_split_indices("test")


def test_dataset_shapes_range_and_upsampling():
    ds = load_digits_dataset("val", size=32, channels=3)
    x, y = ds.tensors
    assert x.shape == (397, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.min() >= -1 and x.max() <= 1 and x.min() == -1 and x.max() == 1
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])
    assert ds.classes == [str(i) for i in range(10)] and ds.data_info["img_size"] == 32
    g = load_digits_dataset("val", size=8, channels=1).tensors[0]
    images, _ = load_digits_arrays()
    raw = torch.from_numpy(images[digits_split_indices("val")].astype(np.float32))
    assert torch.allclose(g[:, 0], raw / 8 - 1)  # size 8: no resampling, 0..16 -> -1..1
    # bilinear upsampling keeps the mean intensity roughly and is smooth
    assert abs(x.mean().item() - g.mean().item()) < 0.05


def test_resize_normalize_errors_and_shrink():
    img = torch.randint(0, 256, (3, 40, 40), dtype=torch.uint8)
    out = resize_normalize(img, 20, max_value=255, channels=1)
    assert out.shape == (1, 20, 20) and out.min() >= -1 and out.max() <= 1
    with pytest.raises(ValueError, match="channels"):
        resize_normalize(img, 20, 255, channels=2)
    with pytest.raises(ValueError, match="shape"):
        resize_normalize(torch.zeros(5, 5), 4, 255)
