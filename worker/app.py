"""The worker's Flask application: create_app assembles it (the Flask
tutorial's application factory). What the routes do is in worker/routes/;
what they share is the Worker (worker/context.py).
"""
from __future__ import annotations

from flask import Flask
from werkzeug.exceptions import HTTPException

from .config import WorkerConfig
from .context import EXTENSION, create_worker
from .routes import auth, frames, health, metrics, segments, speakers
from .routes.replies import http_error


def create_app(config: WorkerConfig | None = None) -> Flask:
    config = config or WorkerConfig()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    app.extensions[EXTENSION] = worker = create_worker(config)
    app.extensions[metrics.EXTENSION] = metrics.worker_registry(worker)
    # First of every request's hooks: a refused caller reaches no blueprint's.
    app.before_request(auth.require_secret)
    app.register_blueprint(frames.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(metrics.bp)
    app.register_blueprint(speakers.bp)
    app.register_blueprint(segments.bp)
    app.register_error_handler(HTTPException, http_error)
    return app
