"""LSSTDataset and DownloadedLSSTDataset: Rubin (LSST) cutouts of a catalogue's objects, by the reference
Hyrax's names. The reference cuts them from deep coadds through the Butler, which runs only on the Rubin
Science Platform; here they come from the RSP's image cutout service (IVOA SODA, download provider
`rubin`, libhyrax/surveys/soda.py; any SODA service with provider `soda`), with a token from the
environment (ACCESS_TOKEN, on the RSP already set), never written.

    [data_request.train.lsst]
    dataset_class = "DownloadedLSSTDataset"
    data_location = "./data/lsst"                  # cutouts.h5 + download.h5 + download.csv go here
    [data_set.DownloadedLSSTDataset]
    catalog = "objects.fits"                       # a table astropy reads: an id and coord_ra/coord_dec
    bands = ["g", "r", "i"]
    size = 64                                      # pixels (0.2"); or semi_width_deg / semi_height_deg

DownloadedLSSTDataset fetches the catalogue's cutouts into `data_location` the first time it is opened
(the download stage's files and engine: a few connections, retries, every object's outcome recorded) and
reads them from there afterwards, lazily (a HyraxHDF5Dataset). Objects outside the footprint are left
out; if some could not be fetched (5xx, timeouts after the retries) opening fails saying how many, and
opening it again fetches just those. LSSTDataset is the same with its folder chosen for you under
general.data_dir (`lsst-<hash of the catalogue and settings>`): the reference fetches on every access;
here each cutout is fetched once. A reference config's data_set keys (astropy_table, filters,
semi_width_deg, semi_height_deg, object_id_column_name) move into these tables when it is migrated.

dataset_config: catalog, object_id_column (default: object_id, else objectId), ra_column ("coord_ra"),
dec_column ("coord_dec"), bands, size (false: 2 x the larger semi-width in pixels), semi_width_deg,
semi_height_deg, provider ("rubin"; its settings are `[download.<provider>]`, as for `hyrax download`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from libhyrax.data.hdf5_dataset import HyraxHDF5Dataset
from libhyrax.errors import ConfigError, DataError

log = logging.getLogger("hyrax.data")
ID_COLUMNS = ("object_id", "objectId")  # looked for in this order, as the reference does
LSST_BANDS = ("u", "g", "r", "i", "z", "y")


class DownloadedLSSTDataset(HyraxHDF5Dataset):
    """Cutouts fetched once into data_location, read from there (see the module docstring)."""

    fetches_into_location = True  # data_location is made when the cutouts are first fetched

    def __init__(self, config=None, data_location=None):
        from libhyrax.data.base import Dataset

        Dataset.__init__(self, config, data_location)  # self.dataset_config, before the folder is known
        d = download_settings(self.config, self.dataset_config, type(self).__name__)
        folder = Path(data_location or self.default_folder(d)).expanduser()
        fetch_into(folder, d)
        super().__init__(config, folder / "cutouts.h5")

    def default_folder(self, d: dict) -> Path:
        raise DataError("DownloadedLSSTDataset needs data_location: the folder its cutouts are fetched into")


class LSSTDataset(DownloadedLSSTDataset):
    """Cutouts fetched once into a folder under general.data_dir named for the catalogue and settings."""

    def default_folder(self, d: dict) -> Path:
        key = {
            k: d[k] for k in ("provider", "catalog", "id_column", "ra_column", "dec_column", "bands", "size")
        }
        key["service"] = d.get(d["provider"]) or {}
        digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]
        return Path((self.config.get("general") or {}).get("data_dir") or "./data") / f"lsst-{digest}"


def download_settings(cfg: dict, c: dict, who: str) -> dict:
    """The `[download]` section that fetches this dataset: the config's, with the dataset's catalogue,
    columns, bands and size, and its provider (default "rubin")."""
    from libhyrax.data.fits import read_table
    from libhyrax.surveys.base import PROVIDERS

    d = dict(cfg.get("download") or {})
    if not c.get("catalog"):
        raise ConfigError(
            f"{who} needs a catalogue: set data_set.{who}.catalog to a table of objects (an id and "
            "coord_ra/coord_dec in degrees); a reference config's data_set.astropy_table moves there"
        )
    provider = str(c.get("provider") or "rubin")
    cls = PROVIDERS.lookup(provider)
    service = d.get(provider) if isinstance(d.get(provider), dict) else {}
    id_col = c.get("object_id_column")
    if not id_col:
        columns = read_table(c["catalog"])
        id_col = next((n for n in ID_COLUMNS if n in columns), None)
        if id_col is None:
            raise DataError(
                f"{c['catalog']} has no object_id or objectId column; name the catalogue's unique id "
                f"column in data_set.{who}.object_id_column"
            )
    size = c.get("size")
    if not size:
        widths = [float(w) for w in (c.get("semi_width_deg"), c.get("semi_height_deg")) if w]
        if not widths:
            raise ConfigError(f"{who}: set data_set.{who}.size (pixels) or semi_width_deg/semi_height_deg")
        scale = float(service.get("pixel_scale") or getattr(cls, "pixel_scale", None) or 0.2)
        size = int(round(2 * max(widths) * 3600 / scale))
    return {
        **d,
        "provider": provider,
        "catalog": str(c["catalog"]),
        "id_column": id_col,
        "ra_column": c.get("ra_column") or "coord_ra",
        "dec_column": c.get("dec_column") or "coord_dec",
        "bands": list(c.get("bands") or LSST_BANDS),
        "size": int(size),
        "keep_fits": False,
        provider: service,
    }


def fetch_into(folder: Path, d: dict) -> None:
    """Fetch what `folder` lacks of the catalogue's cutouts (nothing when complete), as `hyrax download`
    does; a DataError when some could not be fetched yet (opening again fetches just those)."""
    from libhyrax.surveys.base import make_provider
    from libhyrax.surveys.catalog import read_catalog
    from libhyrax.surveys.fetch import Fetcher
    from libhyrax.surveys.store import Store  # here: the store imports libhyrax.data

    folder.mkdir(parents=True, exist_ok=True)
    provider = make_provider({"download": d})
    catalog = read_catalog(d)
    store = Store(
        folder / "cutouts.h5",
        folder / "download.h5",
        catalog,
        d["bands"],
        d["size"],
        provider=d["provider"],
        pixel_scale=provider.pixel_scale,
    )
    try:
        if store.todo_objects():
            log.info(
                "fetching %d objects' cutouts from %s into %s", store.todo_objects(), d["provider"], folder
            )
            fetcher = Fetcher.for_provider(provider, d, first_number=store.next_request)
            for answer in fetcher.answers(provider.requests(store.targets())):
                store.add(answer, provider.outcomes(answer))
        summary = store.finish()
    finally:
        store.close()
    store.write_csv(folder / "download.csv")
    if summary["failed"]:
        raise DataError(
            f"{summary['failed']} of {summary['objects']} objects could not be fetched yet into {folder} "
            f"({'; '.join(summary['reasons'])}); open the dataset again to fetch just those"
        )
    if not summary["ok"]:
        raise DataError(f"no object of {d['catalog']} could be fetched; see {folder / 'download.csv'}")
