"""Every command's --help shows its help text whole: the renderer must not take `[data_request]` or
`[download]` for markup and drop it ("default: the path piped in, else )")."""

from __future__ import annotations

import functools
import inspect
import re

import click
import pytest
import typer
from hyrax_cli.main import build_app
from typer.testing import CliRunner

BRACKETED = re.compile(r"\[[^\]\s]+\]")


@functools.cache
def commands() -> dict[str, click.Command]:
    group = typer.main.get_command(build_app())
    return {name: cmd for name, cmd in group.commands.items() if not cmd.hidden}


def written_help(cmd: click.Command) -> str:
    """The help as written in the code: the docstring and every option's help."""
    return " ".join(
        [inspect.getdoc(cmd.callback) or "", *(getattr(p, "help", None) or "" for p in cmd.params)]
    )


@pytest.mark.parametrize("name", sorted(commands()))
def test_help_keeps_every_bracketed_word(name):
    words = set(BRACKETED.findall(written_help(commands()[name])))
    out = CliRunner().invoke(build_app(), [name, "--help"], terminal_width=400, env={"COLUMNS": "400"}).output
    flat = " ".join(out.replace("│", " ").split())
    lost = [w for w in words if w not in flat]
    assert not lost, f"hyrax {name} --help lost {lost}"


def test_some_help_has_brackets_to_check():
    assert any(BRACKETED.search(written_help(c)) for c in commands().values())
