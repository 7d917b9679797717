"""Class-per-subfolder image datasets (``root/<class>/<image>``), the format ``convatlas train --data DIR`` reads.

Needs Pillow (the ``vision`` extra: ``pip install convatlas[vision]``), imported lazily. Images are converted to
RGB (``channels=3``) or greyscale (``channels=1``) and passed through
:func:`convatlas.data.transforms.resize_normalize`: float32 ``(C, size, size)`` in ``[-1, 1]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from convatlas.data.transforms import resize_normalize

__all__ = ["ImageFolderDataset", "load_image", "split_image_folder", "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


def _pil():  # noqa: ANN202
    try:
        from PIL import Image
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "reading image files needs Pillow: pip install 'convatlas[vision]' (or pip install pillow)"
        ) from e
    return Image


def load_image(path: str | Path, size: int, channels: int = 3) -> Tensor:
    """Read one image file -> float32 ``(channels, size, size)`` in ``[-1, 1]``; ValueError naming a bad file."""
    Image = _pil()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image file")
    try:
        with Image.open(path) as im:
            im = im.convert("RGB" if channels == 3 else "L")
            arr = np.asarray(im, dtype=np.uint8)
    except Exception as e:  # PIL raises UnidentifiedImageError, OSError (truncated), SyntaxError, ...
        raise ValueError(f"{path}: unreadable or corrupt image ({type(e).__name__}: {e})") from None
    t = torch.from_numpy(arr.copy())
    t = t[None] if t.dim() == 2 else t.permute(2, 0, 1)
    return resize_normalize(t, size, max_value=255, channels=channels)


class ImageFolderDataset(Dataset):
    """Images in ``root/<class_name>/*.{png,jpg,...}``; classes sorted by name -> labels 0..K-1.

    Args:
        root: dataset folder.
        size: output side (images are resized to ``size x size``).
        channels: 1 (greyscale) or 3 (RGB).
        classes: class names to use (and their order); default: the sorted subfolder names. Passing the training
            set's classes to a validation set keeps label ids consistent.
        indices: optional subset of the sorted sample list (used by :func:`split_image_folder`).
        validate: decode every image now, so a corrupt file fails at construction instead of mid-epoch.

    Items: ``(image (C, size, size) float32, label int64)``.
    """

    def __init__(
        self,
        root: str | Path,
        size: int = 32,
        channels: int = 3,
        classes: Sequence[str] | None = None,
        indices: Sequence[int] | None = None,
        validate: bool = False,
    ) -> None:
        _pil()  # fail early with the install hint
        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f"{self.root}: image folder does not exist (expected root/<class>/<image files>)")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        if size < 1:
            raise ValueError(f"size must be positive, got {size}")
        found = sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if classes is None:
            classes = found
        else:
            missing = [c for c in classes if c not in found]
            if missing:
                raise ValueError(f"{self.root}: class folders {missing} not found (found {found})")
        if not classes:
            raise ValueError(f"{self.root}: no class subfolders found (expected root/<class>/<image files>)")
        self.classes = list(classes)
        self.size, self.channels = size, channels
        samples: list[tuple[Path, int]] = []
        for label, name in enumerate(self.classes):
            files = sorted(
                p for p in (self.root / name).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
            )
            samples.extend((p, label) for p in files)
        if not samples:
            raise ValueError(
                f"{self.root}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in class folders {self.classes}"
            )
        if indices is not None:
            samples = [samples[i] for i in indices]
        self.samples = samples
        self.targets = [lbl for _, lbl in samples]
        self.data_info: dict[str, Any] = {
            "name": "folder", "root": str(self.root), "img_size": size, "channels": channels,
            "classes": self.classes, "normalize": "[-1,1]",
        }
        if validate:
            for i in range(len(self)):
                self[i]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        path, label = self.samples[index]
        return load_image(path, self.size, self.channels), torch.tensor(label, dtype=torch.int64)


def split_image_folder(
    root: str | Path, size: int = 32, channels: int = 3, val_fraction: float = 0.2, seed: int = 0,
    validate: bool = False,
) -> tuple[ImageFolderDataset, ImageFolderDataset]:
    """Train/val datasets from a folder.

    If ``root/train`` exists, it is the training set and ``root/val`` the validation set (which must then
    exist). Otherwise the images of ``root`` are split per class, deterministically for ``seed``.
    """
    root = Path(root)
    if (root / "train").is_dir():
        train = ImageFolderDataset(root / "train", size, channels, validate=validate)
        if not (root / "val").is_dir():
            raise ValueError(f"{root}: has train/ but no val/ folder")
        val = ImageFolderDataset(root / "val", size, channels, classes=train.classes, validate=validate)
        return train, val
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    full = ImageFolderDataset(root, size, channels)
    rng = np.random.default_rng(seed)
    targets = np.asarray(full.targets)
    train_idx, val_idx = [], []
    for c in range(len(full.classes)):
        idx = rng.permutation(np.flatnonzero(targets == c))
        n_val = int(round(len(idx) * val_fraction)) if len(idx) > 1 else 0
        val_idx.extend(idx[:n_val].tolist())
        train_idx.extend(idx[n_val:].tolist())
    if not val_idx:
        raise ValueError(f"{root}: too few images for a validation split (val_fraction={val_fraction})")
    train = ImageFolderDataset(root, size, channels, classes=full.classes, indices=sorted(train_idx),
                               validate=validate)
    val = ImageFolderDataset(root, size, channels, classes=full.classes, indices=sorted(val_idx),
                             validate=validate)
    return train, val
