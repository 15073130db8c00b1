from libhyrax.config.migrations import step


@step(4, "[umap] and [umap.UMAP] became [reduce] with [reduce.umap] and [reduce.umap.kwargs]")
def migrate(cfg: dict) -> list[str]:
    if "umap" not in cfg:
        return []
    old = cfg.pop("umap")
    reduce = cfg.setdefault("reduce", {})
    reduce.setdefault("algorithm", "umap")
    umap = reduce.setdefault("umap", {})
    done = ["[umap] -> [reduce] (algorithm = \"umap\")"]
    if "UMAP" in old:
        umap["kwargs"] = old.pop("UMAP")
        done.append("[umap.UMAP] -> [reduce.umap.kwargs]")
    renames = {"fit_sample_size": ("umap", "fit_sample_size"), "model_path": ("umap", "model_path"),
               "save_fit_umap": (None, "save_fit_model"), "parallel": (None, "parallel")}
    for key, (sub, new) in renames.items():
        if key in old:
            target = umap if sub else reduce
            target[new] = old.pop(key)
            done.append(f"umap.{key} -> reduce.{sub + '.' if sub else ''}{new}")
    old.pop("name", None)
    return done
