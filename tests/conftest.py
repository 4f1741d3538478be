from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from cluster import SPEAKERS, SPEECH, System, make_system
from skip_summary import write_summary

# Fixtures that start real processes: a test using one is an integration test
# whether or not its module says so.
PROCESS_FIXTURES = frozenset({"system", "pg_server", "pg_url", "own_pg"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if PROCESS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


# Outermost (tryfirst), so that the line comes after -ra's list of skips, just
# above pytest's counts.
@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> Generator[None]:
    yield
    write_summary(terminalreporter)


def shared_file(directory: Path, name: str) -> Path:
    path = directory / name
    if not path.exists():
        pytest.skip(f"real recordings not available: {path} is absent "
                    "(../shared/data is beside the repo only in CI and dev machines)")
    return path


@pytest.fixture(scope="session")
def speech() -> Any:
    """speech('en_example.wav') -> Path in ../shared/data/speech, or skip."""
    return lambda name: shared_file(SPEECH, name)


@pytest.fixture(scope="session")
def speakers_dir() -> Path:
    if not SPEAKERS.is_dir():
        pytest.skip(f"speaker set not available: {SPEAKERS} is absent")
    return SPEAKERS


@pytest.fixture(scope="session")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """Balancer + three VAD-only workers as real processes on free ports."""
    sys_ = make_system(tmp_path_factory.mktemp("system"), worker_args=["--encoder", "none"])
    try:
        yield sys_.start()
    finally:
        sys_.stop()
