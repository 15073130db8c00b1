"""hyrax config: print the resolved, migrated config (a tool, not a stage: it makes no results directory)."""

from __future__ import annotations

from hyrax_cli.common import ConfigOpt, DebugOpt, SetOpt, run_stage


def command(config: ConfigOpt = None, set_: SetOpt = None, debug: DebugOpt = False) -> None:
    """Print the resolved config as TOML on stdout; exit 2 with the validation errors when it is invalid.

    Examples: hyrax config -c my.toml --set train.epochs=3 > resolved.toml
    """

    def body() -> str:
        from libhyrax.config import dump_config, resolve

        return dump_config(resolve(config, set_ or ()))

    run_stage(body, debug)
