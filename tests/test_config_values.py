"""Numeric options refuse values that would hang, spin or refuse everything:
the process stops at start with the option and the value named."""
from __future__ import annotations

import pytest

from balancer.config import parse_args as balancer_args
from worker.config import parse_args as worker_args

BAD = [
    (balancer_args, "--port", "70000"),
    (balancer_args, "--max-connections", "0"),
    (balancer_args, "--max-message-bytes", "-1"),
    (balancer_args, "--max-upload-bytes", "many"),
    (balancer_args, "--max-inflight-per-worker", "0"),
    (balancer_args, "--forward-timeout", "0"),
    (balancer_args, "--health-interval", "0"),
    (balancer_args, "--health-timeout", "nan"),
    (balancer_args, "--max-frame-seconds", "-0.1"),
    (balancer_args, "--shutdown-timeout", "-1"),
    (worker_args, "--port", "-1"),
    (worker_args, "--threads", "0"),
    (worker_args, "--max-body-bytes", "0"),
    (worker_args, "--max-upload-bytes", "1.5"),
    (worker_args, "--max-frame-seconds", "0"),
    (worker_args, "--max-upload-seconds", "inf"),
    (worker_args, "--graceful-timeout", "-5"),
    (worker_args, "--min-enroll-seconds", "nan"),
    (worker_args, "--speaker-threshold", "1.5"),
    (worker_args, "--spool-max-rows", "0"),
    (worker_args, "--database-timeout", "0"),
]


@pytest.mark.parametrize("parse,flag,value", BAD, ids=[f"{flag} {value}" for _, flag, value in BAD])
def test_a_bad_number_stops_the_process_naming_the_option_and_the_value(parse, flag, value, capsys):
    with pytest.raises(SystemExit) as stopped:
        parse([flag, value])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: expected a number" in err and repr(value) in err


def test_the_bad_value_from_the_environment_is_named_too(capsys):
    with pytest.raises(SystemExit):
        balancer_args([], {"HEALTH_INTERVAL": "0"})
    assert "expected a number above 0, got '0'" in capsys.readouterr().err


@pytest.mark.parametrize("parse,flag,value", [
    (balancer_args, "--port", "0"), (balancer_args, "--shutdown-timeout", "0"),
    (worker_args, "--graceful-timeout", "0"), (worker_args, "--speaker-threshold", "-1"),
    (worker_args, "--speaker-threshold", ""), (worker_args, "--threads", "1"),
])
def test_edge_values_that_mean_something_are_accepted(parse, flag, value):
    parse([flag, value])
