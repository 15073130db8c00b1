"""Benchmark the structure of the latent space and of the map (issue 16): do the defaults give a map where
galaxy types separate, or a thin curve ordered by one number?

    .venv/bin/python benchmarks/bench_structure.py          # synthetic survey (3,000) + the sample
    .venv/bin/python benchmarks/bench_structure.py --survey 5000 --data survey
    .venv/bin/python benchmarks/bench_structure.py --set train.epochs=20 \
        --set model.HyraxAutoencoder.latent_dim=16
    .venv/bin/python benchmarks/bench_structure.py --set 'model.HyraxAutoencoder.latent_norm="none"' \
        --set reduce_dimensions.umap.kwargs.min_dist=0.1               # the defaults before issue 16
    .venv/bin/python benchmarks/bench_structure.py --keep /tmp/s   # then, without training again:
    .venv/bin/python benchmarks/bench_structure.py --latents /tmp/s \
        --set reduce_dimensions.umap.kwargs.whiten=true

Each data set goes through the real pipeline with the default config (plus --set): `libhyrax.train` ->
`libhyrax.infer` -> `libhyrax.umap`. Printed per data set:
  - latent PC1 %: the share of the latent variance on the first principal component, and PCs 90%: how many
    components hold 90% of it (a collapsed latent space: ~100% and 1);
  - what the map keeps of what the latents know (issue 25): for each known property (the survey's galaxy
    `label` and `anomaly_kind`, 5-NN accuracy, balanced for the kinds; the sample's catalogue log flux,
    size and r-b colour, 5-NN regression R^2), 5-fold cross-validated from the latents and from the 2-D
    map, in their own Euclidean distances (those `search`, `index` and the k-NN anomaly score use), and
    "kept": the map's share of what the latents get above chance;
  - neighbourhoods: on a seeded sample of 2,000, the share of each object's 10 latent nearest neighbours
    that are its 10 nearest on the map, and trustworthiness (libhyrax.reducers.fidelity, as `umap` records);
  - rho recon: Spearman rho of recon_error with the map's principal axis (the map's direction of largest
    spread, so a rotated map counts the same) and with its x axis; |rho| near 1 is a map ordered by
    reconstruction error; rho flux: the same for the sample's catalogue `flux`;
  - the seconds each stage took.

The figures move a little between runs (torch and UMAP on several threads); the seconds move with the load.

Map fidelity (issue 25; the latents of one --keep run, mapped again with --latents; load 10-18):
                          survey: type  kept  10-NN  trust  | sample: log flux  size         10-NN  trust
    latents                      0.773                      |         0.566     0.540
    whitened (issue 16's default) 0.963 161%   24%   0.93   |         0.232 41% 0.443 82%    10%   0.66
    as they are                  0.669  67%   42%   0.97   |         0.455 80% 0.484 90%    34%   0.91
    as they are, min_dist 0      0.678  69%   45%   0.98   |         0.464 82% 0.489 91%    35%   0.91
      (the default since issue 25: no setting tried serves both; this one serves real data)
    also tried on the sample: whitened + n_neighbors 50: 46% / 81%; as they are + n_neighbors 50: 68% / 87%,
    + n_neighbors 10: 80% / 87%; on the survey, whitening only the axes holding 90% of the variance: 0.619.
    The sample's r-b colour: latents 5-NN R^2 -0.11 (ridge 0.02), map -0.12; from the pixels 5-NN on the
    asinh central 16x16 0.42, on the whole raw stamp 0.05; two apertures' colours correlate 0.90: it is in
    the data, and the representation doesn't keep it.

Measured for issue 16 (3,000-object survey of seed 0, chance 0.461; the 1,000-object sample; general.seed 42):
                                  latent PC1  PCs 90%  kNN latent  kNN map  rho recon x
    before (latent_norm "none",
      no whitening)                   98.5%      1       0.617    0.56-0.58   -0.65
    whitening only                      "        "         "        0.856    +-0.7..0.8
    latent_norm "batch" only          60.2%      4       0.773      0.679      +0.46
    both (the defaults)               60.2%      4       0.773      0.963      +0.26
                                  sample: PC1  PCs 90%  rho recon x
    before (latent_norm "none",
      no whitening)                      99.5%     1    -0.88..-0.96
    whitening only                         "       "       +0.06
    latent_norm "batch" only             20.7%    10       -0.34
    both (the defaults)                  20.7%    10       -0.02
    survey seeds 1, 2 (kNN map): before 0.504 0.499; whitening only 0.877 0.908; latent_norm only 0.664 0.676;
        both 0.760 0.882 (kNN latent: before 0.584 0.579, latent_norm 0.782 0.757)
    sample map, 5-NN R^2 of size / log flux: before 0.01-0.04 / 0.20-0.23, after 0.47 / 0.25
    tried and not taken (survey seed 0): 20 epochs (twice the time) PC1 73.5%, kNN map 0.640; latent_dim 16
        PC1 99.2%, kNN map 0.439; a per-image brightness scale before asinh: kNN latent 0.891, map 0.754, PC1
        97.8% (with latent_norm and whitening: kNN latent 0.894 / 0.921, map 0.944 / 0.830 on seeds 0 / 1)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import numpy as np


def parse_set(items: list[str]) -> dict:
    """--set a.b.c=VALUE (a TOML value; bare words are strings) as a nested dict."""
    out: dict = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            parsed = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            parsed = value
        node = out
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = parsed
    return out


def merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def request(dataset_class: str, **dataset_config) -> dict:
    spec = {"dataset_class": dataset_class, "fields": ["image", "object_id"], "primary_id_field": "object_id"}
    if dataset_config:
        spec["dataset_config"] = dataset_config
    return {"train": {"data": spec}, "infer": {"data": spec}}


def pipeline(cfg: dict) -> dict:
    """train -> infer -> umap through the public API; the arrays and the seconds each stage took."""
    import libhyrax
    from libhyrax.data import open_group
    from libhyrax.hdf5 import open_result, read_ids

    times = {}
    t0 = time.perf_counter()
    run = libhyrax.train(cfg)
    times["train"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    latents = libhyrax.infer(cfg, from_run=run)
    times["infer"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    emb = libhyrax.umap(cfg, from_run=latents)
    times["umap"] = time.perf_counter() - t0
    with open_result(latents.path, "latents") as f:
        ids, z, recon = read_ids(f["object_id"]), f["latent"][:], f["recon_error"][:]
    with open_result(emb.path, "embedding") as f:
        emb_ids, xy = read_ids(f["object_id"]), f["embedding"][:]
    assert list(emb_ids) == list(ids)
    from libhyrax.config import resolve

    group = open_group(resolve(cfg), "infer")
    assert list(group.object_ids()) == list(ids)
    catalog = {c: group.catalog(c) for c in group.catalog_columns()}
    return {"latent": z, "recon_error": recon, "embedding": xy, "catalog": catalog, "seconds": times}


def pc_spread(z: np.ndarray) -> tuple[float, int]:
    """(fraction of the variance on PC1, number of PCs holding 90% of it)."""
    z = z - z.mean(0)
    s = np.linalg.svd(z.astype(np.float64), compute_uv=False) ** 2
    frac = s / s.sum()
    return float(frac[0]), int(np.searchsorted(np.cumsum(frac), 0.9) + 1)


def knn_accuracy(x: np.ndarray, y: np.ndarray, k: int = 5, folds: int = 5, seed: int = 0) -> float:
    """Cross-validated accuracy of a k-NN classifier of `y` on `x`, in x's own Euclidean distances (the
    distances `search`, `index` and the k-NN anomaly score use)."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    return float(cross_val_score(KNeighborsClassifier(k), x, y, cv=cv).mean())


