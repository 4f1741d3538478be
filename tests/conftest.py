from __future__ import annotations

from collections.abc import Callable, Generator, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from skip_summary import write_summary
from voicetools.cluster import System, make_system
from voicetools.faults import frames_of
from voicetools.paths import SPEAKERS, SPEECH

# Fixtures that start real processes: a test using one is an integration test
# whether or not its module says so.
PROCESS_FIXTURES = frozenset({"system", "vad_system", "pg_server", "pg_url", "own_pg"})


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
def speech_frames(speech: Callable[[str], Path]) -> Callable[..., list[list[bytes]]]:
    """speech_frames('en_example.wav', ...) -> per recording of ../shared/data/speech,
    the whole 100 ms WAV frames of its first 10 s, as the failure scenarios
    stream them (voicetools.faults.frames_of); skip when one is absent."""
    return lambda *names: [frames_of(speech(name), seconds=10) for name in names]


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


@pytest.fixture
def vad_system(tmp_path: Path) -> Iterator[Callable[..., System]]:
    """vad_system(n_workers=3, balancer_args=()) -> a started system of its own
    (VAD-only workers, --encoder none, and a balancer) under tmp_path, for a
    test that kills, freezes or stops its processes; stopped after the test
    (a test may stop it earlier, to assert on what the stop did)."""
    started: list[System] = []

    def start(n_workers: int = 3, balancer_args: Sequence[str] = ()) -> System:
        system = make_system(tmp_path / f"system{len(started)}", n_workers=n_workers,
                             worker_args=["--encoder", "none"], balancer_args=list(balancer_args))
        started.append(system)
        return system.start()
    try:
        yield start
    finally:
        for system in started:
            system.stop()
