"""The same outage under gunicorn itself: with one sync worker and the database hanging,
every `/health` is answered `fail` inside the time box, `/health/live` keeps answering,
and the worker is never held until gunicorn's own timeout (30 s) would replace it."""

from __future__ import annotations

import http.client
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..helpers import TEST_SECRET
from ..tcp_proxy import TcpProxy

ROOT = Path(__file__).resolve().parents[2]
TIME_BOX = 1.0
BOUND = 3 * TIME_BOX

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _get(port: int, path: str) -> tuple[int, bytes, float]:
    started = time.monotonic()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read(), time.monotonic() - started
    finally:
        connection.close()


@pytest.fixture
def served(proxy: TcpProxy, database_url: str) -> Iterator[int]:
    """The service under gunicorn (one sync worker) on 127.0.0.1, its database via `proxy`."""
    port = _free_port()
    metrics_dir = tempfile.mkdtemp(prefix="health-test-prometheus-")
    env = {
        **os.environ,
        "DATABASE_URL": proxy.url_for(database_url),
        "STRIPE_WEBHOOK_SECRET": TEST_SECRET,
        "BIND": f"127.0.0.1:{port}",
        "WEB_CONCURRENCY": "1",
        "HEALTH_DB_TIMEOUT": str(TIME_BOX),
        "HEALTH_CACHE_SECONDS": "0",
        "LOG_LEVEL": "WARNING",
        "PROMETHEUS_MULTIPROC_DIR": metrics_dir,
    }
    args = [sys.executable, "-m", "gunicorn", "service:create_app()"]
    args += ["-c", "python:service.gunicorn_conf"]
    process = subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, "gunicorn exited"
            try:
                if _get(port, "/health/live")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "gunicorn did not start"
            time.sleep(0.2)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=30)
        shutil.rmtree(metrics_dir, ignore_errors=True)


def test_a_hanging_database_never_holds_a_gunicorn_worker(served, proxy):
    status, body, _ = _get(served, "/health")
    assert status == 200
    assert body.startswith(b'{"status":"pass"')

    proxy.set_mode("blackhole")
    for _ in range(4):
        status, body, elapsed = _get(served, "/health")
        assert status == 503
        assert body.startswith(b'{"status":"fail"')
        assert elapsed < BOUND
        status, _, elapsed = _get(served, "/health/live")
        assert status == 200
        assert elapsed < BOUND

    proxy.set_mode("forward")
    deadline = time.monotonic() + 15
    while (status := _get(served, "/health")[0]) != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert status == 200
