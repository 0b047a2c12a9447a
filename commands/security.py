"""`opentraces security …`: the security tools, and sanitizing JSON lines with them."""

from __future__ import annotations

import json
import sys

import click

from opentraces.commands.output import emit, json_mode, json_option, table


@click.group()
def security() -> None:
    """List the security tools and sanitize text, dataset rows or records with them."""


@security.group("tools")
def tools() -> None:
    """The tools: what each finds, its scope, and whether it can run here."""


@tools.command("list")
@json_option
@click.pass_context
def tools_list(ctx: click.Context) -> None:
    """Every tool, with kind, scope, availability and whether the policy turns it on."""
    from opentraces import api

    r = api.security_tools(api.settings_from_environment())
    rows = [(t.name, t.kind, t.scope, "on" if t.enabled else "off",
             "available" if t.available else f"unavailable: {t.setup_command}")
            for t in r.tools]
    emit(ctx, "opentraces.security.tools.v1", api.to_builtins(r),
         text=f"security version {r.security_version}\n" + table(rows))


@tools.command("info")
@click.argument("tool")
@json_option
@click.pass_context
def tools_info(ctx: click.Context, tool: str) -> None:
    """TOOL's description and rules.

    Example: opentraces security tools info regex
    """
    from opentraces import api

    r = api.security_tool(api.settings_from_environment(), tool)
    t = r.tool
    rows = [(rule["rule_id"], rule["family"], rule["description"]) for rule in t["rules"]]
    emit(ctx, "opentraces.security.tool.v1", api.to_builtins(r),
         text=f"{t['name']} ({t['kind']}, {t['scope']} scope): {t['description']}\n"
              + table(rows),
         next_command=None if t["available"] else t["setup_command"])


@security.command("sanitize")
@click.option("--tools", "names", help="Comma-separated tool names, e.g. regex,entropy.")
@click.option("--use-config", is_flag=True,
              help="The tools the configuration turns on (the floor included).")
@click.option("--jsonl", is_flag=True, help="One JSON result per input line, as it is read.")
@json_option
@click.pass_context
def sanitize(ctx: click.Context, names: str | None, use_config: bool, jsonl: bool) -> None:
    """Sanitize JSON lines from stdin: {"text": …}, {"row": {…}} or {"record": {…}}.

    Writes each line back sanitized, and the findings to stderr; --jsonl and --json give
    every result with its findings. A bad line is reported with its number and the rest go on.

    Example: printf '%s\\n' '{"text": "key=…"}' | opentraces security sanitize --tools regex
    """
    from opentraces import api

    tool_names = [n.strip() for n in (names or "").split(",") if n.strip()]
    results = api.security_sanitize(api.settings_from_environment(), sys.stdin.buffer,
                                    tools=tool_names, use_config=use_config)
    collected, failed = [], 0
    for r in results:
        body = {"line": r.line, **(api.to_builtins(r.result) if r.result else
                                   {"error": api.to_builtins(r.error)})}
        failed += r.error is not None
        if jsonl:
            click.echo(json.dumps(body, ensure_ascii=False))
        elif json_mode(ctx):
            collected.append(body)
        elif r.error is not None:
            click.echo(f"Error: {r.error.message}", err=True)
        else:
            click.echo(json.dumps({r.result.input_kind: r.result.output}, ensure_ascii=False))
            for f in r.result.findings:
                click.echo(f"line {r.line}: {f.action} {f.family} ({f.tool} {f.rule_id}) at "
                           f"{f.path or 'text'}[{f.span[0]}:{f.span[1]}]", err=True)
    if jsonl or not json_mode(ctx):
        ctx.exit(1 if failed else 0)
    emit(ctx, "opentraces.security.sanitize.v1", {"results": collected, "failed": failed},
         text="", exit_code=1 if failed else 0)
