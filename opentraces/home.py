"""Where opentraces keeps its data, in a module of its own: agent hooks need only this, and
:mod:`opentraces.config` (dataclasses, URL parsing) would add ~10 ms to every hook call."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


def home_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Return the opentraces home: ``$OPENTRACES_HOME`` or ``~/.opentraces``."""
    env = os.environ if environ is None else environ
    configured = env.get("OPENTRACES_HOME")
    if configured:
        return Path(configured).expanduser()
    return Path(env.get("HOME") or Path.home()) / ".opentraces"
