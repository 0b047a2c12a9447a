"""Shared fixtures: every test runs against a private HOME and OPENTRACES_HOME in tmp_path.

PostgreSQL tests use ``OPENTRACES_TEST_POSTGRES_URL`` (default: the local server that `.ci/run`
starts). When the server is unreachable they are skipped, unless ``OPENTRACES_REQUIRE_POSTGRES``
is set (as in CI), where an unreachable server fails them.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from opentraces.config import Settings, StoreConfig, load_settings, postgres_from_url
from opentraces.store import pg_connect

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpus"
#: A real Claude Code session with a rewind: a prompt edited and resubmitted, so two user
#: prompts hang from one line.
REWOUND = (CORPUS / "claude-code" / "claude-code-log-real-projects" / "-experiments-ideas"
           / "03eb5929-52b3-4b13-ada3-b93ae35806b8.jsonl")
DEFAULT_PG_URL = "postgresql://opentraces:opentraces@127.0.0.1:5432/opentraces_test"


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("OPENTRACES_HOME", str(home / ".opentraces"))
    for name in list(os.environ):
        if name.startswith(("HF_", "HUGGING_FACE")) or name.lower().endswith("_proxy") \
                or name == "OPENTRACES_STORE_URL":
            monkeypatch.delenv(name, raising=False)
    return home / ".opentraces"


@pytest.fixture
def settings(isolated_home: Path) -> Settings:
    return load_settings(isolated_home)


def postgres_url() -> str:
    return os.environ.get("OPENTRACES_TEST_POSTGRES_URL", DEFAULT_PG_URL)


def _postgres_reachable(url: str) -> str | None:
    try:
        import psycopg
    except ImportError as e:
        return f"psycopg is not installed ({e})"
    pg = postgres_from_url(url)
    try:
        with pg_connect(pg):
            return None
    except psycopg.Error as e:
        return f"PostgreSQL at {pg['host']}:{pg['port']} is unreachable: {e}"


def _drop_schema(url: str, schema: str) -> None:
    from psycopg import sql

    with pg_connect(postgres_from_url(url), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture(params=["sqlite", "postgres"])
def store_config(request: pytest.FixtureRequest, isolated_home: Path) -> Iterator[StoreConfig]:
    """A store configuration for each backend; PostgreSQL gets a fresh schema per test."""
    if request.param == "sqlite":
        yield StoreConfig(sqlite_path=isolated_home / "bucket" / "events.sqlite")
        return
    url = postgres_url()
    problem = _postgres_reachable(url)
    if problem:
        if os.environ.get("OPENTRACES_REQUIRE_POSTGRES"):
            pytest.fail(problem)
        pytest.skip(problem)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    pg = postgres_from_url(url) | {"schema": schema}
    yield StoreConfig(backend="postgres", postgres=pg)
    _drop_schema(url, schema)


@pytest.fixture
def backend_settings(store_config: StoreConfig, isolated_home: Path) -> Settings:
    """Settings whose store is each backend in turn (projections and blobs stay local)."""
    return Settings(home=isolated_home, store=store_config)


@pytest.fixture
def claude_copy(isolated_home: Path) -> Iterator[Path]:
    """The rewound session copied into the isolated home's Claude Code projects folder."""
    folder = isolated_home.parent / ".claude" / "projects" / "-experiments-ideas"
    folder.mkdir(parents=True)
    copy = folder / REWOUND.name
    shutil.copyfile(REWOUND, copy)
    yield copy
