"""A real PostgreSQL for tests (voicetools.postgres: initdb from the machine's
binaries, a free port, trust authentication), skipped with the reason when
the binaries are absent.

A test module loads them as a plugin (an import would trip ruff F811):

    pytest_plugins = ["pg"]

pg_server: one server per test module; tests must leave it running.
pg_url: a fresh database on it per test (CREATE DATABASE), its URL.
own_pg: a server of the test's own, which it may stop and start, and a
    database on it: own_pg.server, own_pg.url.
"""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
from psycopg import sql

from voicetools.cluster import free_port
from voicetools.postgres import PostgresServer, PostgresUnavailable


def start_server() -> PostgresServer:
    try:
        return PostgresServer(free_port()).start()
    except PostgresUnavailable as exc:
        pytest.skip(f"no PostgreSQL to test against: {exc}")


def database_url(server: PostgresServer, name: str) -> str:
    return f"postgresql://postgres@{server.host}:{server.port}/{name}"


def create_database(server: PostgresServer) -> str:
    """A new empty database on server; its URL."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return database_url(server, name)


@pytest.fixture(scope="module")
def pg_server() -> Iterator[PostgresServer]:
    server = start_server()
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture
def pg_url(pg_server: PostgresServer) -> str:
    if not pg_server.running():
        pytest.fail("a test left the module's PostgreSQL stopped: use own_pg to stop one")
    return create_database(pg_server)


@dataclass(frozen=True)
class OwnPostgres:
    server: PostgresServer
    url: str


@pytest.fixture
def own_pg() -> Iterator[OwnPostgres]:
    server = start_server()
    try:
        yield OwnPostgres(server, create_database(server))
    finally:
        server.remove()
