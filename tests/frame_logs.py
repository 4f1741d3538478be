"""Reading the per-account frame log in the failure tests (test_failover.py,
test_shutdown.py): every line must be a whole line in the contract format."""
from __future__ import annotations

from voicestream.logline import LogLine, parse_line


def logged(line: str) -> LogLine:
    """The fields of a log line (voicestream.logline), failing on anything else."""
    fields = parse_line(line)
    assert fields is not None, f"not a whole log line: {line!r}"
    return fields
