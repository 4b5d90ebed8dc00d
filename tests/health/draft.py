"""The response format of draft-inadarei-api-health-check (version 06), as a checker.

Each rule names the section of the draft it comes from, so a failing assertion says which
part of the format an answer broke.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from werkzeug.test import TestResponse

STATUSES = {"pass", "warn", "fail"}
COMPONENT_TYPES = {"component", "datastore", "system"}
_STRING_FIELDS = ("version", "releaseId", "output", "serviceId", "description")
_ENTRY_STRING_FIELDS = ("componentId", "componentType", "observedUnit", "output")


def assert_health_response(response: TestResponse) -> dict[str, Any]:
    """Check an HTTP answer against the draft and return its parsed document."""
    # 3: the media type.
    assert response.mimetype == "application/health+json"
    document: dict[str, Any] = json.loads(response.get_data(as_text=True))
    assert_health_document(document)
    # 3.1: pass and warn in 2xx-3xx, fail in 4xx-5xx.
    if document["status"] == "fail":
        assert 400 <= response.status_code < 600, response.status_code
    else:
        assert 200 <= response.status_code < 400, response.status_code
    return document


def assert_health_document(document: dict[str, Any]) -> None:
    assert isinstance(document, dict)
    # 3.1: status is required and one of the vocabulary.
    assert document.get("status") in STATUSES, document.get("status")
    # 3.2, 3.3, 3.5, 3.8, 3.9: optional strings.
    for name in _STRING_FIELDS:
        if name in document:
            assert isinstance(document[name], str), name
    # 3.4: notes is an array of strings.
    if "notes" in document:
        assert all(isinstance(note, str) for note in document["notes"])
    # 3.5: output SHOULD be omitted for pass.
    if document["status"] == "pass":
        assert "output" not in document
    # 3.7: links values are URIs (strings).
    if "links" in document:
        assert all(isinstance(uri, str) for uri in document["links"].values())
    # 3.6 and 4: the checks object.
    checks = document.get("checks", {})
    assert isinstance(checks, dict)
    for key, entries in checks.items():
        _assert_check(key, entries)


def _assert_check(key: str, entries: Any) -> None:
    # 4: "{componentName}:{measurementName}", neither part containing a colon.
    assert key.count(":") <= 1, key
    component, _, measurement = key.partition(":")
    assert component or measurement, key
    # 4: the value is an array of objects, each with at least one key.
    assert isinstance(entries, list), key
    assert entries, key
    for entry in entries:
        assert isinstance(entry, dict), key
        assert entry, key
        _assert_entry(key, component, entry)


def _assert_entry(key: str, component: str, entry: dict[str, Any]) -> None:
    for name in _ENTRY_STRING_FIELDS:
        if name in entry:
            assert isinstance(entry[name], str), (key, name)
    # 4.2: componentType SHOULD be present with a componentName; pre-defined or a URI.
    if component:
        assert "componentType" in entry, key
        kind = entry["componentType"]
        assert kind in COMPONENT_TYPES or re.match(r"^[a-z][a-z0-9+.-]*:", kind), (key, kind)
    # 4.4: observedUnit SHOULD be present with observedValue.
    if "observedValue" in entry:
        assert "observedUnit" in entry, key
    # 4.5: status has the top-level meaning.
    if "status" in entry:
        assert entry["status"] in STATUSES, (key, entry["status"])
    # 4.6: affectedEndpoints is an array of URI templates, omitted when passing.
    if "affectedEndpoints" in entry:
        assert entry.get("status") != "pass", key
        assert all(isinstance(t, str) for t in entry["affectedEndpoints"]), key
    # 4.7: time is an ISO 8601 date-time.
    if "time" in entry:
        datetime.fromisoformat(entry["time"].replace("Z", "+00:00"))
    # 4.8: output SHOULD be omitted for pass.
    if entry.get("status") == "pass":
        assert "output" not in entry, key
