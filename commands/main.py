"""The ``opentraces`` / ``ot`` entry point: a lazily loaded click group.

Command modules are imported only when their command runs (or when ``--help`` needs their
one-line help), and they import :mod:`opentraces.api` inside the command body, so ``--help``
stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from opentraces import __version__
from opentraces.commands.output import emit_error, set_json

#: command name -> "module:attribute" under opentraces.commands
COMMANDS: dict[str, str] = {
    "status": "status:status",
    "doctor": "doctor:doctor",
    "rebuild": "maintenance:rebuild",
    "repair": "maintenance:repair",
    "bucket": "bucket:bucket",
    "import": "capture:import_",
    "trace": "trace:trace",
    "ctx": "ctx:ctx",
    "trail": "trail:trail",
    "setup": "setup:setup",
    "init": "enroll:init",
    "remove": "enroll:remove",
    "config": "config:config",
    "security": "security:security",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def __init__(self, *args: Any, lazy: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy or {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy:
            module_name, attr = self.lazy[cmd_name].split(":")
            module = importlib.import_module(f"opentraces.commands.{module_name}")
            return getattr(module, attr)
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as e:
            if ctx.find_root().obj and ctx.find_root().obj.get("json"):
                emit_error(ctx, e, "opentraces.error.v1")
            raise
        except Exception as e:
            from opentraces.api import OpentracesError

            if not isinstance(e, OpentracesError):
                raise
            emit_error(ctx, e, "opentraces.error.v1")


@click.group(cls=LazyGroup, lazy=COMMANDS,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--json", "as_json", is_flag=True, expose_value=False, is_eager=True,
              callback=set_json, help="Print one JSON envelope on stdout for any command.")
@click.version_option(__version__, "--version", prog_name="opentraces")
def cli() -> None:
    """opentraces keeps every coding-agent session as evidence you can query, trace to Git,
    review and publish on request.

    Everything stays on this machine unless you run an explicit push or publish command.
    `ot` is the short name of the same program.
    """
