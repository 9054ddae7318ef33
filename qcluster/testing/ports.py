"""Loopback ports for nodes that tests and benchmarks start."""

from __future__ import annotations

import os
import pathlib
import random
import socket
import time
from typing import Final

__all__ = ["free_port"]


def _ephemeral_low() -> int:
    try:
        return int(pathlib.Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


_PORT_LOW: Final = 10_000
_PORT_HIGH: Final = min(_ephemeral_low(), 32_768)
_handed_out: set[int] = set()
_random = random.Random(os.getpid() ^ time.monotonic_ns())


def free_port() -> int:
    """A loopback port that is free now and lies *below* the ephemeral range.

    A port taken from the ephemeral range (bind to port 0) can be reused as
    the local port of some outgoing connection before a node that is started
    later (or restarted after kill -9) binds it. Ports below the range are
    only ever taken by explicit binds; each is handed out once per process.
    """
    for _ in range(1_000):  # bounded
        port = _random.randrange(_PORT_LOW, _PORT_HIGH)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port in [{_PORT_LOW}, {_PORT_HIGH})")
