from libhyrax.config.migrations import step


@step(6, "[reduce] renamed [reduce_dimensions]")
def migrate(cfg: dict) -> list[str]:
    if "reduce" not in cfg:
        return []
    cfg["reduce_dimensions"] = cfg.pop("reduce")
    return ["[reduce] -> [reduce_dimensions]"]
