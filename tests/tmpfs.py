"""A real small file system for the full-disk tests: a tmpfs mounted for one
test, or a skip saying why there is none (mounting needs root or
CAP_SYS_ADMIN: CI runs as root)."""
from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CANNOT_MOUNT = "no tmpfs for the full-disk tests: mount -t tmpfs needs root or CAP_SYS_ADMIN"


@contextmanager
def tmpfs(directory: Path, size: str) -> Iterator[Path]:
    """directory, with a tmpfs of size (mount's size=, e.g. "64k") mounted on
    it for the with block."""
    directory.mkdir(parents=True, exist_ok=True)
    mount = shutil.which("mount")
    if mount is None:
        pytest.skip(CANNOT_MOUNT)
    done = subprocess.run([mount, "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(CANNOT_MOUNT)
    try:
        yield directory
    finally:
        # Lazy: a worker process still holding a file in it does not keep it mounted.
        subprocess.run(["umount", "--lazy", str(directory)], check=True)


def free_bytes(directory: Path) -> int:
    stat = os.statvfs(directory)
    return stat.f_bavail * stat.f_frsize


def fill(directory: Path, leave: int = 0) -> Path:
    """A file taking the file system's free space but about `leave` bytes
    (tmpfs hands out 4 KiB pages): a disk that something else filled."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as out:
        while (chunk := min(64 * 1024, free_bytes(directory) - leave) // 4096 * 4096) > 0:
            try:
                out.write(b"\0" * chunk)
            except OSError:  # ENOSPC: full
                break
    return filler
