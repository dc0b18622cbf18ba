"""The embedded default: no DSN → a private PostgreSQL on a Unix socket, started and stopped."""

import os
import subprocess
import sys
from pathlib import Path

import psycopg


def test_cli_without_dsn_runs_on_the_embedded_server(tmp_path: Path) -> None:
    data = tmp_path / "pgdata"
    config = tmp_path / "meterline.toml"
    config.write_text(f'[database]\nembedded_data_dir = "{data}"\n', encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("METERLINE")}
    env["METERLINE_CONFIG"] = str(config)
    run = lambda *args: subprocess.run([sys.executable, "-m", "meterline", *args], env=env, cwd=tmp_path,  # noqa: E731
                                       capture_output=True, text=True, timeout=180)
    first = run("db", "migrate")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "embedded PostgreSQL" in first.stdout and "socket" in first.stdout
    assert (data / "PG_VERSION").exists()
    second = run("db", "migrate")
    assert second.returncode == 0 and "nothing to apply" in second.stdout
    added = run("company", "add", "demo", "演示水务")
    assert added.returncode == 0, added.stdout + added.stderr
    # the server was stopped when the command exited: nothing listens on its socket any more
    sockets = list(data.glob(".s.PGSQL.*")) + list(Path(tmp_path).rglob(".s.PGSQL.*"))
    for sock in sockets:
        try:
            psycopg.connect(f"host={sock.parent} port={sock.name.rsplit('.', 1)[1]} dbname=postgres user=postgres",
                            connect_timeout=2).close()
            alive = True
        except psycopg.OperationalError:
            alive = False
        assert not alive, f"embedded server still running at {sock}"
