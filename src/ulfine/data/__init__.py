"""Long-tailed semi-supervised data: the split protocol, datasets, views and endless streams."""
from ulfine.data.build import LTSSLData, LTSSLSplits, build_ltssl_data, build_splits
from ulfine.data.datasets import DATASETS, SourceData
from ulfine.data.protocol import DISTRIBUTIONS, SplitError, long_tail_counts, split_counts
from ulfine.data.sources import BadImageError, DatasetError
from ulfine.data.stream import Stream, make_stream
from ulfine.data.transforms import Transforms, build_transforms
from ulfine.data.views import Views

__all__ = [
    "DATASETS",
    "DISTRIBUTIONS",
    "BadImageError",
    "DatasetError",
    "LTSSLData",
    "LTSSLSplits",
    "SourceData",
    "SplitError",
    "Stream",
    "Transforms",
    "Views",
    "build_ltssl_data",
    "build_splits",
    "build_transforms",
    "long_tail_counts",
    "make_stream",
    "split_counts",
]
