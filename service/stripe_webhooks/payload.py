"""Turning a verified request body into a Stripe event, or a clear reason it is not one."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..billing.snapshots import customer_id_of


class PayloadError(ValueError):
    """The body is not a JSON Stripe snapshot event; the message says what is wrong."""


@dataclass(frozen=True)
class Event:
    """The parts of a Stripe event the service routes on, beside the whole payload."""

    id: str
    type: str
    created: int
    livemode: bool
    api_version: str | None
    payload: dict[str, Any]

    @property
    def data_object(self) -> dict[str, Any]:
        """The snapshot the event carries (`data.object`)."""
        obj = self.payload["data"]["object"]
        assert isinstance(obj, dict)
        return obj

    @property
    def customer_id(self) -> str | None:
        """The Stripe customer the event concerns, whatever the object type."""
        return customer_id_of(self.data_object)


def _storable(value: str) -> bool:
    """Whether PostgreSQL text can hold `value`: no NUL, no lone surrogate (a JSON escape
    such as `\\ud800` decodes to one, and UTF-8 cannot encode it)."""
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def event_from_payload(payload: Any) -> Event:
    """Validate a decoded payload's shape; raise `PayloadError` naming the first problem."""
    if not isinstance(payload, dict):
        raise PayloadError("The body must be a JSON object (a Stripe event)")
    if payload.get("object") == "v2.core.event":
        raise PayloadError(
            "This is a thin event (v2.core.event); this endpoint takes snapshot events: "
            "configure the Stripe webhook endpoint with the snapshot payload style"
        )
    if payload.get("object") != "event":
        raise PayloadError('The body is not a Stripe event: "object" must be "event"')
    event_id = payload.get("id")
    if (
        not isinstance(event_id, str)
        or not event_id
        or len(event_id) > 255
        or not _storable(event_id)
    ):
        raise PayloadError('The event has no valid "id"')
    event_type = payload.get("type")
    if (
        not isinstance(event_type, str)
        or not event_type
        or len(event_type) > 255
        or not _storable(event_type)
    ):
        raise PayloadError('The event has no valid "type"')
    created = payload.get("created")
    if not isinstance(created, int) or isinstance(created, bool) or not 0 <= created < 2**41:
        raise PayloadError('The event has no valid "created" timestamp')
    livemode = payload.get("livemode")
    if not isinstance(livemode, bool):
        raise PayloadError('The event has no valid "livemode" flag')
    api_version = payload.get("api_version")
    if api_version is not None and (not isinstance(api_version, str) or not _storable(api_version)):
        raise PayloadError('The event\'s "api_version" must be a string')
    data = payload.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("object"), dict):
        raise PayloadError('The event has no "data.object" snapshot')
    customer_id = customer_id_of(data["object"])
    if customer_id is not None and not _storable(customer_id):
        raise PayloadError("The event's customer id holds a null character or lone surrogate")
    return Event(
        id=event_id,
        type=event_type,
        created=created,
        livemode=livemode,
        api_version=api_version,
        payload=payload,
    )


def parse_event(body: bytes) -> tuple[Event, str]:
    """Decode and validate a request body; raise `PayloadError` when it is not an event.

    Returns the event and the body as text, which is stored as-is (PostgreSQL parses it
    into JSONB) so the hot path never serialises the payload a second time.
    """
    try:
        text = body.decode("utf-8")
        payload = json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise PayloadError("The body is not valid UTF-8 JSON") from None
    return event_from_payload(payload), text
