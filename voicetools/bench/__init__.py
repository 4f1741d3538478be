"""Load benchmark: how many live streams one machine holds.

    .venv/bin/voicestream-bench --mode vad --streams 10,50,100 --seconds 20
    .venv/bin/voicestream-bench --mode vad --find-max
    .venv/bin/voicestream-bench --mode speaker --streams 5,10,20
    .venv/bin/voicestream-bench --url http://127.0.0.1:6001 --pids balancer=1234,w1=2345
    # on a shared machine: fixed ports (same account spread every run), wait
    # for other load to stop and for the host to run at full speed
    .venv/bin/voicestream-bench --find-max --worker-ports 7101,7102,7103 \\
        --quiet-timeout 600 --probe-below 8 --noisy-retries 2
    # the shared record's cost: each level on the embedded store and on PostgreSQL
    .venv/bin/voicestream-bench --mode vad --database compare --n-workers 2 --streams 50,100,200

Without --url it starts the real system (3 workers + balancer, voicetools.cluster)
on free ports in a temporary directory and stops it afterwards. Each of N
streams is one WebSocket connection and one account; it sends 100 ms WAV frames
of real speech ("ACCOUNTCODE=..." text part, then the WAV) at real-time pace,
scheduled on a monotonic clock with a random start offset within the first
100 ms, without waiting for replies (a live source does not wait). Replies are
matched to frames by the balancer's per-connection seq.

Measured per level, over T seconds after a warm-up:
  frames/s     replies that arrived in the window / T
  e2e          client send -> reply arrival, per frame
  model        the reply's "ms" (the worker's model time for the frame's batch)
  late         frames whose reply came after the next frame was due (or never)
  errors       error replies + frames unanswered 5 s after the last send ("lost")
               + streams that could not connect
  send lag     client's own slip behind its schedule (a busy client shows here)
  busiest wkr  share of the frames the busiest worker answered (accounts are
               spread by rendezvous hash, unevenly for small N)
  CPU ms/frame CPU time of balancer + workers per frame answered
  other CPU%   CPU that processes outside the benchmark used meanwhile
  probe ms     a fixed pure-Python loop timed before/after the level: on a VM
               whose host is busy it rises although nothing here shows load
  CPU%, RSS    per process (balancer, each gunicorn master and child, this client);
               CPU% is of one core, so 200% is both cores of a 2-core machine
With --database postgresql the workers also write every frame's result as a
row to PostgreSQL (worker --database): one the benchmark starts from the
machine's binaries (voicetools.postgres, removed at the end) or --database-url.
--database compare runs each level twice, back to back, on freshly started
systems with the same worker ports (the same account spread), seed and
sources: once on the embedded store, once on PostgreSQL. The order alternates
from one pair of runs to the next - embedded first, then PostgreSQL first -
so a machine whose speed drifts during the run favours neither side;
--repeat K runs K such pairs per level and compares the medians.
  PG server    CPU ms/frame of PostgreSQL's server processes (the postmaster
               and its children, including backends that ended in the window)
  PG/emb       ratio of the served system's CPU ms/frame; PG+server/emb adds
               the server's own (issue 9's goal: PG/emb <= 1.10)
  rows         after each PostgreSQL level, once the workers' spools are empty,
               the rows it added against the frames answered: a mismatch is
               an error of the level (it did not hold); frames sent but not
               answered (already errors) may have rows too

Percentiles are nearest rank (voicetools.percentile): always a measured value.
A level held when p99 e2e <= --p99-bound-ms, frames/s >= 98% of N*10, no stream
has more than --late-tolerance of its frames late, and nothing failed.

Results: a table on the terminal, --json-out and --plot (PNG of latency vs N),
by default in bench-results/ (gitignored).
"""
from __future__ import annotations

PROG = "voicestream-bench"  # also python -m voicetools.bench
# --help shows this docstring: its first paragraph as the description, the rest as the epilog.
HELP = __doc__ or ""


class BenchError(Exception):
    """The benchmark cannot run as asked; the message says why."""


# The package, one concern per module (run.main is the command, __main__ runs it):
#   config     BenchConfig and the command line
#   audio      recordings cut into frames; speakers to enroll and stream
#   stats      one level's timelines, window statistics, the held/failed verdict
#   streams    the load: WebSocket senders and receivers, enrollment over REST
#   processes  CPU and memory of the measured processes, renice, the CPU probe
#   search     --find-max: raise N, then bisect
#   report     the terminal tables and the PNG
#   database   the PostgreSQL of --database: started or given, its server's processes, the row check
#   systems    the started system: worker flags, ports, the processes measured
#   levels     Bench: one level at a time (quiet-machine waits, retries, the row check)
#   compare    --database compare: each level on both stores, the comparison rows
#   run        run_bench (given, started once, or compared), main
#   __main__   python -m voicetools.bench
