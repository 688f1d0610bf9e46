"""A real `redis-server` on 127.0.0.1 for the tests that use Redis (started and stopped by them)."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time

import pytest


def start_redis(port: int) -> subprocess.Popen:
    """`redis-server` on 127.0.0.1:`port`, in memory only, ready when this returns."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server; scripts/test.sh does)")
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert process.poll() is None, "redis-server exited at start"
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return process
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"redis-server did not listen on port {port} within 20 s")
