"""One typed settings object, read from the environment once at start-up.

Every setting the service understands is declared here with its type and default.
A required setting that is missing stops start-up with a message naming the variable,
so a misconfigured deployment fails loudly instead of answering Stripe with 500s.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

DEFAULT_MAX_WEBHOOK_BYTES = 1024 * 1024


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


def _parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(f"{name} must be true or false, got {raw!r}")


def _parse_int(name: str, raw: str, *, minimum: int = 0) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {value}")
    return value


def _parse_float(name: str, raw: str, *, positive: bool = False) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    # float() also reads "nan" and "inf", which no duration or threshold means.
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        least = "more than 0" if positive else "at least 0"
        raise SettingsError(f"{name} must be a finite number {least}, got {raw!r}")
    return value


def parse_plan_price_map(raw: str) -> dict[str, str]:
    """Parse `price_abc=pro,price_def=scale` into a mapping from price id to plan name."""
    mapping: dict[str, str] = {}
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        price, sep, plan = item.partition("=")
        if not sep or not price.strip() or not plan.strip():
            raise SettingsError(f"PLAN_PRICE_MAP entries look like price_id=plan, got {item!r}")
        mapping[price.strip()] = plan.strip().lower()
    return mapping


def normalize_database_url(url: str) -> str:
    """Accept the `postgres://` and `postgresql://` forms hosting platforms hand out.

    SQLAlchemy needs the driver named, and this service speaks psycopg 3.
    """
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    if url.startswith("postgresql+psycopg://"):
        return url
    raise SettingsError(
        "DATABASE_URL must start with postgres://, postgresql:// or postgresql+psycopg://"
    )


@dataclass(frozen=True)
class Settings:
    """Everything the service can be told through its environment."""

    stripe_webhook_secrets: tuple[str, ...]
    database_url: str | None = None
    stripe_webhook_tolerance: int = 300
    stripe_api_key: str | None = None
    stripe_api_base: str | None = None
    plan_price_map: Mapping[str, str] = field(default_factory=dict)
    ops_token: str | None = None
    secret_key: str | None = None
    max_webhook_bytes: int = DEFAULT_MAX_WEBHOOK_BYTES
    stripe_livemode: bool | None = None
    log_level: str = "INFO"
    # How long a webhook may wait on the database before it answers 503 so Stripe retries.
    database_timeout: float = 5.0
    # Connections each process keeps open; gunicorn sync workers need one each.
    database_pool_size: int = 5
    # The worker: retries of failed events with exponential backoff, then `dead`.
    worker_max_attempts: int = 8
    worker_backoff_seconds: float = 30.0
    worker_poll_seconds: float = 2.0
    # /health: the database check's time box and how long one result is shared.
    health_db_timeout: float = 1.0
    health_cache_seconds: float = 2.0
    health_backlog_warn: int = 100
    health_oldest_warn_seconds: float = 900.0
    health_last_received_warn_seconds: float = 0.0
    release_id: str | None = None

    @property
    def livemode(self) -> bool | None:
        """The mode events must be in; `None` accepts both."""
        if self.stripe_livemode is not None:
            return self.stripe_livemode
        if self.stripe_api_key:
            if self.stripe_api_key.startswith(("sk_live_", "rk_live_")):
                return True
            if self.stripe_api_key.startswith(("sk_test_", "rk_test_")):
                return False
        return None

    def replace(self, **changes: object) -> Settings:
        """A copy with some settings changed (tests and CLI overrides)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(name)
            return value if value not in (None, "") else None

        secrets_raw = get("STRIPE_WEBHOOK_SECRET")
        if secrets_raw is None:
            raise SettingsError(
                "STRIPE_WEBHOOK_SECRET is not set: give the signing secret (whsec_...) of "
                "the Stripe webhook endpoint, or several separated by commas while rotating"
            )
        secrets = tuple(s.strip() for s in secrets_raw.split(",") if s.strip())
        if not secrets:
            raise SettingsError("STRIPE_WEBHOOK_SECRET holds no secret")

        database_url = get("DATABASE_URL")
        values: dict[str, object] = {
            "stripe_webhook_secrets": secrets,
            "database_url": normalize_database_url(database_url) if database_url else None,
            "stripe_api_key": get("STRIPE_API_KEY"),
            "stripe_api_base": get("STRIPE_API_BASE"),
            "ops_token": get("OPS_TOKEN"),
            "secret_key": get("SECRET_KEY"),
            "release_id": get("RELEASE_ID"),
        }
        if (raw := get("PLAN_PRICE_MAP")) is not None:
            values["plan_price_map"] = parse_plan_price_map(raw)
        if (raw := get("STRIPE_LIVEMODE")) is not None:
            values["stripe_livemode"] = _parse_bool("STRIPE_LIVEMODE", raw)
        if (raw := get("LOG_LEVEL")) is not None:
            level = raw.upper()
            if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
                raise SettingsError(f"LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {raw!r}")
            values["log_level"] = level
        int_settings = {
            "STRIPE_WEBHOOK_TOLERANCE": ("stripe_webhook_tolerance", 1),
            "MAX_WEBHOOK_BYTES": ("max_webhook_bytes", 1),
            "DATABASE_POOL_SIZE": ("database_pool_size", 1),
            "WORKER_MAX_ATTEMPTS": ("worker_max_attempts", 1),
            "HEALTH_BACKLOG_WARN": ("health_backlog_warn", 1),
        }
        for name, (attr, minimum) in int_settings.items():
            if (raw := get(name)) is not None:
                values[attr] = _parse_int(name, raw, minimum=minimum)
        float_settings = {
            "DATABASE_TIMEOUT": "database_timeout",
            "WORKER_BACKOFF_SECONDS": "worker_backoff_seconds",
            "WORKER_POLL_SECONDS": "worker_poll_seconds",
            "HEALTH_DB_TIMEOUT": "health_db_timeout",
            "HEALTH_CACHE_SECONDS": "health_cache_seconds",
            "HEALTH_OLDEST_WARN_SECONDS": "health_oldest_warn_seconds",
            "HEALTH_LAST_RECEIVED_WARN_SECONDS": "health_last_received_warn_seconds",
        }
        # A zero timeout would mean "no timeout" to PostgreSQL, or a loop that never waits.
        positive = {"DATABASE_TIMEOUT", "WORKER_POLL_SECONDS", "HEALTH_DB_TIMEOUT"}
        for name, attr in float_settings.items():
            if (raw := get(name)) is not None:
                values[attr] = _parse_float(name, raw, positive=name in positive)
        return cls(**values)  # type: ignore[arg-type]
