"""A private PostgreSQL on this machine, for the dev cluster and the cluster benchmark.

It lives in ``var/cluster/pg`` (a free port, its socket beside it). PostgreSQL refuses to run as root, so as
root its commands run as the ``postgres`` user, and its files go to a folder of its own under /tmp (named after
the var dir), because that user cannot enter the private ``var/``.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shlex
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from lookloop.store.db import Database
from lookloop.store.files import private_dir

NOT_INSTALLED = ("PostgreSQL is not installed (no initdb under /usr/lib/postgresql/*/bin nor on PATH): "
                 "install it with scripts/apt-ensure.sh postgresql (Debian/Ubuntu: apt-get install postgresql)")


def postgres_bin() -> Path | None:
    """The newest PostgreSQL's bin folder (Debian layout first, then PATH)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: [int(x) if x.isdigit() else 0 for x in Path(p).parent.parent.name.split(".")])
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


def free_port() -> int:
    """A TCP port free on the loopback interface now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_postgres(cmd: list[str], as_postgres: bool) -> list[str]:
    return ["su", "postgres", "-s", "/bin/sh", "-c", shlex.join(cmd)] if as_postgres else cmd


def cluster_dir(var_dir: Path) -> Path:
    """``var/cluster``: the dev cluster's state, logs and (not as root) its database files."""
    return private_dir(var_dir / "cluster")


def _pg_dirs(var_dir: Path, as_postgres: bool) -> tuple[Path, Path]:
    """(data folder, socket folder)."""
    if not as_postgres:
        base = cluster_dir(var_dir)
        return base / "pg", base / "run"
    tag = hashlib.sha256(str(var_dir).encode()).hexdigest()[:10]
    base = Path(f"/tmp/lookloop-cluster-{tag}")
    base.mkdir(mode=0o700, exist_ok=True)
    shutil.chown(base, "postgres", "postgres")
    return base / "pg", base / "run"


@dataclass(frozen=True)
class LocalPostgres:
    """A started local PostgreSQL: where it keeps its files, its port and the URL of the ``lookloop`` database."""

    pg_bin: Path
    data: Path
    port: int
    url: str
    as_postgres: bool

    @classmethod
    def start(cls, var_dir: Path, pg_bin: Path, *, database: str = "lookloop") -> LocalPostgres:
        """Initialises (once) and starts it; creates ``database`` when missing."""
        as_postgres = os.geteuid() == 0
        data, run = _pg_dirs(var_dir, as_postgres)
        for d in (data, run):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
            if as_postgres:
                shutil.chown(d, "postgres", "postgres")
        if not (data / "PG_VERSION").is_file():
            subprocess.run(_as_postgres([str(pg_bin / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
                                         "-E", "UTF8"], as_postgres), check=True, capture_output=True)
        port = free_port()
        opts = f"-p {port} -k {run} -c listen_addresses=127.0.0.1"
        subprocess.run(_as_postgres([str(pg_bin / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(data / "log"),
                                     "-w", "start"], as_postgres), check=True, capture_output=True)
        admin = Database(f"postgresql://postgres@127.0.0.1:{port}/postgres")
        try:
            with admin.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                exists = conn.exec_driver_sql("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).first()
                if not exists:
                    conn.exec_driver_sql(f'CREATE DATABASE "{database}"')
        finally:
            admin.dispose()
        return cls(pg_bin, data, port, f"postgresql://postgres@127.0.0.1:{port}/{database}", as_postgres)

    def stop(self) -> None:
        stop_postgres(self.pg_bin, self.data, self.as_postgres)


def stop_postgres(pg_bin: Path, data: Path, as_postgres: bool) -> None:
    """A fast shutdown (open sessions are ended); quiet when it is not running."""
    subprocess.run(_as_postgres([str(pg_bin / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                                as_postgres), capture_output=True)
