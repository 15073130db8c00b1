from libhyrax.config.migrations import pop_path, step


@step(5, "data_set.preload_cache and data_set.preload_threads removed (threads -> data_loader.num_workers)")
def migrate(cfg: dict) -> list[str]:
    done = []
    if pop_path(cfg, "data_set.preload_cache") is not None:
        done.append("data_set.preload_cache removed")
    threads = pop_path(cfg, "data_set.preload_threads")
    if threads is not None:
        done.append("data_set.preload_threads removed")
        if isinstance(threads, int) and threads > 0:
            cfg.setdefault("data_loader", {})["num_workers"] = threads
            done[-1] += f" (data_loader.num_workers = {threads})"
    return done
