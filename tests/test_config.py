"""Settings are read once, typed, and a bad or missing one stops start-up naming it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from service.config import (
    DEFAULT_MAX_WEBHOOK_BYTES,
    Settings,
    SettingsError,
    normalize_database_url,
)

BASE = {"STRIPE_WEBHOOK_SECRET": "whsec_config_test"}


def _from(**env: str) -> Settings:
    return Settings.from_env({**BASE, **env})


def test_the_defaults_are_the_documented_ones():
    settings = Settings.from_env(BASE)
    assert settings.stripe_webhook_secrets == ("whsec_config_test",)
    assert settings.database_url is None
    assert settings.stripe_webhook_tolerance == 300
    assert settings.max_webhook_bytes == DEFAULT_MAX_WEBHOOK_BYTES == 1024 * 1024
    assert settings.stripe_livemode is None
    assert settings.livemode is None
    assert settings.log_level == "INFO"
    assert settings.database_timeout == 5.0
    assert settings.plan_price_map == {}


@pytest.mark.parametrize("env", [{}, {"STRIPE_WEBHOOK_SECRET": ""}])
def test_a_missing_webhook_secret_stops_start_up_naming_it(env):
    with pytest.raises(SettingsError, match="STRIPE_WEBHOOK_SECRET"):
        Settings.from_env(env)


def test_a_webhook_secret_of_only_separators_is_refused():
    with pytest.raises(SettingsError, match="STRIPE_WEBHOOK_SECRET holds no secret"):
        Settings.from_env({"STRIPE_WEBHOOK_SECRET": " , ,"})


def test_several_secrets_are_read_for_rotation():
    settings = Settings.from_env({"STRIPE_WEBHOOK_SECRET": "whsec_new, whsec_old,"})
    assert settings.stripe_webhook_secrets == ("whsec_new", "whsec_old")


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("STRIPE_WEBHOOK_TOLERANCE", "five minutes"),
        ("STRIPE_WEBHOOK_TOLERANCE", "0"),
        ("STRIPE_WEBHOOK_TOLERANCE", "2.5"),
        ("MAX_WEBHOOK_BYTES", "1MB"),
        ("MAX_WEBHOOK_BYTES", "-1"),
        ("DATABASE_POOL_SIZE", "0"),
        ("WORKER_MAX_ATTEMPTS", "many"),
        ("DATABASE_TIMEOUT", "soon"),
        ("DATABASE_TIMEOUT", "0"),
        ("DATABASE_TIMEOUT", "-1"),
        ("DATABASE_TIMEOUT", "nan"),
        ("DATABASE_TIMEOUT", "inf"),
        ("WORKER_BACKOFF_SECONDS", "-5"),
        ("HEALTH_DB_TIMEOUT", "0"),
        ("STRIPE_LIVEMODE", "maybe"),
        ("LOG_LEVEL", "loud"),
        ("PLAN_PRICE_MAP", "price_abc"),
        ("DATABASE_URL", "mysql://user@host/db"),
    ],
)
def test_a_malformed_setting_is_refused_naming_it(name, raw):
    with pytest.raises(SettingsError, match=name):
        _from(**{name: raw})


def test_numbers_are_read():
    settings = _from(
        STRIPE_WEBHOOK_TOLERANCE="600",
        MAX_WEBHOOK_BYTES=" 2048 ",
        DATABASE_TIMEOUT="2.5",
        WORKER_BACKOFF_SECONDS="0",
    )
    assert settings.stripe_webhook_tolerance == 600
    assert settings.max_webhook_bytes == 2048
    assert settings.database_timeout == 2.5
    assert settings.worker_backoff_seconds == 0.0


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgres://u:p@db.example:5432/app", "postgresql+psycopg://u:p@db.example:5432/app"),
        ("postgresql://u@db/app?sslmode=require", "postgresql+psycopg://u@db/app?sslmode=require"),
        ("postgresql+psycopg://u@db/app", "postgresql+psycopg://u@db/app"),
    ],
)
def test_database_url_forms_are_normalised_to_psycopg(url, expected):
    assert normalize_database_url(url) == expected
    assert _from(DATABASE_URL=url).database_url == expected


def test_a_bad_database_url_is_refused_without_echoing_its_password():
    with pytest.raises(SettingsError) as caught:
        _from(DATABASE_URL="mysql://user:hunter2@host/db")
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    ("env", "livemode"),
    [
        ({"STRIPE_LIVEMODE": "true"}, True),
        ({"STRIPE_LIVEMODE": "false", "STRIPE_API_KEY": "sk_live_x"}, False),
        ({"STRIPE_API_KEY": "sk_live_x"}, True),
        ({"STRIPE_API_KEY": "rk_test_x"}, False),
        ({"STRIPE_API_KEY": "something_else"}, None),
    ],
)
def test_the_mode_comes_from_stripe_livemode_else_the_api_key(env, livemode):
    assert _from(**env).livemode is livemode


def test_plan_price_map_is_parsed():
    settings = _from(PLAN_PRICE_MAP="price_abc=pro, price_def=Scale,")
    assert dict(settings.plan_price_map) == {"price_abc": "pro", "price_def": "scale"}


# --- Start-up refuses to run without the secret ------------------------------------------


def _env_without_secret() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "STRIPE_WEBHOOK_SECRET"}
    # Any reachable-looking URL: start-up must fail on the secret before touching it.
    env["DATABASE_URL"] = "postgresql://nobody@127.0.0.1:1/none"
    return env


def test_the_webhooks_command_exits_naming_the_missing_secret():
    script = Path(sys.executable).with_name("webhooks")
    result = subprocess.run(
        [str(script), "db", "upgrade"],
        env=_env_without_secret(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "STRIPE_WEBHOOK_SECRET is not set" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_web_server_refuses_to_boot_without_the_secret():
    result = subprocess.run(
        [sys.executable, "-m", "gunicorn", "service:create_app()", "--bind", "127.0.0.1:0"],
        env=_env_without_secret(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "STRIPE_WEBHOOK_SECRET is not set" in result.stderr
