"""The click CLI (installed as ``opentraces.commands``): thin commands over the API."""
