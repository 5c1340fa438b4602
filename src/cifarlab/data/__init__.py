"""Data: sources -> decoded uint8 arrays (cached) -> splits -> batches on the device."""

from cifarlab.data.arrays import SplitArrays
from cifarlab.data.dataset import CifarData, load_dataset, resolve_source
from cifarlab.data.loader import TensorLoader

__all__ = ["CifarData", "SplitArrays", "TensorLoader", "load_dataset", "resolve_source"]
