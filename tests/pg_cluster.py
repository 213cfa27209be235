"""A throwaway PostgreSQL cluster for tests: initdb + pg_ctl on a temporary directory and a free
loopback port, trust authentication (or, with `host_auth`, passwords over TCP and trust on its own
Unix socket), stopped and removed afterwards.

Uses Debian's server binaries (/usr/lib/postgresql/*/bin; CI: apt-get install postgresql).
PostgreSQL refuses to run as root, so as root the cluster runs as the `postgres` user
(via runuser) in a directory that user owns.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

START_TIMEOUT_S = 60


def server_bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Cluster:
    """A running throwaway cluster: its URL, and stop/start for tests of a database that goes away."""

    url: str
    bindir: Path
    data: Path
    log: Path
    options: str
    prefix: list[str]
    port: int
    socket_dir: Path
    """Where the server's Unix socket is (trust authentication there, whatever `host_auth`)."""
    superuser: str

    @property
    def socket_url(self) -> str:
        """The database as the superuser over the Unix socket: libpq's `host=DIRECTORY` in the URL."""
        return f"postgresql://{self.superuser}@/serd?host={self.socket_dir}&port={self.port}"

    def client(self, program: str, *args: str, input_text: str | None = None) -> subprocess.CompletedProcess:
        """A client program of the server's (psql, createuser, ...) run as the superuser's system user
        (as `sudo -u postgres PROGRAM` on a Pi), aimed at this cluster by PGHOST/PGPORT."""
        env = dict(os.environ, PGHOST=str(self.socket_dir), PGPORT=str(self.port))
        return subprocess.run([*self.prefix, str(self.bindir / program), *args], capture_output=True, text=True,
                              input=input_text, env=env, timeout=START_TIMEOUT_S, check=False)

    def stop(self, mode: str = "fast") -> None:
        subprocess.run([*self.prefix, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"],
                       check=True, capture_output=True, timeout=START_TIMEOUT_S)

    def start(self) -> None:
        subprocess.run([*self.prefix, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o",
                        self.options, "-w", "-t", str(START_TIMEOUT_S), "start"], check=True, capture_output=True,
                       timeout=START_TIMEOUT_S + 10)


@contextmanager
def throwaway_cluster(host_auth: str = "trust") -> Iterator[Cluster]:
    """Yields a fresh database (`.url`, postgresql://) on a cluster that exists only inside the block.
    `host_auth`: how TCP connections authenticate (e.g. scram-sha-256: a role needs a password)."""
    bindir = server_bin_dir()
    if bindir is None:
        raise FileNotFoundError("PostgreSQL server binaries not found (apt-get install postgresql)")
    as_root = os.geteuid() == 0
    base = Path(tempfile.mkdtemp(prefix="serd-pg-"))
    data = base / "data"
    prefix: list[str] = []
    user = pwd.getpwuid(os.geteuid()).pw_name
    if as_root:
        user = "postgres"
        pw = pwd.getpwnam(user)
        os.chown(base, pw.pw_uid, pw.pw_gid)
        prefix = ["runuser", "-u", user, "--"]
    port = _free_port()
    try:
        subprocess.run([*prefix, str(bindir / "initdb"), "-D", str(data), "-U", user, "--auth-local=trust",
                        f"--auth-host={host_auth}", "-E", "UTF8", "--no-sync"], check=True, capture_output=True,
                       timeout=START_TIMEOUT_S)
        # Loopback TCP only; the Unix socket in our own directory (not /var/run/postgresql).
        cluster = Cluster(f"postgresql://{user}@127.0.0.1:{port}/serd", bindir, data, base / "server.log",
                          f"-c listen_addresses=127.0.0.1 -p {port} -k {base} -c fsync=off", prefix, port, base,
                          user)
        cluster.start()
        try:
            subprocess.run([*prefix, str(bindir / "createdb"), "-h", str(base), "-p", str(port), "-U", user,
                            "serd"], check=True, capture_output=True, timeout=START_TIMEOUT_S)
            yield cluster
        finally:
            subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                           capture_output=True, timeout=START_TIMEOUT_S)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def reset_database(url: str) -> None:
    """Drop every serd table, so each test starts from an empty database on the shared cluster."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")
