"""The shared backend of a multi-host deployment: PostgreSQL (--database URL).

One concept per module, none of them imported here (voicetools/tail.py imports url.py
without the pool):
    url.py          check a postgresql:// URL before anything connects
    schema.py       versioned migrations under an advisory lock
    connection.py   Database: the request path's pool, up/down state, LISTEN
    notify.py       the dedicated LISTEN connection (also probes and migrates)
    voiceprints.py  PostgresVoiceprintStore: the storage protocol's VoiceprintStore
    activity.py     ActivityRows: the activity log as rows
    frames.py       FrameRows: one row per frame, exactly once, via the spool;
                    the final labels in the rows and the segments table
    segments.py     PostgresSegments: an account's segments, for GET .../segments
    spool.py        Spool: frame rows (and final labels) waiting on disk while
                    the database is down
    shared.py       SharedDatabase: all of the above for one worker, from its options
"""
