"""Datasets: the embedded scikit-learn digits, class-per-folder images, shared transforms."""

from convatlas.data.digits import load_digits_dataset
from convatlas.data.image_folder import ImageFolderDataset, split_image_folder
from convatlas.data.transforms import resize_normalize

__all__ = ["ImageFolderDataset", "load_digits_dataset", "resize_normalize", "split_image_folder"]
