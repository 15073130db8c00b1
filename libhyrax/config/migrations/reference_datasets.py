"""The reference Hyrax's settings of its built-in HSC and LSST classes, moved to where ours read them; a
helper of step 7 (007_reference_to_hyrax.py), not a step of its own.

    model.HSCDCAE_final_layer -> model.HSCDCAE.final_layer

For a data request naming LSSTDataset or DownloadedLSSTDataset (the reference read these from
[data_set] itself; here they are the class's own table, [data_set.<class>]):

    data_set.astropy_table -> catalog              data_set.filters -> bands
    data_set.semi_width_deg, semi_height_deg -> the same names (the cutout is 2 x the larger one wide)
    data_set.object_id_column_name -> object_id_column
    data_set.butler_repo, butler_collection, skymap -> dropped: the cutouts come from the Rubin Science
        Platform's cutout service (download provider "rubin"), with the token in ACCESS_TOKEN
    data_set.hats_catalog -> an error saying to write the objects to a table astropy reads

and, when the config has no [download] of its own, the same catalogue, bands and size as `[download]`
with provider "rubin" (the size from the reference's default semi-width, 0.00472 deg = 170 pixels, when
the config sets none), so `hyrax download` fetches what the data set would. For HSCDataset:
data_set.filters -> bands, data_set.object_id_column_name / filter_column_name / filename_column_name ->
object_id_column / filter_column / filename_column of [data_set.HSCDataset] (also for a request naming it
by the reference's spelling, HSCDataSet).
"""

from __future__ import annotations

from libhyrax.errors import ConfigError

RUBIN_PIXEL_ARCSEC = 0.2
REFERENCE_SEMI_WIDTH_DEG = 0.00472  # the reference's default data_set.semi_width_deg / semi_height_deg
LSST_CLASSES = ("LSSTDataset", "DownloadedLSSTDataset")
LSST_MOVES = {"astropy_table": "catalog", "filters": "bands", "semi_width_deg": "semi_width_deg",
              "semi_height_deg": "semi_height_deg", "object_id_column_name": "object_id_column"}
BUTLER_KEYS = ("butler_repo", "butler_collection", "skymap")
HSC_MOVES = {
    "filters": "bands",
    "object_id_column_name": "object_id_column",
    "filter_column_name": "filter_column",
    "filename_column_name": "filename_column",
}


def migrate(cfg: dict) -> list[str]:
    done = []
    model = cfg.get("model")
    if isinstance(model, dict) and "HSCDCAE_final_layer" in model:
        model.setdefault("HSCDCAE", {})["final_layer"] = model.pop("HSCDCAE_final_layer")
        done.append("model.HSCDCAE_final_layer -> model.HSCDCAE.final_layer")
    named = requested_classes(cfg)
    data_set = cfg.get("data_set")
    if not isinstance(data_set, dict):
        return done
    lsst = [c for c in LSST_CLASSES if c in named]
    if lsst and data_set.get("hats_catalog"):
        raise ConfigError(
            f"data_set.hats_catalog = {data_set['hats_catalog']!r}: HATS catalogues are not read here; "
            "write the objects (id, coord_ra, coord_dec) to a Parquet or FITS table (with lsdb: "
            "catalog.compute().to_parquet(...)) and name it in data_set.astropy_table"
        )
    if lsst:
        done += _move(data_set, lsst, LSST_MOVES)
        for key in BUTLER_KEYS:
            if data_set.pop(key, None) is not None:
                done.append(
                    f"data_set.{key} dropped: the cutouts come from the Rubin Science Platform's cutout "
                    "service (provider rubin; the token in ACCESS_TOKEN), not the Butler"
                )
        if "download" not in cfg:
            done += _download(cfg, data_set[lsst[0]])
    if named & {"HSCDataset", "HSCDataSet"}:  # the reference spells it HSCDataSet
        done += _move(data_set, ["HSCDataset"], HSC_MOVES)
    return done


def requested_classes(cfg: dict) -> set[str]:
    """The dataset_class of every dataset in the data request (by class name, the last part of a path)."""
    out = set()
    for group in (cfg.get("data_request") or {}).values():
        for spec in (group or {}).values() if isinstance(group, dict) else ():
            if isinstance(spec, dict) and isinstance(spec.get("dataset_class"), str):
                out.add(spec["dataset_class"].rpartition(".")[2])
    return out


def _move(data_set: dict, classes: list[str], moves: dict) -> list[str]:
    done = []
    for old, new in moves.items():
        if old not in data_set:
            continue
        value = data_set.pop(old)
        if value is False:  # the reference's "unset"
            continue
        for cls in classes:
            table = data_set.setdefault(cls, {})
            table.setdefault(new, value)
            done.append(f"data_set.{old} -> data_set.{cls}.{new}")
    return done


def _download(cfg: dict, table: dict) -> list[str]:
    if not table.get("catalog"):
        return []
    d = {"provider": "rubin", "catalog": table["catalog"], "ra_column": "coord_ra", "dec_column": "coord_dec"}
    if table.get("bands"):
        d["bands"] = list(table["bands"])
    widths = [float(table[k]) for k in ("semi_width_deg", "semi_height_deg") if table.get(k)]
    d["size"] = int(round(2 * max(widths or [REFERENCE_SEMI_WIDTH_DEG]) * 3600 / RUBIN_PIXEL_ARCSEC))
    if table.get("object_id_column"):
        d["id_column"] = table["object_id_column"]
    cfg["download"] = d
    return [
        f"[download] for the LSST data set: provider rubin, catalog {d['catalog']}, size {d['size']} pixels"
    ]
