from libhyrax.config.migrations import move, step


@step(2, "data_loader.shuffle moved to train.shuffle")
def migrate(cfg: dict) -> list[str]:
    return move(cfg, "data_loader.shuffle", "train.shuffle")