def knn_r2(x: np.ndarray, y: np.ndarray, k: int = 5, folds: int = 5, seed: int = 0) -> float:
    """Cross-validated R^2 of a k-NN regression of `y` on `x`: does a neighbourhood share its value?"""
    from sklearn.model_selection import KFold, cross_val_score
    from sklearn.neighbors import KNeighborsRegressor

    cv = KFold(folds, shuffle=True, random_state=seed)
    return float(cross_val_score(KNeighborsRegressor(k), x, y, cv=cv, scoring="r2").mean())


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def principal_axis(xy: np.ndarray) -> np.ndarray:
    xy = xy - xy.mean(0)
    _, _, vt = np.linalg.svd(xy.astype(np.float64), full_matrices=False)
    return xy @ vt[0]


def balanced_knn_accuracy(x: np.ndarray, y: np.ndarray, k: int = 5, folds: int = 5, seed: int = 0) -> float:
    """As knn_accuracy, each class weighted the same (anomaly kinds: 95% of objects are "none")."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    return float(cross_val_score(KNeighborsClassifier(k), x, y, cv=cv, scoring="balanced_accuracy").mean())


def targets(cat: dict) -> dict[str, tuple[str, np.ndarray, float]]:
    """What the latents may know, by name: (kind, values, chance); kind "class" or "value"."""
    out = {}
    if "label" in cat:
        y = np.asarray(cat["label"])
        out["type"] = ("class", y, float(np.bincount(y).max() / len(y)))
    if "anomaly_kind" in cat:
        kinds, y = np.unique(np.asarray(cat["anomaly_kind"]).astype(str), return_inverse=True)
        out["anomaly kind"] = ("balanced", y, 1 / len(kinds))
    for column, name in (("flux", "log flux"), ("size", "size"), ("color_rb", "colour r-b")):
        if column in cat:
            value = np.asarray(cat[column], np.float64)
            out[name] = ("value", np.log10(np.clip(value, 1e-6, None)) if column == "flux" else value, 0.0)
    return out


def recovery(x: np.ndarray, kind: str, y: np.ndarray) -> float:
    return {"class": knn_accuracy, "balanced": balanced_knn_accuracy, "value": knn_r2}[kind](x, y)


def kept(latent_score: float, map_score: float, chance: float) -> float | None:
    """The share of what the latents know above chance that the map keeps (None: they know nothing)."""
    return (map_score - chance) / (latent_score - chance) if latent_score - chance > 0.05 else None


def fidelity(z: np.ndarray, xy: np.ndarray, cat: dict, sample: int = 2000) -> dict:
    """Per target, its 5-NN recovery from the latents and from the map and the share kept; and the map's
    neighbourhood fidelity (libhyrax.reducers.fidelity) on a seeded sample, as the umap stage records it."""
    from libhyrax.reducers.fidelity import neighbourhood_fidelity

    out = {}
    for name, (kind, y, chance) in targets(cat).items():
        a, b = recovery(z, kind, y), recovery(xy, kind, y)
        out[name] = {"latent": a, "map": b, "chance": chance, "kept": kept(a, b, chance)}
    rows = np.sort(np.random.default_rng(0).choice(len(z), min(sample, len(z)), replace=False))
    out["neighbourhoods"] = neighbourhood_fidelity(z[rows], xy[rows])
    return out


def figures(out: dict) -> dict:
    z, xy, recon, cat = out["latent"], out["embedding"], out["recon_error"], out["catalog"]
    pc1, n90 = pc_spread(z)
    axis = principal_axis(xy)
    fig = {
        "n": len(z),
        "latent_dim": z.shape[1],
        "pc1": pc1,
        "pcs90": n90,
        "rho_recon_axis": spearman(axis, recon),
        "rho_recon_x": spearman(xy[:, 0], recon),
        "seconds": {k: round(v, 1) for k, v in out["seconds"].items()},
        "fidelity": fidelity(z, xy, cat),
    }
    if "flux" in cat:
        fig["rho_flux_axis"] = spearman(axis, cat["flux"])
        fig["rho_flux_x"] = spearman(xy[:, 0], cat["flux"])
    return fig


def show(name: str, fig: dict) -> None:
    parts = [f"{name:8s} n={fig['n']:5d} latent PC1 {100 * fig['pc1']:5.1f}%  PCs 90% {fig['pcs90']:2d}"]
    parts.append(f"rho recon axis {fig['rho_recon_axis']:+.2f} x {fig['rho_recon_x']:+.2f}")
    if "rho_flux_axis" in fig:
        parts.append(f"rho flux axis {fig['rho_flux_axis']:+.2f} x {fig['rho_flux_x']:+.2f}")
    s = fig["seconds"]
    if s:
        parts.append(" ".join(f"{k} {v:.1f} s" for k, v in s.items()))
    print("  ".join(parts), flush=True)
    for target, f in fig["fidelity"].items():
        if target == "neighbourhoods":
            if f:
                print(
                    f"    neighbourhoods: the map keeps {100 * f['knn_overlap']:.1f}% of the latents' "
                    f"{f['k']} nearest neighbours, trustworthiness {f['trustworthiness']:.3f} "
                    f"({f['n']} objects)"
                )
            continue
        share = "n/a (the latents know nothing)" if f["kept"] is None else f"{100 * f['kept']:.0f}%"
        what = "R2" if f["chance"] == 0 else f"accuracy (chance {f['chance']:.3f})"
        print(
            f"    {target:12s} 5-NN {what}: latents {f['latent']:.3f}, map {f['map']:.3f}; kept {share}",
            flush=True,
        )


def remap(data: str, kept_dir: Path, cfg: dict) -> dict:
    """The arrays that --keep saved, mapped again with this config's reduce_dimensions (fitted as the umap
    stage fits: the reducer on every latent, then transform)."""
    from libhyrax.config import resolve
    from libhyrax.reducers import make_reducer

    arrays = np.load(kept_dir / f"{data}.npz")
    z = arrays["latent"]
    rd = resolve(cfg)["reduce_dimensions"]
    kwargs = dict(rd.get(rd["algorithm"], {}).get("kwargs", {}))
    kwargs.setdefault("random_state", cfg["general"]["seed"])
    t0 = time.perf_counter()
    red = make_reducer(rd["algorithm"], kwargs).fit(z)
    xy = red.transform(z)
    catalog = {k[len("catalog_") :]: arrays[k] for k in arrays.files if k.startswith("catalog_")}
    return {
        "latent": z,
        "recon_error": arrays["recon_error"],
        "embedding": xy,
        "catalog": catalog,
        "seconds": {"map": time.perf_counter() - t0},
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--survey", type=int, default=3000, help="objects in the synthetic survey")
    ap.add_argument("--data", nargs="+", default=["survey", "sample"], choices=["survey", "sample"])
    ap.add_argument(
        "--set", dest="sets", action="append", default=[], help="a config override, key=TOML value"
    )
    ap.add_argument("--seed", type=int, default=42, help="general.seed")
    ap.add_argument("--survey-seed", type=int, default=0, help="the synthetic survey's seed")
    ap.add_argument("--keep", type=Path, help="keep the results here (else a temporary folder)")
    ap.add_argument("--json", action="store_true", help="also print the figures as JSON")
    ap.add_argument(
        "--latents",
        type=Path,
        help="a --keep folder: map its latents again (only the "
        "reduce_dimensions settings of --set count), without training",
    )
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    root = args.keep or Path(tempfile.mkdtemp(prefix="hyrax-structure-"))
    extra = parse_set(args.sets)
    print(f"config overrides: {json.dumps(extra) if extra else 'none (the defaults)'}; results in {root}")
    results = {}
    for data in args.data:
        base = {
            "general": {
                "results_dir": str(root / data / "results"),
                "seed": args.seed,
                "log_level": "warning",
            }
        }
        if data == "survey":
            base["data_request"] = request("SyntheticSurvey", n=args.survey, seed=args.survey_seed)
        else:
            base["data_request"] = request("HyraxSample")
        cfg = merge(base, extra)
        out = remap(data, args.latents, cfg) if args.latents else pipeline(cfg)
        if args.keep:  # the arrays, for looking at them later
            np.savez(
                root / f"{data}.npz",
                latent=out["latent"],
                recon_error=out["recon_error"],
                embedding=out["embedding"],
                **{f"catalog_{k}": v for k, v in out["catalog"].items()},
            )
        fig = figures(out)
        show(data, fig)
        results[data] = fig
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    sys.exit(main())
