"""Named DFT datasets: canonical sources, offline mirrors, converters and splits.

Example:
    >>> from datasets import load_dataset
    >>> ds = load_dataset("mlearn-Mo")          # verified against the catalog's sha256
    >>> len(ds.pool), len(ds.test), ds.pool[0].info["group"]

Every frame is an ``ase.Atoms`` with a SinglePointCalculator holding ``energy`` (eV),
``forces`` (eV/Å) and, where the source has it, ``stress`` (eV/Å³, ASE sign and Voigt
order xx, yy, zz, yz, xz, xy). ``atoms.info`` carries ``group`` (for per-group metrics),
``leak_group`` (frames that must stay on one side of a split) and ``source``. A user's file
is read with the keys of ``datasets.keys``; frames open along an axis keep their ``pbc``, and
each model sees them through ``datasets.periodicity``.
"""

from datasets.errors import DatasetError
from datasets.registry import DATASETS, Dataset, load_dataset

__all__ = ["DATASETS", "Dataset", "DatasetError", "load_dataset"]
