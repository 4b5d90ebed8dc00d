"""The database watchdog ends calls a silent server never answers, and nothing else."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from service.db import make_engine

from .tcp_proxy import TcpProxy

pytestmark = pytest.mark.slow


@pytest.fixture
def fast_settings(settings):
    return settings.replace(database_timeout=1.0)


def test_an_idle_checked_out_connection_is_left_alone(database_url, fast_settings):
    engine = make_engine(database_url, fast_settings)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
            time.sleep(2.5)  # idle in transaction, past the deadline: nothing in progress
            assert connection.execute(text("SELECT 2")).scalar_one() == 2
            connection.commit()
            time.sleep(2.5)  # idle after a commit
            assert connection.execute(text("SELECT 3")).scalar_one() == 3
    finally:
        engine.dispose()


def test_a_slow_statement_is_ended_by_the_server_not_the_watchdog(database_url, fast_settings):
    engine = make_engine(database_url, fast_settings)
    try:
        with engine.connect() as connection:
            assert connection.execute(text("SELECT pg_sleep(0.5), 1")).one()[1] == 1
            with pytest.raises(OperationalError, match="statement timeout"):
                connection.execute(text("SELECT pg_sleep(5)"))
    finally:
        engine.dispose()


def test_a_call_to_a_silent_server_is_ended(database_url, fast_settings):
    proxy = TcpProxy(database_url)
    engine = make_engine(proxy.url_for(database_url), fast_settings)
    outcome: list[BaseException | str] = []

    def query() -> None:
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
                proxy.set_mode("blackhole")
                connection.execute(text("SELECT 2"))
                outcome.append("answered")
        except BaseException as exc:
            outcome.append(exc)

    try:
        thread = threading.Thread(target=query, daemon=True)
        thread.start()
        thread.join(15)  # a bound so a regression fails instead of hanging the suite
        assert outcome, "the call hung"
        assert isinstance(outcome[0], OperationalError)
        assert outcome[0].connection_invalidated
        proxy.set_mode("forward")
        with engine.connect() as connection:  # a fresh connection works again
            assert connection.execute(text("SELECT 4")).scalar_one() == 4
    finally:
        proxy.close()
        engine.dispose()
