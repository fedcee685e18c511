"""A throwaway PostgreSQL cluster for the tests: Debian's server binaries, started for real.

`initdb` + `pg_ctl` on a temp directory, listening on 127.0.0.1 and a free port, its unix
socket in that directory, stopped and removed afterwards. initdb refuses to run as root, so as
root the server runs as the `postgres` user (the Debian package creates it). The superuser has a
password and TCP logins need it (scram-sha-256), so the tests see how the bridge finds one.

`require_postgres()` turns a missing PostgreSQL into a skip locally and a failure in CI
(`.ci/run` installs the `postgresql` package).
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest

ADMIN = "bridge_admin"


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def server_bin() -> Path | None:
    """The newest installed PostgreSQL's bin directory (PG_BIN overrides)."""
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                   key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit()
                   else 0)
    return found[-1].parent if found else None


def postgres_problem() -> str | None:
    """Why a throwaway cluster cannot be started here, or None when it can."""
    bin_dir = server_bin()
    if bin_dir is None or not (bin_dir / "initdb").exists():
        return "PostgreSQL's server is not installed (apt-get install postgresql)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root, and there is no postgres user to run the server as"
    return None


def require_postgres() -> None:
    """Skip the calling test without PostgreSQL, but fail it when CI is set: a skipped
    PostgreSQL pass would look green while testing nothing."""
    problem = postgres_problem()
    if problem is None:
        return
    if _in_ci():
        pytest.fail(f"CI is set but PostgreSQL is unusable: {problem}", pytrace=False)
    pytest.skip(problem)


def _free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresCluster:
    """One running throwaway cluster; `database()` gives each test a fresh database."""

    def __init__(self) -> None:
        bin_dir = server_bin()
        assert bin_dir is not None
        self._bin = bin_dir
        self.base = Path(tempfile.mkdtemp(prefix="bridge-pg-"))
        self.data = self.base / "data"
        self.port = _free_tcp_port()
        self.password = "pg-" + secrets.token_hex(8)
        self._as_user: list[str] = []
        self._count = 0

    def _run(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self._as_user, *args], check=True, capture_output=True,
                              text=True, timeout=60, **kwargs)

    def start(self) -> None:
        if os.geteuid() == 0:
            # initdb refuses root: the server's files belong to the postgres user.
            entry = pwd.getpwnam("postgres")
            os.chown(self.base, entry.pw_uid, entry.pw_gid)
            self._as_user = ["runuser", "-u", "postgres", "--"]
        pwfile = self.base / "pw"
        pwfile.write_text(self.password + "\n")
        if self._as_user:
            os.chown(pwfile, pwd.getpwnam("postgres").pw_uid, -1)
        pwfile.chmod(0o600)
        self._run(str(self._bin / "initdb"), "-D", str(self.data), "-U", ADMIN,
                  f"--pwfile={pwfile}", "--auth-local=trust", "--auth-host=scram-sha-256",
                  "-E", "UTF8", "--no-locale", "--no-sync")
        pwfile.unlink()
        # fsync off: commits are cheap; the tests kill bridges, and stop this server only cleanly.
        self._options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.base}"
                         " -c fsync=off -c full_page_writes=off -c max_connections=200")
        self.resume()

    def pause(self) -> None:
        """Stop the server, keeping its data (a database restart, with `resume`)."""
        self._run(str(self._bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def resume(self) -> None:
        """Start the server (again) on the same port and data."""
        options = self._options
        try:
            self._run(str(self._bin / "pg_ctl"), "-D", str(self.data), "-o", options, "-w",
                      "-t", "30", "-l", str(self.base / "server.log"), "start")
        except subprocess.CalledProcessError as exc:
            log = (self.base / "server.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"PostgreSQL did not start: {exc.stderr}\n{log}") from exc

    def stop(self) -> None:
        try:
            self._run(str(self._bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                      "stop")
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            pass
        shutil.rmtree(self.base, ignore_errors=True)

    def url(self, dbname: str = "postgres", *, user: str = ADMIN,
            password: str | None = None, with_password: bool = True) -> str:
        """postgresql://user:password@127.0.0.1:port/dbname (the password only if asked)."""
        secret = self.password if password is None else password
        auth = (f"{user}:{urllib.parse.quote(secret, safe='')}" if with_password else user)
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{dbname}"

    def execute(self, dbname: str, statements: str | Sequence[str],
                params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run SQL as the superuser, outside the bridge; the last statement's rows."""
        if isinstance(statements, str):
            statements = [statements]
        rows: list[tuple[Any, ...]] = []
        with psycopg.connect(self.url(dbname), autocommit=True) as conn:
            for statement in statements:
                cursor = conn.execute(statement, params or None)
                rows = cursor.fetchall() if cursor.description else []
        return rows

    def database(self) -> str:
        """A new empty database; its name."""
        self._count += 1
        name = f"t{self._count}_{secrets.token_hex(3)}"
        self.execute("postgres", f"CREATE DATABASE {name}")
        return name

    def fingerprint(self, dbname: str) -> str:
        """Every table, column and row of the public schema, as text: equal means untouched."""
        parts: list[str] = []
        tables = self.execute(dbname, "SELECT table_name FROM information_schema.tables"
                                      " WHERE table_schema='public' ORDER BY table_name")
        for (table,) in tables:
            columns = self.execute(dbname, "SELECT column_name, data_type FROM"
                                           " information_schema.columns WHERE table_name=%s"
                                           " ORDER BY ordinal_position", (table,))
            rows = self.execute(dbname, f'SELECT * FROM "{table}" ORDER BY 1')
            parts.append(f"{table} {columns} {rows}")
        return "\n".join(parts)
