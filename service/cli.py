"""The `webhooks` command line, a Flask CLI.

Every command is registered on the application's own `app.cli` by `register_cli`, which
`create_app` calls, so `webhooks ...` and `flask --app service ...` offer the same commands.
"""

from __future__ import annotations

import os
import sys

import click
from flask import Flask, current_app
from flask.cli import FlaskGroup, NoAppException, with_appcontext

from . import create_app
from .config import SettingsError


def _make_app() -> Flask:
    try:
        return create_app()
    except SettingsError as exc:
        # NoAppException is a UsageError (exit status 2) that Flask also prints without a
        # traceback when `--help` loads the app to list its commands.
        raise NoAppException(str(exc)) from None


@click.group(cls=FlaskGroup, create_app=_make_app, add_default_commands=False)
def cli() -> None:
    """Receive Stripe billing webhooks and keep plans and API quotas in PostgreSQL."""


def gunicorn_argv(bind: str, workers: int | None = None) -> list[str]:
    """The command line that serves the application with this service's gunicorn settings."""
    args = [
        sys.executable,
        "-m",
        "gunicorn",
        "service:create_app()",
        "-c",
        "python:service.gunicorn_conf",
        "--bind",
        bind,
    ]
    if workers is not None:
        args += ["--workers", str(workers)]
    return args


@click.command("serve")
@click.option(
    "--bind",
    default=lambda: os.environ.get("BIND", "127.0.0.1:8000"),
    show_default="127.0.0.1:8000",
)
@click.option(
    "--workers",
    type=int,
    default=None,
    help="gunicorn workers (default: WEB_CONCURRENCY or 1 per core plus 1)",
)
def serve(bind: str, workers: int | None) -> None:
    """Serve the application with gunicorn."""
    args = gunicorn_argv(bind, workers)
    os.execv(args[0], args)


@click.group("db")
def db_group() -> None:
    """Database schema commands."""


@db_group.command("upgrade")
@click.argument("revision", default="head")
@with_appcontext
def db_upgrade(revision: str) -> None:
    """Migrate the schema to REVISION (default: head) under an advisory lock."""
    from .migrate import upgrade

    upgrade(current_app.extensions["engine"], revision)
    click.echo(f"database at {revision}")


@click.command("worker")
@click.option("--once", is_flag=True, help="Attempt the events due now, then exit.")
@click.option(
    "--batch",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Candidate events read per round.",
)
@with_appcontext
def worker(once: bool, batch: int) -> None:
    """Retry failed events (backoff, then dead) and apply pending ones whose customer is linked."""
    import threading

    from sqlalchemy.exc import SQLAlchemyError

    from .stripe_webhooks.worker import Worker, stop_on_signals, summary

    stop = threading.Event()
    runner = Worker(
        current_app.extensions["engine"],
        current_app.extensions["processing_context"],
        batch=batch,
        stop=stop,
    )
    with stop_on_signals(stop):
        if not once:
            runner.run()
            return
        try:
            result = runner.drain()
        except SQLAlchemyError as exc:
            raise click.ClickException(f"database unavailable: {type(exc).__name__}") from None
    click.echo(summary(result))


def register_cli(app: Flask) -> None:
    """Add every command to the application's CLI (`webhooks` and `flask --app service`)."""
    from .ops.commands import register_commands

    app.cli.add_command(serve)
    app.cli.add_command(db_group)
    app.cli.add_command(worker)
    register_commands(app.cli)


def main() -> None:
    """Entry point of the `webhooks` console script."""
    cli(prog_name="webhooks")
