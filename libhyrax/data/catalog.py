"""CatalogDataset: the columns of any table astropy reads (FITS, CSV, ECSV, Parquet, VOTable) as fields,
e.g. to join photometry or labels onto cutouts by object id."""

from __future__ import annotations

import numpy as np

from libhyrax.data.base import Dataset
from libhyrax.data.fits import read_table
from libhyrax.errors import DataError, did_you_mean


class CatalogDataset(Dataset):
    """data_location: the table file. dataset_config: object_id_column (default "object_id")."""

    def __init__(self, config=None, data_location=None):
        super().__init__(config, data_location)
        if not data_location:
            raise DataError("CatalogDataset needs data_location: the path of a table file")
        self.columns = read_table(data_location)
        id_col = self.dataset_config.get("object_id_column", "object_id")
        if id_col not in self.columns:
            raise DataError(f"{data_location} has no column {id_col!r}{did_you_mean(id_col, self.columns)} "
                            f"Columns: {', '.join(self.columns)}; set dataset_config.object_id_column")
        self.columns["object_id"] = self.columns[id_col].astype(str)
        self.n = len(self.columns["object_id"])

    def __len__(self):
        return self.n

    @property
    def fields(self):
        return list(self.columns)

    def catalog_columns(self):
        return [c for c in self.columns if c != "object_id" and self.columns[c].ndim == 1]

    def get(self, field, index):
        return self.columns[field][index]

    def read(self, fields, start, stop):
        return {f: self.columns[f][start:stop] for f in fields}

    def read_rows(self, fields, rows):
        return {f: self.columns[f][np.asarray(rows, dtype=np.int64)] for f in fields}

    def column(self, field):
        return self.columns[field]
