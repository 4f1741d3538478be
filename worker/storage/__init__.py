"""Everything a worker keeps: voiceprints, account thresholds, the activity
log, every frame's log line, every segment's line and, with --database,
every frame's row (with its final label) and every segment's.

    protocol.py     what the worker asks of a backend (VoiceprintStore,
                    ActivityWriter, FrameRecorder, SegmentReader, Storage)
                    and its one error, StorageUnavailable
    voiceprints.py  the voiceprint types (EncoderId, Voiceprint, AccountThreshold)
                    and the arithmetic of enrolling one more sample
    rows.py         FrameRow: a frame's record; FinalLabel: a segment's
    framelog.py     FrameLog: <log-dir>/<ACCOUNTCODE>.txt, one line per frame
    segments.py     SegmentLog: <log-dir>/<ACCOUNTCODE>.segments.txt, one line
                    per segment
    appends.py      append_whole: their lines written whole or not at all,
                    RecordWriteError naming why
    guard.py        DiskGuard: whether the record can be written now
                    (--min-free-mb, the log directory, failed writes)
    embedded.py     EmbeddedStorage: this host's files, from
    sqlite.py       SqliteVoiceprintStore and
    activity.py     ActivityLog, the activity log file
    postgres/       SharedDatabase: PostgreSQL shared by every host (--database)

Nothing here imports the rest of the worker; worker/context.py picks the
backend, once.
"""
