"""The line a test run ends on, just above pytest's counts: how many tests
were skipped and why, grouped so that a missing system package stands out
from the expected skips (no ../shared/data beside the checkout), e.g.

    skipped: 13 (missing system package haproxy: 3, run scripts/system_packages.sh as root; ../shared/data absent: 10)

pytest's -ra lists every skip with its reason above it; this line is the
count a reader checks. tests/conftest.py prints it.
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

import pytest

# The Debian packages scripts/system_packages.sh installs, each with what the
# skip reasons of its tests say when it is absent.
SYSTEM_PACKAGES = {
    "chromium chromium-driver": re.compile(r"chromium|chromedriver", re.IGNORECASE),
    "postgresql": re.compile(r"no PostgreSQL to test against", re.IGNORECASE),
    "haproxy": re.compile(r"haproxy", re.IGNORECASE),
}
SHARED_DATA = re.compile(r"shared/data")
SHARED_DATA_LABEL = "../shared/data absent"


def skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    """The reason a skipped report gives, without pytest's "Skipped: "."""
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return reason.removeprefix("Skipped: ")


def missing_package(reason: str) -> str | None:
    return next((name for name, says in SYSTEM_PACKAGES.items() if says.search(reason)), None)


def summary_line(reasons: Iterable[str]) -> str:
    """"skipped: N (group: n; ...)": missing system packages first, then
    ../shared/data, then any other reason as it was given."""
    packages: Counter[str] = Counter()
    others: Counter[str] = Counter()
    for reason in reasons:
        package = missing_package(reason)
        if package:
            packages[package] += 1
        elif SHARED_DATA.search(reason):
            others[SHARED_DATA_LABEL] += 1
        else:
            others[reason] += 1
    total = sum(packages.values()) + sum(others.values())
    if not total:
        return "skipped: none"
    groups = [f"missing system package {name}: {n}" for name, n in sorted(packages.items())]
    if packages:
        groups[-1] += ", run scripts/system_packages.sh as root"
    groups += [f"{label}: {n}" for label, n in sorted(others.items(), key=lambda item: (-item[1], item[0]))]
    return f"skipped: {total} ({'; '.join(groups)})"


def write_summary(terminalreporter: pytest.TerminalReporter) -> None:
    reasons = [skip_reason(report) for report in terminalreporter.stats.get("skipped", [])]
    line = summary_line(reasons)
    terminalreporter.write_line(line, yellow=bool(reasons), bold=any(map(missing_package, reasons)))
