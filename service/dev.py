"""`make run`: a development server in one command.

Fills in development settings (a webhook secret, the embedded PostgreSQL when
DATABASE_URL is unset), migrates, prints where everything is, then serves with gunicorn.
Never used in production, where the Procfile runs gunicorn with real settings.
"""

from __future__ import annotations

import os

DEV_WEBHOOK_SECRET = "whsec_development_only_not_for_production"  # noqa: S105
DEV_OPS_TOKEN = "ops-development-token"  # noqa: S105


def main() -> None:
    os.environ.setdefault("STRIPE_WEBHOOK_SECRET", DEV_WEBHOOK_SECRET)
    os.environ.setdefault("OPS_TOKEN", DEV_OPS_TOKEN)
    os.environ.setdefault("SECRET_KEY", "development-only-session-key")
    if not os.environ.get("DATABASE_URL"):
        from .embedded_db import embedded_server_url

        os.environ["DATABASE_URL"] = embedded_server_url()
        database = "embedded PostgreSQL under ./var/postgres"
    else:
        database = "DATABASE_URL"

    from sqlalchemy import create_engine

    from .config import Settings
    from .migrate import upgrade

    settings = Settings.from_env()
    assert settings.database_url is not None
    engine = create_engine(settings.database_url)
    upgrade(engine)
    engine.dispose()

    bind = os.environ.get("BIND", "127.0.0.1:8000")
    base = f"http://{bind}"
    secret = os.environ["STRIPE_WEBHOOK_SECRET"]
    print(
        f"""
Billing-webhook receiver (development)
  database          {database} (migrated)
  Stripe webhooks   POST {base}/webhooks/stripe
  health            {base}/health   {base}/health/live
  ops page          {base}/ops      (token: {os.environ["OPS_TOKEN"]})
  metrics           {base}/metrics
  webhook secret    {secret}

Send a signed test event from another terminal:
  STRIPE_WEBHOOK_SECRET={secret} .venv/bin/webhooks stripe send-test-event \\
      customer.subscription.updated --url {base}/webhooks/stripe
""",
        flush=True,
    )
    from .cli import gunicorn_argv

    args = gunicorn_argv(bind)
    os.execv(args[0], args)


if __name__ == "__main__":
    main()
