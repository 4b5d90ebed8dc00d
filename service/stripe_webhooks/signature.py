"""Verification of the `Stripe-Signature` header against the raw request body.

Exactly as strict as the stripe library's `WebhookSignature.verify_header` (only `v1`
signatures, lowercase hex, no spaces around items, the first `t=` wins), with two
additions the library lacks: several secrets at once, so a secret can be rotated without
downtime, and a timestamp too far in the future is rejected like one too far in the past.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

SCHEME = "v1"


class SignatureError(Exception):
    """The request is not a genuine, recent Stripe delivery; the message says why."""


def _timestamp_and_signatures(header: str) -> tuple[int, list[str]]:
    """Split the header the way the stripe library does, raising on a malformed one."""
    items = [item.split("=", 2) for item in header.split(",")]
    try:
        # Like the library: every `t` and `v1` item must carry a value, the first `t` wins.
        timestamps = [item[1] for item in items if item[0] == "t"]
        timestamp = int(timestamps[0])
        signatures = [item[1] for item in items if item[0] == SCHEME]
    except (IndexError, ValueError):
        raise SignatureError("Unable to extract timestamp and signatures from header") from None
    return timestamp, signatures


def compute_signature(timestamp: int, body: bytes, secret: str) -> str:
    """The hex HMAC-SHA256 Stripe computes over `"{timestamp}.{body}"`."""
    signed = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def sign_header(body: bytes, secret: str, timestamp: int) -> str:
    """A `Stripe-Signature` header for `body`, as Stripe would send it."""
    return f"t={timestamp},{SCHEME}={compute_signature(timestamp, body, secret)}"


def verify(
    body: bytes,
    header: str | None,
    secrets: Sequence[str],
    tolerance: int,
    now: float,
) -> int:
    """Check that one of `secrets` signed `body` within `tolerance` seconds of `now`.

    Returns the signed timestamp; raises `SignatureError` with a message safe to show the
    caller (it never contains a secret or an expected signature).
    """
    if not header:
        raise SignatureError("No Stripe-Signature header value was provided")
    timestamp, signatures = _timestamp_and_signatures(header)
    if not signatures:
        raise SignatureError(f"No signatures found with expected scheme {SCHEME}")
    expected = [compute_signature(timestamp, body, secret).encode() for secret in secrets]
    # Compare every pair so the time taken does not tell which secret or signature matched.
    # Bytes, because compare_digest refuses str with non-ASCII characters a client may send.
    matched = False
    for candidate in signatures:
        candidate_bytes = candidate.encode("utf-8", "replace")
        for signature in expected:
            matched |= hmac.compare_digest(signature, candidate_bytes)
    if not matched:
        raise SignatureError("No signatures found matching the expected signature for payload")
    # Compared, not subtracted: a signed timestamp of hundreds of digits overflows a float.
    if not now - tolerance <= timestamp <= now + tolerance:
        raise SignatureError(
            f"Timestamp outside the tolerance zone ({timestamp}): "
            f"more than {tolerance} seconds from the server's clock"
        )
    return timestamp
