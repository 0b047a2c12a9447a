"""The one place that renders results: JSON envelopes, human text, errors and progress bars.

Every ``--json`` output is exactly one envelope object on stdout::

    {"status": "ok"|"error"|"refused", "schema_version": "opentraces.<area>.<name>.vN",
     ...payload..., "next_command": str|null, "next_steps": [str], "error"?: {code, message, hint}}

Progress and warnings go to stderr, and only on a terminal outside ``--json`` mode.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from opentraces.api import OpentracesError

JSON_KEY = "json"


def json_mode(ctx: click.Context) -> bool:
    root = ctx.find_root()
    return bool((root.obj or {}).get(JSON_KEY))


def set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    if value:
        root = ctx.find_root()
        root.obj = {**(root.obj or {}), JSON_KEY: True}
    return value


def json_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--json`` on a command (the same switch as the global ``opentraces --json``)."""
    return click.option("--json", "as_json", is_flag=True, expose_value=False, is_eager=True,
                        callback=set_json, help="Print one JSON envelope on stdout.")(func)


def envelope(schema_version: str, payload: Mapping[str, Any], *, status: str = "ok",
             next_command: str | None = None, next_steps: list[str] | None = None,
             error: Mapping[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"status": status, "schema_version": schema_version}
    body.update(payload)
    body["next_command"] = next_command
    body["next_steps"] = list(next_steps or [])
    if error is not None:
        body["error"] = dict(error)
    return body


def emit(ctx: click.Context, schema_version: str, payload: Mapping[str, Any], *,
         text: str | Callable[[], str], next_command: str | None = None,
         next_steps: list[str] | None = None, exit_code: int = 0,
         status: str = "ok") -> None:
    """Render a result as an envelope (``--json``) or as text, then exit with ``exit_code``."""
    if json_mode(ctx):
        click.echo(json.dumps(envelope(schema_version, payload, status=status,
                                       next_command=next_command, next_steps=next_steps),
                              ensure_ascii=False))
    else:
        click.echo(text() if callable(text) else text)
        for step in next_steps or []:
            click.echo(f"  - {step}")
        if next_command:
            click.echo(f"Next: {next_command}")
    ctx.exit(exit_code)


def emit_error(ctx: click.Context, error: OpentracesError | click.UsageError,
               schema_version: str) -> None:
    """Render an error (ours or a usage error) and exit with its code."""
    if not isinstance(error, click.UsageError):
        code, message, hint = error.code, error.message, error.hint
        status = error.status
        nxt, exit_code = error.next_command, error.exit_code
    else:
        code, message, hint, status, nxt, exit_code = (
            "usage_error", error.format_message(), None, "error", None, 2)
    if json_mode(ctx):
        # some errors carry data the caller acts on (an egress refusal's withheld items)
        details = getattr(error, "details", None) or {}
        body = envelope(schema_version, details, status=status, next_command=nxt,
                        error={"code": code, "message": message, "hint": hint})
        click.echo(json.dumps(body, ensure_ascii=False))
    else:
        click.echo(f"Error: {message}", err=True)
        if hint:
            click.echo(f"Hint: {hint}", err=True)
        if nxt:
            click.echo(f"Next: {nxt}", err=True)
    ctx.exit(exit_code)


@contextmanager
def progress(ctx: click.Context, label: str, total: int) -> Iterator[Callable[[int], None]]:
    """A progress callback: a bar on stderr when it is a terminal and not in --json mode."""
    if json_mode(ctx) or not sys.stderr.isatty() or total <= 0:
        yield lambda _n: None
        return
    with click.progressbar(length=total, label=label, file=sys.stderr) as bar:
        yield bar.update


def table(rows: list[tuple[str, ...]]) -> str:
    """Left-aligned columns for human output."""
    if not rows:
        return ""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)
