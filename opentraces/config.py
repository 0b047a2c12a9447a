"""Where opentraces keeps its data and which store backend it uses.

This is the one module that reads the process environment (``OPENTRACES_HOME``,
``OPENTRACES_STORE_URL``); everything else receives paths and settings explicitly.

Layout under the home directory::

    bucket/events.sqlite     the event log (SQLite backend)
    bucket/blobs/            content-addressed blobs
    projections/<name>/      one folder per projection; all of it can be deleted and rebuilt
    config.json              optional settings, e.g. {"store": {"backend": "postgres", ...}}
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from opentraces.errors import ConfigError
from opentraces.home import home_dir

CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class StoreConfig:
    """Which event-store backend to open and how."""

    backend: str = "sqlite"
    sqlite_path: Path | None = None
    postgres: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        if self.backend == "sqlite":
            return str(self.sqlite_path)
        pg = self.postgres
        schema = f"/{pg['schema']}" if pg.get("schema") else ""
        return f"postgresql://{pg.get('user', '')}@{pg.get('host', '')}:{pg.get('port', '5432')}/" \
               f"{pg.get('dbname', '')}{schema}"


@dataclass(frozen=True)
class Settings:
    """Everything the API needs to find its data."""

    home: Path
    store: StoreConfig
    #: The user's home, where agents keep their transcripts (``~/.claude``, ``~/.codex``, …).
    user_home: Path | None = None

    @property
    def bucket_dir(self) -> Path:
        return self.home / "bucket"

    @property
    def blobs_dir(self) -> Path:
        return self.bucket_dir / "blobs"

    @property
    def projections_dir(self) -> Path:
        return self.home / "projections"

    @property
    def store_id(self) -> str:
        """Which store the projections are built from (a path inside the home is relative)."""
        store = self.store
        if store.backend == "sqlite" and store.sqlite_path is not None:
            try:
                return f"sqlite:{store.sqlite_path.relative_to(self.home)}"
            except ValueError:
                return f"sqlite:{store.sqlite_path}"
        return store.describe()


def postgres_from_url(url: str) -> dict[str, str]:
    """Split ``postgresql://user:password@host:port/dbname?schema=s`` into store settings."""
    parsed = urlparse(url)
    if parsed.scheme not in ("postgres", "postgresql"):
        raise ConfigError(f"store URL {url!r} is not a postgresql:// URL",
                          hint="Use postgresql://user:password@host:port/dbname")
    settings = {
        "host": parsed.hostname or "127.0.0.1",
        "port": str(parsed.port or 5432),
        "user": unquote(parsed.username or ""),
        "password": unquote(parsed.password or ""),
        "dbname": parsed.path.lstrip("/"),
    }
    for part in filter(None, parsed.query.split("&")):
        key, _, value = part.partition("=")
        if key == "schema":
            settings["schema"] = value
    if not settings["dbname"] or not settings["user"]:
        raise ConfigError(f"store URL {url!r} needs a user and a database name")
    return settings


def load_settings(home: Path, store_url: str | None = None,
                  user_home: Path | None = None) -> Settings:
    """Read ``config.json`` under ``home``; ``store_url`` (a postgresql:// URL) overrides it."""
    store = _store_from_file(home / CONFIG_FILE, home)
    if store_url:
        store = StoreConfig(backend="postgres", postgres=postgres_from_url(store_url))
    return Settings(home=home, store=store, user_home=user_home)


def settings_from_environment(environ: Mapping[str, str] | None = None) -> Settings:
    """Settings for the CLI and scripts: the home and store URL from the environment."""
    env = os.environ if environ is None else environ
    user_home = Path(env["HOME"]) if env.get("HOME") else Path.home()
    return load_settings(home_dir(env), env.get("OPENTRACES_STORE_URL") or None, user_home)


def read_config_file(path: Path) -> Any:
    """The decoded config file, or None when there is none."""
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}:{e.lineno}: invalid JSON ({e.msg})",
                          hint="Fix or remove the file; opentraces recreates nothing in it.") from e


def _store_from_file(path: Path, home: Path) -> StoreConfig:
    default = StoreConfig(sqlite_path=home / "bucket" / "events.sqlite")
    data = read_config_file(path)
    if data is None:
        return default
    store = data.get("store", {}) if isinstance(data, dict) else {}
    backend = store.get("backend", "sqlite")
    if backend == "sqlite":
        sqlite_path = Path(store["path"]).expanduser() if store.get("path") else None
        return StoreConfig(sqlite_path=sqlite_path or default.sqlite_path)
    if backend == "postgres":
        if "url" in store:
            return StoreConfig(backend="postgres", postgres=postgres_from_url(store["url"]))
        pg = {k: str(v) for k, v in store.get("postgres", {}).items()}
        missing = [k for k in ("dbname", "user") if not pg.get(k)]
        if missing:
            raise ConfigError(f"{path}: store.postgres is missing {', '.join(missing)}")
        pg.setdefault("host", "127.0.0.1")
        pg.setdefault("port", "5432")
        return StoreConfig(backend="postgres", postgres=pg)
    raise ConfigError(f"{path}: store.backend must be 'sqlite' or 'postgres', not {backend!r}")
