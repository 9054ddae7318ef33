"""A small tmpfs mounted for one test: a real device that fills up.

Needs root (CAP_SYS_ADMIN) and ``mount``; ``skip_reason()`` says why it
cannot run here, so a test skips with that reason instead of failing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Final

__all__ = ["fill", "mounted_tmpfs", "skip_reason"]

_COMMAND_TIMEOUT_S: Final = 30.0


def skip_reason() -> str | None:
    """None when a tmpfs can be mounted here, else why not."""
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    if shutil.which("mount") is None or shutil.which("umount") is None:
        return "mount/umount are not installed"
    return None


@contextlib.contextmanager
def mounted_tmpfs(path: Path, *, size_kib: int) -> Iterator[Path]:
    """Mount a tmpfs of ``size_kib`` at ``path`` (created); unmounted at exit,
    lazily if a process still holds a file in it."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k,mode=0700", "tmpfs", str(path)],
                   check=True, capture_output=True, timeout=_COMMAND_TIMEOUT_S)
    try:
        yield path
    finally:
        done = subprocess.run(["umount", str(path)], capture_output=True, timeout=_COMMAND_TIMEOUT_S)
        if done.returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=_COMMAND_TIMEOUT_S)


def fill(path: Path, *, chunk_bytes: int = 1 << 16, max_bytes: int = 1 << 34) -> int:
    """Write zeros to ``path`` until the device is full (or ``max_bytes``).
    Returns the bytes written; the file stays until the caller removes it."""
    written = 0
    chunk = b"\0" * chunk_bytes
    with open(path, "wb", buffering=0) as handle:
        while written < max_bytes:
            try:
                written += handle.write(chunk)
            except OSError:
                if chunk_bytes <= 512:
                    break
                chunk_bytes //= 16
                chunk = chunk[:chunk_bytes]
    return written
