"""Training and benchmark datasets: structures from several sources, leak-free splits,
simulated diffraction data, Parquet shards with a JSON index.

    from refractor_core.datasets import BuildConfig, build_dataset, open_dataset

See docs/datasets.md.
"""

from .build import BuildConfig, build_dataset
from .sources import StructureRecord
from .store import Dataset, open_dataset

__all__ = ["BuildConfig", "Dataset", "StructureRecord", "build_dataset", "open_dataset"]
