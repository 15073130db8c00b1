"""hyrax search: not built yet (see the issues)."""

from __future__ import annotations

from hyrax_cli.common import ConfigOpt, DebugOpt, SetOpt, run_stage


def command(config: ConfigOpt = None, set_: SetOpt = None, debug: DebugOpt = False) -> None:
    """Not built yet."""

    def body():
        from libhyrax.errors import RunError

        raise RunError("hyrax search is not built yet")

    run_stage(body, debug)
