"""Data: every data set becomes uint8 image tensors (N, C, H, W) held in memory, decoded once.

Models take float images in [0, 1]; conversion and augmentation happen on whole batches
(``mmix_eval.data.augment``), never per image with PIL.
"""

from mmix_eval.data.core import DATASETS, ImageData, Split, load_data, parse_data_spec

__all__ = ["DATASETS", "ImageData", "Split", "load_data", "parse_data_spec"]
