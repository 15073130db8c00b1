from libhyrax.config.migrations import step


@step(1, "[model_inputs] renamed [data_request]")
def migrate(cfg: dict) -> list[str]:
    if "model_inputs" not in cfg:
        return []
    cfg["data_request"] = cfg.pop("model_inputs")
    return ["[model_inputs] -> [data_request]"]
