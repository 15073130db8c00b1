from libhyrax.config.migrations import remainder_to_the_rest, step


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
        done += remainder_to_the_rest(cfg["split"])
    return done
