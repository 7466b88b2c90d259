"""Data: datasets (names, folders, arrays) and view pipelines, ready for `trainer.fit`."""
from .datasets import (DATASETS, ArrayDataset, ImageFolderDataset, TorchvisionDataset, build_dataset, images_to_uint8_chw,
                       mnist_digits, num_classes_of)
from .loader import TransformedDataset, collate_views, make_dataloader, make_eval_loader
from .views import PRESETS, Augment, MultiViewTransform, eval_transform, make_views, preset_for

__all__ = ["DATASETS", "ArrayDataset", "ImageFolderDataset", "TorchvisionDataset", "build_dataset", "images_to_uint8_chw",
           "mnist_digits", "num_classes_of", "TransformedDataset", "collate_views", "make_dataloader", "make_eval_loader",
           "PRESETS", "Augment", "MultiViewTransform", "eval_transform", "make_views", "preset_for"]
