"""Data: every data set becomes uint8 image tensors (N, C, H, W) held in memory, decoded once.

Models take float images in [0, 1]; conversion and augmentation happen on whole batches
(``mmix_eval.data.augment``), never per image with PIL. Sources: built-ins in ``mmix_eval.catalog.DATASETS``, an
installed entry point (group ``mmix_eval.datasets``), or a user's ``module:function[:ARG]``.
"""

from mmix_eval.catalog import DATASETS
from mmix_eval.data.core import ImageData, RawData, Split, data_source, load_data, load_data_cached, parse_data_spec

__all__ = [
    "DATASETS",
    "ImageData",
    "RawData",
    "Split",
    "data_source",
    "load_data",
    "load_data_cached",
    "parse_data_spec",
]
