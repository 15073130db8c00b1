"""Entry points of the `hyrax-<stage>` executables: `hyrax_cli.entry:<stage>`, generated from the registry
(setup.py writes one console script per stage that points here)."""

from __future__ import annotations

from libhyrax.stages import BY_NAME


def __getattr__(name: str):
    if name not in BY_NAME:
        raise AttributeError(name)

    def main() -> None:
        from hyrax_cli.main import stage_app

        stage_app(name)()

    return main
