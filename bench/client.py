"""A small asyncio HTTP/1.1 client: little CPU per request, so the load process measures
the server rather than itself. Keeps connections alive when the server allows it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from service.stripe_webhooks.signature import sign_header

from .events import SECRET


@dataclass
class Answer:
    code: int  # HTTP status; 0 when the connection failed or timed out
    status: str | None  # the `status` field of a 200 answer
    seconds: float
    error: str | None = None


class Connection:
    """One keep-alive connection to one server, reopened whenever the server closes it."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.path = parts.path or "/"
        self.timeout = timeout
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()
        self.reader = self.writer = None

    async def post_event(self, body: bytes, secret: str = SECRET) -> Answer:
        """POST a Stripe event signed now, as Stripe signs each delivery attempt."""
        signature = sign_header(body, secret, int(time.time()))
        head = (
            f"POST {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nStripe-Signature: {signature}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        return await self.request(head + body)

    async def request(self, raw: bytes) -> Answer:
        started = time.perf_counter()
        try:
            code, payload, keep = await asyncio.wait_for(self._exchange(raw), self.timeout)
        except (OSError, asyncio.IncompleteReadError, ValueError, TimeoutError) as exc:
            await self.close()
            return Answer(0, None, time.perf_counter() - started, type(exc).__name__)
        seconds = time.perf_counter() - started
        if not keep:
            await self.close()
        status = None
        if code == 200:
            with contextlib.suppress(ValueError, AttributeError):
                status = json.loads(payload).get("status")
        return Answer(code, status, seconds)

    async def _exchange(self, raw: bytes) -> tuple[int, bytes, bool]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(raw)
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        code = int(lines[0].split(" ", 2)[1])
        length = 0
        keep = True
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "connection" and value.strip().lower() == "close":
                keep = False
        payload = await self.reader.readexactly(length) if length else b""
        return code, payload, keep
