"""`hyrax <stage>` and `hyrax-<stage>`, both built from the one stage registry in libhyrax.stages."""

from __future__ import annotations

import importlib
import sys

import typer

from libhyrax.stages import STAGES, Stage

# help text is shown as written: rich markup would eat "[data_request]" and every other [section] name
PLAIN = None


def _command(stage: Stage):
    return importlib.import_module(f"hyrax_cli.{stage.name}").command


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        print(f"hyrax {version('hyrax-toolkit')}")
        raise typer.Exit()


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="hyrax",
        no_args_is_help=True,
        add_completion=False,
        rich_markup_mode=PLAIN,
        pretty_exceptions_enable=False,
        help="Hyrax: machine learning on astronomical imaging surveys. Each stage writes one "
        "results directory and prints its path, so stages chain: hyrax train | hyrax infer",
    )

    @app.callback()
    def root(
        version: bool = typer.Option(
            False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ) -> None:
        pass

    for stage in STAGES:
        command = _command(stage)
        app.command(stage.name, short_help=stage.help)(command)
        for alias in stage.aliases:
            app.command(alias, hidden=True, help=f"Alias of `{stage.name}`.")(
                _alias_command(alias, stage, command)
            )
    return app


def _alias_command(alias: str, stage: Stage, command):
    import functools

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        print(f"note: `hyrax {alias}` is called `hyrax {stage.name}` here", file=sys.stderr)
        return command(*args, **kwargs)

    return wrapper


def stage_app(name: str) -> typer.Typer:
    """A one-command app for the `hyrax-<name>` executable."""
    stage = next(s for s in STAGES if s.name == name)
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=PLAIN)
    app.command(stage.name, short_help=stage.help)(_command(stage))
    return app


def main() -> None:
    build_app()()
