"""`webhooks` and `flask --app service` are one CLI: the same commands through both."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import TEST_SECRET

BIN = Path(sys.executable).parent
COMMANDS = ("serve", "db", "worker", "accounts", "events", "quota", "stripe")


@pytest.mark.parametrize(
    "argv",
    [[str(BIN / "webhooks")], [str(BIN / "flask"), "--app", "service"]],
    ids=["webhooks", "flask"],
)
def test_both_entry_points_list_every_command(argv, database_url):
    env = {**os.environ, "STRIPE_WEBHOOK_SECRET": TEST_SECRET, "DATABASE_URL": database_url}
    result = subprocess.run(
        [*argv, "--help"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    listed = {line.split()[0] for line in result.stdout.splitlines() if line.startswith("  ")}
    assert set(COMMANDS) <= listed, result.stdout


def test_a_missing_secret_is_named_instead_of_a_traceback(database_url):
    env = {k: v for k, v in os.environ.items() if k != "STRIPE_WEBHOOK_SECRET"}
    env["DATABASE_URL"] = database_url
    result = subprocess.run(
        [str(BIN / "webhooks"), "db", "upgrade"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "STRIPE_WEBHOOK_SECRET" in result.stderr
    assert "Traceback" not in result.stderr
