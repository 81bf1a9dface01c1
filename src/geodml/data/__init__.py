"""Local data: readers, the compact on-disk format, partitioning, synthetic data."""

from geodml.data.dataset import Dataset, FeatureSpace, FieldSpec
from geodml.data.store import load_dataset, map_dataset, save_dataset

__all__ = ["Dataset", "FeatureSpace", "FieldSpec", "load_dataset", "map_dataset",
           "save_dataset"]
