"""A local HTTP double of the Stripe API, so no test ever reaches the network.

It serves the read endpoints the service uses (`GET /v1/customers`, `/v1/subscriptions`,
`/v1/prices`, `/v1/events`, each list and by id) from objects held in memory, with
Stripe's list shape (`object: list`, `data`, `has_more`, `url`), cursor pagination
(`limit`, `starting_after`, `ending_before`), newest first, and Stripe's error shape
(`{"error": {"type", "code", "message", "param"}}`): 401 without a key, 404
`resource_missing` for an unknown id. `fail_next(n)` answers the next `n` requests with
429 (or another status and headers) to exercise the client's backoff.

Start it with `with StripeDouble() as double:` (or the `stripe_double` fixture) and point
`StripeApi(api_key, api_base=double.url)` or `STRIPE_API_BASE` at it.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

# Collection name in the URL -> the `object` value of what it holds.
COLLECTIONS = {
    "customers": "customer",
    "subscriptions": "subscription",
    "prices": "price",
    "events": "event",
}
_ARRAY_PARAM = re.compile(r"^(?P<name>\w+)\[(?P<key>\w*)\]$")
# Subscriptions GET /v1/subscriptions lists when no status is asked for: all but canceled.
_DEFAULT_SUBSCRIPTION_STATUSES = frozenset(
    {"active", "past_due", "unpaid", "trialing", "incomplete", "incomplete_expired", "paused"}
)


@dataclass
class RecordedRequest:
    """One request the double answered, for asserting what the client asked."""

    method: str
    path: str
    args: dict[str, Any]
    status: int


@dataclass
class _Failure:
    status: int
    headers: dict[str, str]
    body: dict[str, Any]


class _QuietHandler(WSGIRequestHandler):
    """Werkzeug's handler without a log line per request."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


