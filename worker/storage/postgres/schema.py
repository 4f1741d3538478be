"""The PostgreSQL schema as numbered migrations, applied at start by every
worker: all in one transaction that first takes a transaction-scoped advisory
lock, so workers starting at once apply each migration exactly once (the
others wait, then find nothing to do) and a failed migration leaves nothing
half done.

Append migrations; never edit one that has shipped.
"""
from __future__ import annotations

import logging

import psycopg

log = logging.getLogger("worker.database")

# pg_advisory_xact_lock's key for migrations: "vstream" in ASCII. The
# voiceprints' per-speaker locks use the two-key form, a separate key space.
MIGRATION_LOCK = 0x76737472_65616D

SCHEMA_MIGRATIONS = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    applied timestamptz NOT NULL DEFAULT now()
)"""

MIGRATIONS: tuple[tuple[int, str], ...] = (
    (1, """
CREATE TABLE voiceprints (
    account        text             NOT NULL,
    name           text             NOT NULL,
    encoder        text             NOT NULL,  -- encoder kind: ecapa | ge2e
    model          text             NOT NULL,  -- fingerprint of the encoder's weights
    dim            integer          NOT NULL,
    vector         bytea            NOT NULL,  -- float32[dim], unit length: what is scored
    embedding_sum  bytea            NOT NULL,  -- float32[dim], sum of the samples' unit embeddings
    samples        integer          NOT NULL,
    speech_seconds double precision NOT NULL,
    created        text             NOT NULL,
    updated        text             NOT NULL,
    PRIMARY KEY (account, name)
);
CREATE TABLE activity (
    id      bigserial   PRIMARY KEY,
    time    timestamptz NOT NULL DEFAULT clock_timestamp(),
    event   text        NOT NULL,
    worker  text        NOT NULL,
    account text        NOT NULL,
    fields  jsonb       NOT NULL
);
CREATE TABLE frames (
    id      bigserial,          -- insertion order, for tail --follow
    account text     NOT NULL,
    stream  text     NOT NULL,  -- the client connection (a uuid per WebSocket / HTTP request)
    seq     bigint   NOT NULL,  -- the packet's number within its stream
    stamp   bigint   NOT NULL,  -- the balancer's frame stamp: UTC microseconds (voicestream/stamps.py)
    voice   smallint NOT NULL,
    worker  integer  NOT NULL,
    ms      integer  NOT NULL,
    speaker text,               -- NULL without speaker verification
    score   real,               -- rounded to 2 places, as the log line shows it
    host    text     NOT NULL,  -- the worker's host: ports repeat across hosts
    PRIMARY KEY (account, stream, seq)
);
CREATE INDEX frames_account_stamp ON frames (account, stamp);
-- tail --follow reads one account's newest rows by id.
CREATE INDEX frames_account_id ON frames (account, id);
"""),
    (2, """
-- An account's own decision threshold per encoder kind (GE2E and ECAPA scores
-- live on different scales).
CREATE TABLE account_settings (
    account   text             NOT NULL,
    encoder   text             NOT NULL,
    threshold double precision NOT NULL,
    updated   text             NOT NULL,
    PRIMARY KEY (account, encoder)
);
"""),
    (3, """
-- Final speaker labels (--speaker-lag-ms of look-ahead): each frame's row
-- gets its segment's, NULL until then and for frames in no segment (no
-- voice, no enrolled speakers, a tracker that restarted before it).
ALTER TABLE frames ADD COLUMN final_speaker text, ADD COLUMN final_score real;
-- The segments themselves (events.Segment), as the segments files list them.
CREATE TABLE segments (
    id          bigserial,          -- insertion order, for tail --segments --follow
    account     text     NOT NULL,
    stream      text     NOT NULL,
    start_seq   bigint   NOT NULL,
    end_seq     bigint   NOT NULL,
    start_stamp bigint   NOT NULL,  -- its first and last frames' stamps: UTC microseconds
    end_stamp   bigint   NOT NULL,
    speaker     text     NOT NULL,
    score       real,               -- rounded to 2 places, as the segments file shows it
    frames      integer  NOT NULL,
    host        text     NOT NULL,  -- the worker's host that made it final
    PRIMARY KEY (account, stream, start_seq)
);
-- GET /accounts/{account}/segments?since= reads by end.
CREATE INDEX segments_account_end ON segments (account, end_stamp);
CREATE INDEX segments_account_id ON segments (account, id);
"""),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]


def migrate(conn: psycopg.Connection) -> int:
    """Bring the database to SCHEMA_VERSION; returns the version it is at
    (higher when a newer worker migrated it: that is left alone)."""
    with conn.transaction():
        # A migration may wait for another worker's; only this one may take long.
        conn.execute("SET LOCAL statement_timeout = 0")
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute(SCHEMA_MIGRATIONS)
        applied = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        for version, sql in MIGRATIONS:
            if version not in applied:
                conn.execute(sql)
                conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
                log.info("database schema migrated to version %d", version)
                applied.add(version)
    newest = max(applied)
    if newest > SCHEMA_VERSION:
        log.warning("database schema is at version %d, newer than this worker's %d", newest, SCHEMA_VERSION)
    return newest
