"""JSON replies of the worker's routes."""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from flask import Response, jsonify
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException


def json_text(text: str, status: int) -> Response:
    """JSON already encoded (json.dumps) as a Response: jsonify's provider
    machinery is a noticeable share of a frame's CPU at a thousand frames a
    second."""
    return Response(text, status=status, mimetype="application/json")


def json_response(body: Mapping[str, Any], status: int) -> Response:
    return json_text(json.dumps(body), status)


def error(status: int, message: str) -> Response:
    return json_response({"error": message}, status)


def http_error(exc: HTTPException) -> ResponseReturnValue:
    """Flask's own refusals (404, 405, 413...) as JSON, like every other reply."""
    return jsonify(error=exc.description), exc.code or 500
