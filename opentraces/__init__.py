"""opentraces: a local-first evidence layer for coding-agent sessions.

The public Python API lives in :mod:`opentraces.api`. This package module stays import-light
so that `opentraces --help` and agent hooks start fast.
"""

__version__ = "0.5.0.dev0"
