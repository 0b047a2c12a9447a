"""Render the ``--help`` of every opentraces command into docs/cli.md.

The help text lives between two marker lines in docs/cli.md and is produced from the click tree
itself, so the reference cannot drift from the code::

    python docs/gen_cli_help.py           # rewrite the block
    python docs/gen_cli_help.py --check   # exit 1 if the block is out of date

``tests/test_docs.py`` runs the same check.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import click
from click.testing import CliRunner

from opentraces.commands.main import cli

CLI_MD = Path(__file__).resolve().with_name("cli.md")
BEGIN = "<!-- BEGIN GENERATED HELP: python docs/gen_cli_help.py -->"
END = "<!-- END GENERATED HELP -->"
PROG = "opentraces"
WIDTH = 80


def command_paths(command: click.Command = cli, path: tuple[str, ...] = (),
                  parent: click.Context | None = None) -> Iterator[tuple[str, ...]]:
    """Every command path below ``command`` (depth first, in listing order), itself first.

    Subcommands are resolved through ``list_commands``/``get_command``, so lazily loaded groups
    are walked like any other.
    """
    yield path
    if not isinstance(command, click.Group):
        return
    ctx = click.Context(command, info_name=path[-1] if path else PROG, parent=parent)
    for name in command.list_commands(ctx):
        sub = command.get_command(ctx, name)
        if sub is None:
            raise LookupError(f"{' '.join((PROG, *path))} lists {name!r} but cannot load it")
        yield from command_paths(sub, (*path, name), ctx)


def render_help(path: tuple[str, ...]) -> str:
    """The ``--help`` output of one command path, at a fixed width."""
    result = CliRunner().invoke(cli, [*path, "--help"], prog_name=PROG, terminal_width=WIDTH)
    if result.exit_code != 0:
        raise RuntimeError(f"{' '.join((PROG, *path, '--help'))} failed: {result.output}")
    return result.output


def render_block() -> str:
    """The generated part of docs/cli.md, markers included."""
    parts = [BEGIN, ""]
    for path in command_paths():
        parts += [f"#### `{' '.join((PROG, *path))} --help`", "", "```text",
                  render_help(path).rstrip("\n"), "```", ""]
    parts.append(END)
    return "\n".join(parts)


def replace_block(document: str, block: str) -> str:
    """``document`` with the text between the markers replaced by ``block``."""
    start = document.index(BEGIN)
    end = document.index(END, start) + len(END)
    return document[:start] + block + document[end:]


def main(argv: list[str]) -> int:
    document = CLI_MD.read_text(encoding="utf-8")
    updated = replace_block(document, render_block())
    if "--check" in argv:
        if updated != document:
            print(f"{CLI_MD} is out of date; run: python docs/gen_cli_help.py", file=sys.stderr)
            return 1
        return 0
    if updated != document:
        CLI_MD.write_text(updated, encoding="utf-8")
        print(f"updated {CLI_MD}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
