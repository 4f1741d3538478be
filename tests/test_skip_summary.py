"""The line a test run ends on (tests/skip_summary.py): every skip counted,
grouped by why, a missing system package first and naming the script that
installs it. Run on a real inner pytest session (pytester)."""
from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

# The hook as tests/conftest.py has it.
CONFTEST = '''
import pytest
from skip_summary import write_summary

@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_terminal_summary(terminalreporter):
    yield
    write_summary(terminalreporter)
'''

# Reasons as the suite's own skips give them (tests/conftest.py, tests/pg.py,
# test_multihost.py, test_browser.py, test_install.py).
TESTS = '''
import pytest

def test_runs():
    pass

def test_recording():
    pytest.skip("real recordings not available: /w/repo/../shared/data/speech/en.wav is absent")

def test_speakers():
    pytest.skip("speaker set not available: /w/shared/data/speakers is absent")

@pytest.mark.parametrize("n", [1, 2])
def test_haproxy(n):
    pytest.skip("HAProxy is not installed (as root, scripts/system_packages.sh installs Debian's haproxy)")

def test_postgres():
    pytest.skip("no PostgreSQL to test against: PostgreSQL server binaries not found (initdb): "
                "apt-get install postgresql")

@pytest.mark.skipif(True, reason="headless browser test needs Debian's chromium and chromium-driver")
def test_browser():
    pass

def test_index():
    pytest.skip("the package index is unreachable here: ERROR: No matching distribution")
'''


def test_the_last_line_before_the_counts_groups_the_skips(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_skips=TESTS)
    result = pytester.runpytest("-q", "-ra", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, skipped=7)
    lines = [line for line in result.outlines if line.strip()]
    assert lines[-2] == (
        "skipped: 7 (missing system package chromium chromium-driver: 1; missing system package haproxy: 2; "
        "missing system package postgresql: 1, run scripts/system_packages.sh as root; ../shared/data absent: 2; "
        "the package index is unreachable here: ERROR: No matching distribution: 1)")
    assert lines[-1].startswith("1 passed, 7 skipped")
    # Below -ra's list of every skip and its reason, not above it.
    assert lines.index(lines[-2]) > max(i for i, line in enumerate(lines) if line.startswith("SKIPPED"))


def test_a_run_without_skips_says_so(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_fine="def test_runs():\n    pass\n")
    result = pytester.runpytest("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert [line for line in result.outlines if line.strip()][-2:-1] == ["skipped: none"]
