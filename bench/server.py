"""Starting and stopping gunicorn (the service, or the ceiling) with the service's settings."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from .events import PLAN_PRICE_MAP, SECRET
from .pg import ROOT, free_port

SERVICE_APP = "service:create_app()"
CEILING_APP = "bench.ceiling:create_app()"
FLOOR_APP = "bench.ceiling:create_floor_app()"


class Gunicorn:
    """One gunicorn master on 127.0.0.1:<port>, `-c python:service.gunicorn_conf`."""

    def __init__(
        self,
        app: str,
        database_url: str,
        *,
        log: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        self.app = app
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/webhooks/stripe"
        self.log = log
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "STRIPE_WEBHOOK_SECRET": SECRET,
            "PLAN_PRICE_MAP": PLAN_PRICE_MAP,
            "LOG_LEVEL": "WARNING",
            "BIND": f"127.0.0.1:{self.port}",
            **(env or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        args = [sys.executable, "-m", "gunicorn", self.app, "-c", "python:service.gunicorn_conf"]
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                args, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        health = f"http://127.0.0.1:{self.port}/health/live"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited; see {self.log}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(health, timeout=2) as response,
            ):
                if response.status == 200 and len(self.worker_pids()) >= self.workers:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"gunicorn did not answer on port {self.port}; see {self.log}")

    @property
    def workers(self) -> int:
        from service import gunicorn_conf

        raw = self.env.get("WEB_CONCURRENCY")
        return int(raw) if raw else int(gunicorn_conf.workers)

    def worker_pids(self) -> list[int]:
        """The master's children: its web workers."""
        if self.process is None:
            return []
        path = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        try:
            return [int(pid) for pid in path.read_text().split()]
        except OSError:
            return []

    def worker_rss_mib(self) -> dict[int, float]:
        sizes: dict[int, float] = {}
        for pid in self.worker_pids():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        sizes[pid] = int(line.split()[1]) / 1024
        return sizes

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


def wait_port_closed(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
        except OSError:
            return
        time.sleep(0.1)
