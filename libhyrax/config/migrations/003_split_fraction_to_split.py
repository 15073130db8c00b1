from libhyrax.config.migrations import step


@step(3, "per-dataset split_fraction in [data_request] moved to [split] fractions per group")
def migrate(cfg: dict) -> list[str]:
    done = []
    for group, datasets in (cfg.get("data_request") or {}).items():
        if not isinstance(datasets, dict):
            continue
        for name, spec in datasets.items():
            if isinstance(spec, dict) and "split_fraction" in spec:
                cfg.setdefault("split", {})[group] = spec.pop("split_fraction")
                done.append(f"data_request.{group}.{name}.split_fraction -> split.{group}")
    if done:
        done += _remainder_to_the_rest(cfg["split"])
    return done


def _remainder_to_the_rest(split: dict) -> list[str]:
    """The reference gave the splits a config didn't size what the sized ones left (a notebook's
    `train = 1.0` means all of it for training); our defaults (0.8/0.1/0.1) would overfill instead."""
    rest = [s for s in ("train", "validate", "test") if s not in split]
    given = sum(float(v) for k, v in split.items() if k in ("train", "validate", "test") and v is not False)
    share = round(max(0.0, 1.0 - given) / len(rest), 10) if rest else 0.0
    for s in rest:
        split[s] = share
    return [f"split.{s} = {share} (what the other splits leave)" for s in rest]
