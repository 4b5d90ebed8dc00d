"""Cursor pagination and the validation of list filters, shared by the API, CLI and page.

A cursor is the sort key of the last row shown, base64url-encoded so callers treat it as
opaque. Keyset pagination (`WHERE (key, id) < (...)`) stays fast and stable while rows are
added, where OFFSET would skip or repeat rows and slow down with depth.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Final

DEFAULT_LIMIT: Final = 50
MAX_LIMIT: Final = 200


class InvalidQuery(ValueError):
    """A filter, limit or cursor the caller sent is not valid; the message says which."""

    def __init__(self, error: str, message: str) -> None:
        super().__init__(message)
        self.error = error
        self.message = message


def encode_cursor(*parts: str) -> str:
    """An opaque cursor from the sort key of the last row of a page."""
    raw = json.dumps(list(parts), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, size: int) -> list[str]:
    """The sort key inside a cursor; `InvalidQuery` when it was not made by `encode_cursor`."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        parts = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, binascii.Error, UnicodeError):
        raise InvalidQuery("invalid_cursor", "The cursor is not one this API returned") from None
    if (
        not isinstance(parts, list)
        or len(parts) != size
        or not all(isinstance(p, str) for p in parts)
    ):
        raise InvalidQuery("invalid_cursor", "The cursor is not one this API returned")
    return parts


def parse_limit(raw: str | int | None) -> int:
    """A page size between 1 and MAX_LIMIT (DEFAULT_LIMIT when not given)."""
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    try:
        value = int(raw)
    except ValueError:
        raise InvalidQuery(
            "invalid_parameter", f"limit must be a whole number, got {raw!r}"
        ) from None
    if not 1 <= value <= MAX_LIMIT:
        raise InvalidQuery("invalid_parameter", f"limit must be between 1 and {MAX_LIMIT}")
    return value
