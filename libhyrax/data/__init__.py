"""Data: cutout files, datasets, the data request, splits, transforms and batch loaders.

    from libhyrax.data import open_group, make_loader
    g = open_group(cfg, "train")                       # the built-in sample by default
    for batch in make_loader(g, batch_size=256, shuffle=True, seed=0, epoch=0):
        batch["image"], batch["object_id"]

Nothing heavy is imported here: astropy, skimage and torch load inside the functions that need them.
"""

from __future__ import annotations

from libhyrax.data.base import REGISTRY, Dataset, dataset_class
from libhyrax.data.catalog import CatalogDataset
from libhyrax.data.check import check_dataset
from libhyrax.data.cifar import HyraxCifarDataset
from libhyrax.data.csv_dataset import HyraxCSVDataset
from libhyrax.data.fits import FitsImageDataset
from libhyrax.data.group import DataGroup, open_dataset, open_group
from libhyrax.data.hdf5_dataset import CutoutWriter, HyraxHDF5Dataset, open_cutouts, write_cutouts
from libhyrax.data.hsc import HSCDataset
from libhyrax.data.loader import make_loader
from libhyrax.data.lsst import DownloadedLSSTDataset, LSSTDataset
from libhyrax.data.random import HyraxRandomDataset
from libhyrax.data.sample import HyraxSample, sample_path
from libhyrax.data.synthetic import SyntheticSurvey, generate_survey
from libhyrax.data.transforms import Transform

builtins_loaded = True  # base.dataset_class imports this module so the built-in classes are registered

__all__ = [
    "REGISTRY",
    "CatalogDataset",
    "CutoutWriter",
    "DataGroup",
    "Dataset",
    "DownloadedLSSTDataset",
    "FitsImageDataset",
    "HSCDataset",
    "HyraxCSVDataset",
    "HyraxCifarDataset",
    "HyraxHDF5Dataset",
    "HyraxRandomDataset",
    "LSSTDataset",
    "HyraxSample",
    "SyntheticSurvey",
    "Transform",
    "check_dataset",
    "dataset_class",
    "generate_survey",
    "make_loader",
    "open_cutouts",
    "open_dataset",
    "open_group",
    "sample_path",
    "write_cutouts",
]
