"""Limits set by environment variables, for the balancer and the worker; flags win."""
from __future__ import annotations

import pytest

from balancer.config import parse_args as balancer_args
from worker.config import parse_args as worker_args


def test_limits_from_environment_variables(monkeypatch):
    env = {"MAX_MESSAGE_BYTES": "1234", "MAX_UPLOAD_BYTES": "5678", "MAX_CONNECTIONS": "7",
           "MAX_ACCOUNT_LENGTH": "9", "MAX_FRAME_SECONDS": "0.25", "AUTH_TOKEN": "t", "FORWARD_TIMEOUT": "3",
           "HEALTH_TIMEOUT": "1.5", "ACCEPTED_RATES": "8000, 16000", "ACCEPTED_FORMATS": "pcm_16,float",
           "MAX_BODY_BYTES": "4321", "GRACEFUL_TIMEOUT": "4", "SHUTDOWN_TIMEOUT": "6"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    b = balancer_args([])
    assert (b.max_message_bytes, b.max_upload_bytes, b.max_connections, b.max_account_length,
            b.max_frame_seconds, b.token, b.forward_timeout, b.health_timeout, b.shutdown_timeout) == \
        (1234, 5678, 7, 9, 0.25, "t", 3.0, 1.5, 6.0)
    w = worker_args([])
    assert (w.max_frame_seconds, w.accepted_rates, w.accepted_formats, w.max_body_bytes, w.graceful_timeout) == \
        (0.25, (8000, 16000), ("PCM_16", "FLOAT"), 4321, 4.0)
    assert worker_args(["--accepted-rates", "44100"]).accepted_rates == (44100,)  # flags win
    with pytest.raises(SystemExit):
        worker_args(["--accepted-rates", "8k"])


def test_event_loop_is_uvloop_unless_asyncio_is_named(monkeypatch, capsys):
    assert balancer_args([]).event_loop == "uvloop"
    assert balancer_args(["--event-loop", "asyncio"]).event_loop == "asyncio"
    monkeypatch.setenv("EVENT_LOOP", "asyncio")
    assert balancer_args([]).event_loop == "asyncio"
    with pytest.raises(SystemExit):
        balancer_args(["--event-loop", "trio"])
    assert "invalid choice: 'trio'" in capsys.readouterr().err
    monkeypatch.setenv("EVENT_LOOP", "trio")
    with pytest.raises(SystemExit):
        balancer_args([])
    assert "EVENT_LOOP: choose from uvloop, asyncio" in capsys.readouterr().err
