"""From the reference Hyrax's last schema (7) to ours (8).

- optimizer and scheduler keyword tables named by import path (`["torch.optim.SGD"] lr = 0.01`) become
  `[optimizer.kwargs]` / `[scheduler.kwargs]` of the class that `optimizer.name` / `scheduler.name` picks;
- `reduce_dimensions.<algorithm>.fit_sample_size` becomes `reduce_dimensions.fit_sample_size`;
- `split.rng_seed` becomes `split.seed`; splits a `[split]` doesn't size share what the sized ones leave;
  `criterion.band_loss_reduction` moves to the model that uses it;
- a matplotlib colormap name in `visualize.cmap` ("viridis") becomes the bokeh palette ("Viridis256");
- `false`/empty placeholders of the reference (`model.name = ""`, `data_set.nan_mode = false`) are
  dropped so our defaults apply; a `crop_to = [w, h]` becomes one size;
- `[download]` (HSC cutouts) becomes ours with provider "hsc" (migrations/reference_download.py);
- the settings of the reference's HSC and LSST classes move to their tables here, and an LSST data set's
  catalogue, bands and size become a `[download]` with provider "rubin" (migrations/reference_datasets.py).
"""

from libhyrax.config.migrations import (
    has_path,
    move,
    pop_path,
    reference_datasets,
    reference_download,
    remainder_to_the_rest,
    set_path,
    step,
)

# the reference drew with matplotlib colormap names; our map is bokeh, whose palettes have these names
MATPLOTLIB_TO_BOKEH = {
    n.lower(): f"{n}256"
    for n in (
        "Viridis",
        "Magma",
        "Inferno",
        "Plasma",
        "Cividis",
        "Turbo",
        "Greys",
        "Blues",
        "Greens",
        "Oranges",
        "Purples",
        "Reds",
    )
}
MATPLOTLIB_TO_BOKEH |= {"gray": "Greys256", "grey": "Greys256"}


# the class-named tables of the reference's default config; any other (a user's setting for a class the
# config doesn't pick) is left for the loader to refuse, naming optimizer.name / scheduler.name
REFERENCE_DEFAULT_TABLES = {
    "torch.optim.SGD": {"lr": 0.01, "momentum": 0.9},
    "torch.optim.Adam": {"lr": 0.01},
    "torch.optim.lr_scheduler.ExponentialLR": {"gamma": 1},
    "torch.optim.lr_scheduler.ConstantLR": {"last_epoch": -1},
}


@step(7, "reference Hyrax v7 -> Hyrax v8 (optimizer/scheduler kwargs tables, reduce and split keys)")
def migrate(cfg: dict) -> list[str]:
    done = []
    for section in ("optimizer", "scheduler"):
        name = (cfg.get(section) or {}).get("name")
        if isinstance(name, str) and isinstance(cfg.get(name), dict):
            cfg[section]["kwargs"] = cfg.pop(name)
            done.append(f'["{name}"] -> [{section}.kwargs]')
    for key in [k for k, v in cfg.items() if "." in k and isinstance(v, dict)]:
        if cfg[key] == REFERENCE_DEFAULT_TABLES.get(key):  # its defaults file, copied: not a setting
            cfg.pop(key)
            done.append(f'["{key}"] dropped (the reference\'s default, for a class not configured)')
    red = cfg.get("reduce_dimensions") or {}
    algo = red.get("algorithm", "umap")
    if has_path(cfg, f"reduce_dimensions.{algo}.fit_sample_size"):
        done += move(cfg, f"reduce_dimensions.{algo}.fit_sample_size", "reduce_dimensions.fit_sample_size")
    done += move(cfg, "split.rng_seed", "split.seed")
    if isinstance(cfg.get("split"), dict) and any(k in cfg["split"] for k in ("train", "validate", "test")):
        done += remainder_to_the_rest(cfg["split"])
    done += move(cfg, "criterion.band_loss_reduction", "model.HyraxAutoencoderV2.band_loss_reduction")
    for placeholder in ("model.name", "data_set.nan_mode", "criterion.name"):
        if has_path(cfg, placeholder):
            value = pop_path(cfg, placeholder)
            if value not in ("", False, "torch.nn.CrossEntropyLoss"):
                set_path(cfg, placeholder, value)
            else:
                done.append(f"{placeholder} = {value!r} dropped (our default applies)")
    cmap = (cfg.get("visualize") or {}).get("cmap")
    if isinstance(cmap, str) and cmap.lower() in MATPLOTLIB_TO_BOKEH:
        cfg["visualize"]["cmap"] = MATPLOTLIB_TO_BOKEH[cmap.lower()]
        done.append(f"visualize.cmap {cmap!r} -> {cfg['visualize']['cmap']!r} (a bokeh palette)")
    crop = (cfg.get("data_set") or {}).get("crop_to")
    if isinstance(crop, list) and crop:
        cfg["data_set"]["crop_to"] = int(crop[0])
        done.append(f"data_set.crop_to {crop} -> {int(crop[0])}")
    done += reference_download.migrate(cfg)  # [download]: HSC cutouts, provider "hsc"
    done += reference_datasets.migrate(cfg)  # HSCDCAE, HSCDataset and LSST settings; LSST's [download]
    return done
