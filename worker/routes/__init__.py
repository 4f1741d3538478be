"""The worker's HTTP routes as blueprints: frames, health (and drain),
metrics, speakers, segments; auth, the worker secret every route but /health
and /metrics needs. The only part of the worker, with app.py, that imports
Flask: views reach the process's Worker (worker/context.py) through
current_worker()."""
from __future__ import annotations

from typing import cast

from flask import current_app

from ..context import EXTENSION, Worker


def current_worker() -> Worker:
    """The Worker of the app handling the current request."""
    return cast(Worker, current_app.extensions[EXTENSION])
