"""`python -m opentraces` hands over to the CLI (the one module allowed to import commands)."""

from opentraces.commands.main import cli

if __name__ == "__main__":
    cli()
