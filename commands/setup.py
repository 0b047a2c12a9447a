"""`opentraces setup …`: install or remove the capture hooks of each coding agent."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from opentraces.commands.output import emit, json_option

SCHEMA = "opentraces.setup.v1"


def setup_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option("--remove", is_flag=True,
                        help="Take the opentraces hooks out again (your own hooks stay).")(func)
    func = click.option("--dry-run", is_flag=True,
                        help="Show what would change; write nothing.")(func)
    return json_option(func)


def run_setup(ctx: click.Context, agent: str, dry_run: bool, remove: bool,
              repo: Path | None = None) -> None:
    from opentraces import api

    if agent == "git":
        report = api.setup_git(repo or Path.cwd(), dry_run=dry_run, remove=remove)
        flags = f" --repo {repo}" if repo else ""
    else:
        home = api.settings_from_environment().user_home or Path.home()
        report = api.setup_agent(agent, home, dry_run=dry_run, remove=remove,
                                 hook_command=api.default_hook_command())
        flags = ""
    if not report.changed:
        state = "unchanged"
    elif dry_run:
        state = "would change"
    else:
        state = "removed" if remove else "installed"
    backup = f" (backup: {report.backup_path})" if report.backup_path else ""
    text = "\n".join([f"{agent}: {report.path} {state}{backup}",
                      *(f"  - {action}" for action in report.actions)])
    flags += " --remove" if remove else ""
    emit(ctx, SCHEMA, api.to_builtins(report), text=text,
         next_command=f"opentraces setup {agent}{flags}" if dry_run and report.changed else None)


@click.group()
def setup() -> None:
    """Install or remove the capture hooks of each coding agent (and, optionally, of git).

    Each agent's settings are edited in place: your own hooks and settings are kept, the file
    is backed up first, and running the command again changes nothing.
    """


@setup.command("claude-code")
@setup_options
@click.pass_context
def setup_claude_code(ctx: click.Context, dry_run: bool, remove: bool) -> None:
    """Add the opentraces hooks to ~/.claude/settings.json."""
    run_setup(ctx, "claude-code", dry_run, remove)


@setup.command("codex-cli")
@setup_options
@click.pass_context
def setup_codex_cli(ctx: click.Context, dry_run: bool, remove: bool) -> None:
    """Add the opentraces hooks to ~/.codex/hooks.json (Codex CLI in a terminal)."""
    run_setup(ctx, "codex-cli", dry_run, remove)


@setup.command("pi")
@setup_options
@click.pass_context
def setup_pi(ctx: click.Context, dry_run: bool, remove: bool) -> None:
    """Show how Pi sessions are captured; Pi's settings are left untouched."""
    run_setup(ctx, "pi", dry_run, remove)


@setup.command("git")
@click.option("--repo", type=click.Path(file_okay=False, path_type=Path),
              help="The repository (default: the one around the current folder).")
@setup_options
@click.pass_context
def setup_git(ctx: click.Context, repo: Path | None, dry_run: bool, remove: bool) -> None:
    """Add a post-commit hook that tells opentraces about each new commit (optional).

    Anchoring commits to sessions then starts right after each commit instead of at the next
    import. A post-commit hook you already have keeps running first; --remove puts it back.
    """
    run_setup(ctx, "git", dry_run, remove, repo)


def run_tool_status(ctx: click.Context, tool: str) -> None:
    from opentraces import api

    status = api.security_tool_status(api.settings_from_environment(), tool)
    if status["available"]:
        text = f"{tool}: available at {status['path']}"
    else:
        text = f"{tool}: not found. To get it: {status['install_hint']}"
    emit(ctx, "opentraces.setup.tool.v1", status, text=text,
         next_command=None if status["available"] else "opentraces security tools list")


@setup.command("gitleaks")
@json_option
@click.pass_context
def setup_gitleaks(ctx: click.Context) -> None:
    """Show whether gitleaks can run here and how to get it (nothing is downloaded)."""
    run_tool_status(ctx, "gitleaks")


@setup.command("trufflehog")
@json_option
@click.pass_context
def setup_trufflehog(ctx: click.Context) -> None:
    """Show whether TruffleHog v3 can run here and how to get it (nothing is downloaded).

    opentraces runs it with verification off, so no secret is sent to its provider.
    """
    run_tool_status(ctx, "trufflehog")
