"""Billing-webhook receiver: Stripe events in, plan tiers and API quotas out.

`create_app()` is the WSGI application factory (`gunicorn 'service:create_app()'`) and
reads like a table of contents of the service.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Flask

from .config import Settings

if TYPE_CHECKING:
    from .stripe_api import StripeApi


def create_app(settings: Settings | None = None) -> Flask:
    """Build the application from `settings`, or from the environment when none is given."""
    from . import health, metrics
    from .cli import register_cli
    from .db import make_engine
    from .errors import register_error_handlers
    from .logging_setup import configure_logging
    from .ops import register_ops
    from .stripe_webhooks import views as stripe_webhooks
    from .stripe_webhooks.processing import ProcessingContext

    settings = settings or Settings.from_env()
    configure_logging(settings.log_level)

    app = Flask(__name__)
    app.config["SETTINGS"] = settings
    app.config["MAX_CONTENT_LENGTH"] = settings.max_webhook_bytes
    app.config["SECRET_KEY"] = settings.secret_key

    database_url = settings.database_url or _embedded_database_url()
    app.extensions["engine"] = make_engine(database_url, settings)
    app.extensions["processing_context"] = ProcessingContext(
        settings=settings, stripe_api=_stripe_api(settings)
    )

    register_error_handlers(app)
    app.register_blueprint(stripe_webhooks.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(metrics.bp)
    register_ops(app)
    register_cli(app)
    return app


def _stripe_api(settings: Settings) -> StripeApi | None:
    """The Stripe API client when `STRIPE_API_KEY` is set; without a key nothing calls Stripe.

    Handlers call it inside a webhook's transaction, under the customer's lock, while
    Stripe waits for the answer: a short budget (about 3 s of backoff, 5 s per request)
    fails the event instead, and the worker retries it later with the full backoff.
    """
    from .stripe_api import StripeApi

    if not settings.stripe_api_key:
        return None
    return StripeApi(
        settings.stripe_api_key,
        api_base=settings.stripe_api_base,
        max_retries=2,
        max_delay=2.0,
        timeout=5.0,
    )


def _embedded_database_url() -> str:
    from .embedded_db import embedded_server_url

    return embedded_server_url()
