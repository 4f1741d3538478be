"""python -m worker.drain --port 7001 --wait 3: a worker's preStop hook.

Kubernetes sends SIGTERM only after preStop returns. This first asks the
worker on this machine to drain (POST /drain: /health and new frames answer
503, so every balancer moves its accounts within --health-interval) and then
waits, so frames already on their way are answered before SIGTERM closes the
listening socket; gunicorn then finishes what is in flight within
--graceful-timeout. A worker that is not answering is not waited for.

With a worker secret (WORKER_SECRET in the hook's environment: the worker
container's own, deploy/k8s/worker.yaml) the request carries it, as a
balancer's do; it is never a flag, which ps would show.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request

from voicestream.options import from_environment
from voicestream.worker_secret import authorization

from .config import WorkerConfig


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m worker.drain", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=7001, help="the worker's port on this machine (default: 7001)")
    p.add_argument("--wait", type=float, default=3.0,
                   help="seconds to wait after the drain began: at least two of the balancers' "
                        "--health-interval (default: 3)")
    a = p.parse_args(argv)
    try:
        secret = from_environment(WorkerConfig, "worker_secret")
    except argparse.ArgumentTypeError as exc:
        print(f"worker.drain: WORKER_SECRET is not valid: {exc}", file=sys.stderr)
        return 2
    request = urllib.request.Request(f"http://127.0.0.1:{a.port}/drain", method="POST",
                                     headers=authorization(secret))
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            print(json.dumps(json.load(resp)), flush=True)
    except urllib.error.HTTPError as exc:  # refused (403, 401): what it said
        print(f"worker.drain: the worker on port {a.port} refused the drain ({exc.code}: {refusal(exc)}); "
              "not waiting", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"worker.drain: the worker on port {a.port} did not take the drain ({exc}); not waiting",
              file=sys.stderr)
        return 1
    time.sleep(a.wait)
    return 0


def refusal(exc: urllib.error.HTTPError) -> str:
    """The error a worker's JSON refusal names, or the HTTP reason."""
    try:
        return str(json.load(exc)["error"])
    except (OSError, ValueError, KeyError, TypeError):
        return str(exc.reason)


if __name__ == "__main__":
    sys.exit(main())
