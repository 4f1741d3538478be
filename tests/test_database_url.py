"""--database URLs: a malformed one is refused before anything connects, with
a message naming the problem; an unreachable one is accepted, and the
database is then down (frames spool, no exception). No server needed."""
from __future__ import annotations

import argparse

import pytest

from voicetools.cluster import free_port
from worker.storage.postgres.connection import Database, DatabaseUnavailable
from worker.storage.postgres.frames import FrameRows
from worker.storage.postgres.spool import Spool
from worker.storage.postgres.url import DatabaseUrlError, check_url, parse_database_url, redact
from worker.storage.rows import FrameRow


@pytest.mark.parametrize(("url", "named"), [
    ("", "is empty"),
    ("   ", "is empty"),
    ("mysql://db.example/voice", "scheme 'mysql://'"),
    ("db.example:5432/voice", "no scheme"),
    ("host=db.example dbname=voice", "no scheme"),
    ("POSTGRESQL://db.example/voice", "scheme 'POSTGRESQL://'"),
    ("postgresql://db.example:54x2/voice", "port '54x2'"),
    ("postgresql://db.example:70000/voice", "port '70000'"),
    ("postgresql://[::1/voice", 'matching "]"'),
    ("postgresql://db.example/voice?colour=blue", 'invalid URI query parameter: "colour"'),
    ("postgresql://db.example/voice?sslmode=always", "sslmode 'always'"),
    ("postgresql://db.example/voice?connect_timeout=soon", "connect_timeout 'soon'"),
    ("postgresql://db example/voice", "unexpected spaces"),
    ("postgresql://db.example/%zz", "invalid percent-encoded token"),
])
def test_malformed_urls_are_refused_naming_the_problem(url, named):
    with pytest.raises(DatabaseUrlError, match="database URL") as caught:
        check_url(url)
    assert named in str(caught.value)
    with pytest.raises(DatabaseUrlError):
        Database(url)  # the worker's constructor checks too, before connecting


@pytest.mark.parametrize("url", [
    "postgresql://postgres@127.0.0.1:5432/voicestream",
    "postgres://user:secret@db.example/voice?sslmode=require&connect_timeout=5",
    "postgresql:///voicestream",  # the local socket
    "postgresql://db1.example:5432,db2.example:5433/voice",
])
def test_well_formed_urls_pass_unchanged(url):
    assert check_url(url) == url


def test_the_option_parse_keeps_empty_for_embedded_and_names_the_problem():
    assert parse_database_url("") == ""
    assert parse_database_url("postgresql://db.example/voice") == "postgresql://db.example/voice"
    parser = argparse.ArgumentParser(prog="python -m worker", exit_on_error=False)
    parser.add_argument("--database", type=parse_database_url)
    with pytest.raises(argparse.ArgumentError, match="has port '54x2': a port is a number"):
        parser.parse_args(["--database", "postgresql://db.example:54x2/voice"])


def test_passwords_never_appear_in_messages():
    assert redact("postgresql://voice:s3cret@db.example/v?password=other") == \
        "postgresql://voice:***@db.example/v?password=***"
    with pytest.raises(DatabaseUrlError) as caught:
        check_url("postgresql://voice:s3cr%zz@db.example/v")  # libpq quotes the bad token: the password
    assert "s3cr" not in str(caught.value) and "invalid percent-encoded token" in str(caught.value)


def test_an_unreachable_database_is_down_not_an_error(tmp_path):
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/voicestream"  # nothing listens there
    with Database(url, name="unreachable").open(wait=10) as database:
        assert not database.up
        health = database.health()
        assert health["mode"] == "postgresql" and health["state"] == "down"
        assert "127.0.0.1" in health["error"] or "refused" in health["error"]
        with pytest.raises(DatabaseUnavailable, match="database is unavailable"):
            with database.connection():
                pass
        spool = Spool(tmp_path / "spool.db", max_rows=100)
        rows = FrameRows(database, spool, host="host-a")
        try:
            rows.record([FrameRow("acme", "s1", seq, 1_700_000_000_000_000 + seq, 1, 7001, 3.0) for seq in range(3)])
            assert rows.health() == {**health, "spooled": 3, "dropped": 0, "spooled_finals": 0,
                                     "dropped_finals": 0}
        finally:
            rows.close()
            spool.close()
