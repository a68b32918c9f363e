"""Process helpers the benchmark and probe scripts share: a free loopback port, a process's RSS, stopping a server.

Imported by scripts/*.py with ``scripts/`` put on ``sys.path`` first (they are also loaded by file path
from tests, where the folder is not on the path by itself).
"""
from __future__ import annotations

import signal
import socket
import subprocess
from pathlib import Path


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid: int) -> float:
    """Resident memory of process ``pid`` in MiB (``VmRSS``), NaN once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def stop(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """End a server the way Ctrl-C does (SIGINT: it shuts down cleanly); SIGKILL after ``timeout`` seconds."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