@dataclass
class StripeDouble:
    """In-memory Stripe objects behind a threaded HTTP server on 127.0.0.1."""

    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    prices: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[RecordedRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._failures: deque[_Failure] = deque()
        # Insertion order breaks ties between objects created in the same second.
        self._sequence = itertools.count()
        self._order: dict[str, int] = {}
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The base address to give `StripeApi` / `STRIPE_API_BASE`."""
        assert self._server is not None, "the double is not running"
        return f"http://127.0.0.1:{self._server.server_port}"

    def start(self) -> StripeDouble:
        self._server = make_server(
            "127.0.0.1", 0, self._wsgi, threaded=True, request_handler=_QuietHandler
        )
        # A short poll interval keeps stop() (and so each test's teardown) quick.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> StripeDouble:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- state -------------------------------------------------------------------------

    def put(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Store (or replace) a Stripe object under its `object` type; return it.

        `id` and `created` are filled in when missing, as Stripe would.
        """
        kind = obj["object"]
        collection = {v: k for k, v in COLLECTIONS.items()}.get(kind)
        if collection is None:
            raise ValueError(f"the double holds no {kind!r} objects")
        prefix = {"customer": "cus", "subscription": "sub", "price": "price", "event": "evt"}
        obj.setdefault("id", f"{prefix[kind]}_{uuid.uuid4().hex[:14]}")
        obj.setdefault("created", int(time.time()))
        obj.setdefault("livemode", False)
        with self._lock:
            self._order.setdefault(obj["id"], next(self._sequence))
            getattr(self, collection)[obj["id"]] = obj
        return obj

    def fail_next(
        self,
        count: int,
        status: int = 429,
        *,
        retry_after: float | None = None,
        should_retry: bool | None = None,
    ) -> None:
        """Answer the next `count` requests with `status` in Stripe's error shape."""
        headers: dict[str, str] = {}
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
        if should_retry is not None:
            headers["Stripe-Should-Retry"] = "true" if should_retry else "false"
        if status == 429:
            error = {
                "type": "invalid_request_error",
                "code": "rate_limit",
                "message": "Too many requests hit the API too quickly.",
            }
        else:
            error = {"type": "api_error", "message": f"Injected failure {status}."}
        with self._lock:
            for _ in range(count):
                self._failures.append(_Failure(status, headers, {"error": error}))

    # -- HTTP --------------------------------------------------------------------------

    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        response = self._answer(request)
        with self._lock:
            self.requests.append(
                RecordedRequest(
                    request.method, request.path, _parse_args(request), response.status_code
                )
            )
        return response(environ, start_response)

    def _answer(self, request: Request) -> Response:
        with self._lock:
            failure = self._failures.popleft() if self._failures else None
        if failure is not None:
            return _json(failure.body, failure.status, failure.headers)
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or len(auth) <= len("Bearer "):
            return _error(
                401, "invalid_request_error", "You did not provide an API key.", code=None
            )
        if request.method != "GET":
            return _error(405, "invalid_request_error", "The double serves GET requests only.")
        parts = request.path.strip("/").split("/")
        if len(parts) < 2 or parts[0] != "v1" or parts[1] not in COLLECTIONS or len(parts) > 3:
            return _error(
                404,
                "invalid_request_error",
                f"Unrecognized request URL (GET: {request.path}).",
                code=None,
            )
        collection = parts[1]
        if len(parts) == 3:
            return self._retrieve(collection, parts[2])
        return self._list(collection, request)

    def _retrieve(self, collection: str, object_id: str) -> Response:
        with self._lock:
            obj = getattr(self, collection).get(object_id)
        if obj is None:
            kind = COLLECTIONS[collection]
            return _error(
                404,
                "invalid_request_error",
                f"No such {kind}: '{object_id}'",
                code="resource_missing",
                param="id",
            )
        return _json(obj)

    def _list(self, collection: str, request: Request) -> Response:
        args = _parse_args(request)
        try:
            limit = int(args.get("limit", 10))
        except ValueError:
            limit = -1
        if not 1 <= limit <= 100:
            return _error(
                400,
                "invalid_request_error",
                "Invalid integer: limit must be between 1 and 100.",
                param="limit",
            )
        with self._lock:
            objects = sorted(
                getattr(self, collection).values(),
                key=lambda o: (o.get("created", 0), self._order.get(o["id"], 0)),
                reverse=True,
            )
        objects = [o for o in objects if _matches(collection, o, args)]
        ids = [o["id"] for o in objects]
        for cursor_name in ("starting_after", "ending_before"):
            cursor = args.get(cursor_name)
            if cursor is not None and cursor not in ids:
                return _error(
                    400,
                    "invalid_request_error",
                    f"No such {COLLECTIONS[collection]}: '{cursor}'",
                    code="resource_missing",
                    param=cursor_name,
                )
        if (after := args.get("starting_after")) is not None:
            window = objects[ids.index(after) + 1 :]
            page, has_more = window[:limit], len(window) > limit
        elif (before := args.get("ending_before")) is not None:
            window = objects[: ids.index(before)]
            page, has_more = window[-limit:], len(window) > limit
        else:
            page, has_more = objects[:limit], len(objects) > limit
        return _json(
            {"object": "list", "data": page, "has_more": has_more, "url": f"/v1/{collection}"}
        )


def _matches(collection: str, obj: dict[str, Any], args: dict[str, Any]) -> bool:
    """The list filters the service uses: created range, status, customer, event types."""
    created = args.get("created")
    if isinstance(created, dict):
        when = obj.get("created", 0)
        bounds = {
            "gt": lambda b: when > b,
            "gte": lambda b: when >= b,
            "lt": lambda b: when < b,
            "lte": lambda b: when <= b,
        }
        for op, test in bounds.items():
            if op in created and not test(int(created[op])):
                return False
    elif created is not None and obj.get("created") != int(created):
        return False
    if (customer := args.get("customer")) is not None and obj.get("customer") != customer:
        return False
    if collection == "subscriptions":
        status = args.get("status")
        if status is None:
            return obj.get("status") in _DEFAULT_SUBSCRIPTION_STATUSES
        if status != "all":
            return bool(obj.get("status") == status)
    if collection == "events":
        types = args.get("types")
        if isinstance(types, dict):
            types = list(types.values())
        if types and obj.get("type") not in types:
            return False
        if (single := args.get("type")) is not None and obj.get("type") != single:
            return False
    return True


def _parse_args(request: Request) -> dict[str, Any]:
    """Stripe's form encoding: `created[gt]=1` -> {"created": {"gt": "1"}},
    `types[0]=a&types[1]=b` (or `types[]=a`) -> {"types": ["a", "b"]}."""
    args: dict[str, Any] = {}
    for key, values in request.args.lists():
        match = _ARRAY_PARAM.match(key)
        if match is None:
            args[key] = values[-1]
            continue
        name, sub = match["name"], match["key"]
        if sub == "" or sub.isdigit():
            args.setdefault(name, []).extend(values)
        else:
            args.setdefault(name, {})[sub] = values[-1]
    return args


def _json(
    body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    response = Response(json.dumps(body), status=status, mimetype="application/json")
    response.headers["Request-Id"] = f"req_{uuid.uuid4().hex[:14]}"
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _error(
    status: int,
    error_type: str,
    message: str,
    *,
    code: str | None = None,
    param: str | None = None,
) -> Response:
    error: dict[str, Any] = {"type": error_type, "message": message}
    if code is not None:
        error["code"] = code
        error["doc_url"] = f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}"
    if param is not None:
        error["param"] = param
    return _json({"error": error}, status)
