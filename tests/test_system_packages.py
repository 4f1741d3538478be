"""scripts/system_packages.sh: with everything there it does nothing; with a
package missing it installs it as root, and otherwise prints the command to
run, and always lets the tests go on (exit 0).

"Missing" is made real by a PATH without chromium and chromedriver. apt-get
is the one stand-in: a script that records its arguments (and can fail), so
that no test installs anything on the machine."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from voicetools.paths import REPO

SCRIPT = REPO / "scripts" / "system_packages.sh"
HIDDEN = {"chromium", "chromium-browser", "chromedriver", "apt-get"}
AS_ROOT = os.geteuid() == 0


def missing_here() -> list[str]:
    """The script's checks, in Python: what this machine lacks."""
    found = {"chromium chromium-driver": shutil.which("chromium") and shutil.which("chromedriver"),
             "postgresql": list(Path("/usr/lib/postgresql").glob("*/bin/initdb")),
             "haproxy": shutil.which("haproxy") or Path("/usr/sbin/haproxy").exists()}
    return [name for name, there in found.items() if not there]


@pytest.fixture
def bin_dirs() -> Iterator[tuple[Path, Path]]:
    """(a directory with a link to every command on PATH but chromium,
    chromedriver and apt-get; a directory for the recording apt-get). In a
    world-readable directory of /tmp: the not-root test runs as `nobody`."""
    with tempfile.TemporaryDirectory(prefix="system-packages-") as root:
        os.chmod(root, 0o755)
        commands, apt = Path(root) / "bin", Path(root) / "apt"
        commands.mkdir()
        apt.mkdir()
        for directory in os.environ["PATH"].split(os.pathsep):
            for path in Path(directory).glob("*") if Path(directory).is_dir() else ():
                link = commands / path.name
                if path.name not in HIDDEN and not link.exists() and os.access(path, os.X_OK):
                    link.symlink_to(path)
        yield commands, apt


def fake_apt_get(directory: Path, exit_code: int) -> Path:
    """apt-get that appends its arguments to a file and exits exit_code; the file."""
    calls = directory / "calls"
    calls.touch(mode=0o666)
    os.chmod(calls, 0o666)
    apt_get = directory / "apt-get"
    apt_get.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n[ {exit_code} = 0 ] || echo "E: no network" >&2\n'
                       f"exit {exit_code}\n")
    apt_get.chmod(0o755)
    return calls


def run(path: list[Path], prefix: tuple[str, ...] = (), script: Path = SCRIPT) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.pathsep.join(map(str, path)), "HOME": "/tmp", "LANG": "C.UTF-8"}
    return subprocess.run([*prefix, str(script)], env=env, capture_output=True, text=True, timeout=60)


def test_with_everything_installed_it_is_silent_and_never_runs_apt(tmp_path: Path) -> None:
    if missing_here():
        pytest.skip(f"{' and '.join(missing_here())} missing: this test needs every package there "
                    "(as root, scripts/system_packages.sh installs them)")
    calls = fake_apt_get(tmp_path, 0)
    done = run([tmp_path, *map(Path, os.environ["PATH"].split(os.pathsep))])
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert calls.read_text() == ""


@pytest.mark.skipif(not AS_ROOT, reason="the install path is taken only as root")
def test_as_root_a_missing_package_is_installed_with_apt_get(bin_dirs: tuple[Path, Path]) -> None:
    commands, apt = bin_dirs
    calls = fake_apt_get(apt, 0)
    done = run([apt, commands])
    assert done.returncode == 0, done.stderr
    update, install = calls.read_text().splitlines()
    assert update == "update -qq"
    assert install.startswith("install -y -qq chromium chromium-driver")
    assert "installed chromium chromium-driver" in done.stdout


@pytest.mark.skipif(not AS_ROOT, reason="the install path is taken only as root")
def test_as_root_a_failed_apt_get_is_shown_with_the_command_and_the_tests_go_on(bin_dirs: tuple[Path, Path]) -> None:
    commands, apt = bin_dirs
    calls = fake_apt_get(apt, 100)
    done = run([apt, commands])
    assert done.returncode == 0, done.stderr
    assert calls.read_text() == "update -qq\n"  # no install after a failed update
    assert "apt-get: E: no network" in done.stdout
    assert "could not install chromium chromium-driver" in done.stdout
    assert done.stdout.splitlines()[-1] == f"    {SCRIPT}"


def test_not_root_it_prints_the_one_command_and_installs_nothing(bin_dirs: tuple[Path, Path]) -> None:
    commands, apt = bin_dirs
    calls = fake_apt_get(apt, 0)
    script = SCRIPT
    if AS_ROOT:
        if not shutil.which("runuser"):
            pytest.skip("runuser (util-linux) is needed to run the script as another user")
        # A copy where `nobody` may read it: the checkout may sit in root's own directory.
        script = commands.parent / "scripts" / SCRIPT.name
        script.parent.mkdir()
        shutil.copy2(SCRIPT, script)
        done = run([apt, commands], prefix=("runuser", "-u", "nobody", "--"), script=script)
    else:
        done = run([apt, commands])
    assert done.returncode == 0, done.stderr
    assert calls.read_text() == ""
    first, command = done.stdout.splitlines()[-2:]
    assert first.startswith("system_packages.sh: missing chromium chromium-driver")
    assert command == f"    sudo {script}"
