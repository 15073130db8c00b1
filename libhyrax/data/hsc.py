"""HSCDataset (also by the reference's spelling, HSCDataSet): a folder the reference Hyrax's HSC download
made (FITS files + manifest.fits), read in place and lazily, as the reference's HSCDataSet reads it (no
copy of millions of cutouts; `hyrax prepare` makes one fast HDF5 file of the same folder when wanted).

data_location: the folder (default: general.data_dir, where the reference downloads). The catalog is its
`manifest.fits` (a failed download, "Attempted", leaves its object out; a retried one counts once); a
folder without one is scanned for the reference's file names, `<17-digit object id>_..._<HSC-X>.fits`.
dataset_config (as FitsImageDataset's): bands (default the bands found, in G R I Z Y order; a reference
config's data_set.filters moves here), cutout_size (default the first file's size; data_set.crop_to
crops later), catalog, object_id_column, filter_column, filename_column. An object without every band is
left out (counted in the log).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np

from libhyrax.data.base import REGISTRY
from libhyrax.data.fits import MANIFEST, FitsImageDataset
from libhyrax.errors import DataError

log = logging.getLogger("hyrax.data")
FILE_NAME = re.compile(r"^([0-9]{17})_.*_(HSC-[A-Z0-9]+|NB[0-9]+)\.fits$")


class HSCDataset(FitsImageDataset):
    """A reference HSC download folder (see the module docstring)."""

    def __init__(self, config=None, data_location=None):
        general = (config or {}).get("general") or {}
        super().__init__(config, data_location or general.get("data_dir") or "./data")

    def catalog_table(self) -> dict[str, np.ndarray]:
        if self.dataset_config.get("catalog") or (self.folder / MANIFEST).is_file():
            return super().catalog_table()
        self.catalog_path = self.folder
        return scan_file_names(self.folder)


REGISTRY.register("HSCDataSet", HSCDataset)  # the reference's own spelling of the name


def scan_file_names(folder: Path) -> dict[str, np.ndarray]:
    """object_id, filter, filename of every file named as the reference's HSC download names them."""
    rows = []
    with os.scandir(folder) as entries:
        for entry in entries:
            m = FILE_NAME.match(entry.name)
            if m and entry.is_file():
                rows.append((m[1], m[2], entry.name))
    if not rows:
        raise DataError(
            f"{folder} has no {MANIFEST} and no files named <object id>_..._HSC-<band>.fits; is it the "
            "folder the reference Hyrax downloaded into?"
        )
    rows.sort()
    log.info("%s: no %s; %d files found by their names", folder, MANIFEST, len(rows))
    ids, filters, names = (np.array(col) for col in zip(*rows, strict=True))
    return {"object_id": ids, "filter": filters, "filename": names}
