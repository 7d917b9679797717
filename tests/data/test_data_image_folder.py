"""Class-per-folder image datasets written as tiny PNGs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

PIL = pytest.importorskip("PIL", reason="image folders need the vision extra (Pillow)")
from PIL import Image  # noqa: E402

from convatlas.data.image_folder import ImageFolderDataset, load_image, split_image_folder  # noqa: E402


def _write(root, classes=("cat", "dog"), per_class=5, size=12):
    rng = np.random.default_rng(0)
    for ci, c in enumerate(classes):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            arr = np.full((size, size, 3), 40 + 150 * ci, np.uint8) + rng.integers(0, 20, (size, size, 3), np.uint8)
            Image.fromarray(arr).save(root / c / f"{i}.png")
    return root


def test_reads_classes_and_images(tmp_path):
    root = _write(tmp_path / "d")
    (root / "cat" / "notes.txt").write_text("ignored")
    ds = ImageFolderDataset(root, size=16)
    assert ds.classes == ["cat", "dog"] and len(ds) == 10
    x, y = ds[7]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and y.item() == 1
    assert -1 <= x.min() and x.max() <= 1
    assert ds[0][0].mean() < 0 < x.mean()  # dark cats, bright dogs
    g = ImageFolderDataset(root, size=8, channels=1)[0][0]
    assert g.shape == (1, 8, 8)


def test_pixel_values_exact(tmp_path):
    (tmp_path / "a").mkdir()
    arr = np.zeros((4, 4), np.uint8)
    arr[0, 0] = 255
    Image.fromarray(arr).save(tmp_path / "a" / "x.png")
    x = load_image(tmp_path / "a" / "x.png", 4, channels=1)
    assert x[0, 0, 0] == 1.0 and x[0, 1, 1] == -1.0


def test_missing_empty_and_corrupt(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        ImageFolderDataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no class subfolders"):
        ImageFolderDataset(tmp_path / "empty")
    (tmp_path / "noimg" / "a").mkdir(parents=True)
    with pytest.raises(ValueError, match="no image files"):
        ImageFolderDataset(tmp_path / "noimg")
    root = _write(tmp_path / "bad", per_class=2)
    bad = root / "dog" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    ds = ImageFolderDataset(root, size=8)
    idx = [str(p) for p, _ in ds.samples].index(str(bad))
    with pytest.raises(ValueError, match="broken.png.*corrupt"):
        ds[idx]
    with pytest.raises(ValueError, match="broken.png"):
        ImageFolderDataset(root, size=8, validate=True)
    good = root / "cat" / "0.png"  # truncated real PNG
    data = good.read_bytes()
    good.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="0.png"):
        load_image(good, 8)


def test_split_folder(tmp_path):
    root = _write(tmp_path / "d", per_class=10)
    tr, va = split_image_folder(root, size=8, val_fraction=0.2, seed=0)
    assert len(tr) == 16 and len(va) == 4 and sorted(va.targets) == [0, 0, 1, 1]
    assert not {p for p, _ in tr.samples} & {p for p, _ in va.samples}
    tr2, _ = split_image_folder(root, size=8, val_fraction=0.2, seed=0)
    assert tr.samples == tr2.samples
    _write(tmp_path / "s" / "train", per_class=3)
    _write(tmp_path / "s" / "val", per_class=1)
    tr, va = split_image_folder(tmp_path / "s", size=8)
    assert (len(tr), len(va)) == (6, 2) and va.classes == tr.classes
