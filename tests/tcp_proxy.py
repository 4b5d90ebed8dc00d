"""A local TCP proxy in front of PostgreSQL whose path tests can cut.

`mode = "forward"` relays bytes; `"refuse"` closes every connection (the database looks
stopped); `"blackhole"` accepts and keeps connections open but relays nothing (a network
partition: the peer is there, nothing answers). The target may be a TCP address or the
Unix socket the embedded server listens on.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from urllib.parse import parse_qs, urlsplit


class TcpProxy:
    def __init__(self, database_url: str) -> None:
        parts = urlsplit(database_url.replace("postgresql+psycopg://", "postgresql://"))
        socket_dir = parse_qs(parts.query).get("host", [None])[0]
        self.unix_path: str | None = None
        self.target: tuple[str, int] | None = None
        if socket_dir and socket_dir.startswith("/"):
            self.unix_path = f"{socket_dir}/.s.PGSQL.{parts.port or 5432}"
        else:
            self.target = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self.mode = "forward"
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._connections: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept_loop, daemon=True).start()

    def url_for(self, database_url: str) -> str:
        """`database_url` rewritten to go through this proxy."""
        parts = urlsplit(database_url)
        user = parts.username or "postgres"
        password = f":{parts.password}" if parts.password else ""
        database = parts.path.lstrip("/")
        return f"postgresql+psycopg://{user}{password}@127.0.0.1:{self.port}/{database}"

    def set_mode(self, mode: str) -> None:
        """Switch mode; leaving `forward` also cuts the connections already open."""
        assert mode in {"forward", "refuse", "blackhole"}
        self.mode = mode
        if mode == "refuse":
            self.cut_connections()

    def cut_connections(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self.cut_connections()

    def _upstream(self) -> socket.socket:
        if self.unix_path:
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self.unix_path)
            return upstream
        assert self.target is not None
        return socket.create_connection(self.target)

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.mode == "refuse":
                client.close()
                continue
            with self._lock:
                self._connections.append(client)
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        try:
            upstream = self._upstream()
            with self._lock:
                self._connections.append(upstream)
            peers = {client: upstream, upstream: client}
            while not self._closed:
                readable, _, _ = select.select(list(peers), [], [], 0.2)
                if self.mode == "blackhole":
                    continue  # hold everything: the connection stays open, nothing moves
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)
        except (OSError, ValueError):  # ValueError: select() on a socket cut meanwhile
            return
        finally:
            for sock in (client, upstream):
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.close()
