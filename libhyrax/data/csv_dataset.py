"""HyraxCSVDataset: a CSV file (or any table astropy reads) whose columns are the fields, as in the
reference Hyrax: for tabular inputs, or joined onto image data sets through the data request.

    [data_request.train.cutouts]                 # the images
    dataset_class = "HyraxHDF5Dataset"
    data_location = "cutouts.h5"
    [data_request.train.photometry]              # a column of the CSV, joined on the cutouts' ids
    dataset_class = "HyraxCSVDataset"
    data_location = "photometry.csv"
    fields = ["redshift"]
    join_field = "object_id"

A column name with characters other than letters, digits and _ becomes a field with _ in their place
(`g-r` -> `g_r`), as the reference names its getters. `object_id` is the column that dataset_config
`object_id_column` names, else the column `object_id`, else the row number (zero-padded); read as text
from a CSV, so an id like 000123 keeps its zeros and joins with the ids of an image set. A table needs no
image: `check_dataset` accepts it (a model then reads its columns through prepare_inputs).
"""

from __future__ import annotations

import re

import numpy as np

from libhyrax.data.base import Dataset
from libhyrax.data.catalog import CatalogDataset
from libhyrax.data.fits import read_table
from libhyrax.errors import DataError, did_you_mean


class HyraxCSVDataset(CatalogDataset):
    """data_location: the table file. dataset_config: object_id_column (default: "object_id" when the table
    has it, else row numbers)."""

    tabular = True  # a table of values, no image: check_dataset doesn't ask for get_image

    def __init__(self, config=None, data_location=None):
        Dataset.__init__(self, config, data_location)
        if not data_location:
            raise DataError(
                "HyraxCSVDataset needs data_location: the path of a CSV file (or any table astropy reads)"
            )
        named = self.dataset_config.get("object_id_column")
        raw = read_table(data_location, text_columns=[named or "object_id"])  # ids as text: "000123" stays
        self.columns = {re.sub(r"\W", "_", name): values for name, values in raw.items()}
        id_col = named or ("object_id" if "object_id" in self.columns else None)
        self.n = len(next(iter(self.columns.values()))) if self.columns else 0
        if id_col is None:
            width = len(str(max(self.n - 1, 0)))
            self.columns["object_id"] = np.char.zfill(np.arange(self.n).astype(str), width)
        elif id_col not in self.columns:
            raise DataError(
                f"{data_location} has no column {id_col!r}{did_you_mean(id_col, self.columns)} "
                f"Columns: {', '.join(self.columns)}; set dataset_config.object_id_column"
            )
        else:
            self.columns["object_id"] = self.columns[id_col].astype(str)
