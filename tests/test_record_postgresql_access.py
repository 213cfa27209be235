"""docs/history.md, PostgreSQL, run against a real server: the documented roles and GRANTs (the
dashboard's role reads the history and cannot change it, also tables created after the GRANTs),
and a password kept out of the URL (a libpq password file named by `?passfile=` or `PGPASSFILE`,
`~/.pgpass`, a service file with `?service=`), each through `python -m serd` subprocesses.

The cluster asks for a password over TCP (scram-sha-256, as a server elsewhere or Debian's
`host` lines for localhost would) and trusts its own Unix socket (where a Pi's server uses `peer`).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from helpers_daemon import DaemonProcess, run_serd, serd_env, serd_lines
from helpers_record import _need_postgresql, emotion
from helpers_service import get_json
from pg_cluster import Cluster, throwaway_cluster
from serd.messages import encode
from serd.record.recorder import Recorder
from serd.record.store import describe_url, open_store
from serd.record.writer import WriterSettings
from serd.record.writes import write_batch
from test_systemd_record_unit import assert_verify_is_clean, needs_systemd_analyze

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCS = (REPO_ROOT / "docs" / "history.md").read_text(encoding="utf-8")
PASSWORDS = {"serd": "recorder-pw-1", "serd_dashboard": "dashboard-pw-2"}
ROOM = "room-pg"
WINDOWS = 20
DASHBOARD_START_S = 60.0


def documented(pattern: str) -> list[str]:
    """Every line of docs/history.md that matches `pattern` (a regex), stripped of its comment."""
    found = [re.sub(r"\s+#.*$", "", line).strip() for line in DOCS.splitlines() if re.match(pattern, line)]
    assert found, f"docs/history.md has no line matching {pattern!r}"
    return found


def documented_sql() -> str:
    match = re.search(r"<<'SQL'\n(.*?)\nSQL\n", DOCS, re.S)
    assert match and "ALTER DEFAULT PRIVILEGES" in match.group(1), "docs/history.md: the GRANTs moved"
    return match.group(1)


@pytest.fixture
def cluster():
    _need_postgresql()
    with throwaway_cluster(host_auth="scram-sha-256") as running:
        yield running


def set_up_as_documented(cluster: Cluster) -> None:
    """The docs' createuser/createdb lines, run as the superuser's system user as `sudo -u postgres`
    would (the fixture's own database `serd` is dropped first: the docs create it). `--pwprompt`
    asks on a terminal, so the passwords are set with psql instead (serd's too: this server asks
    for one over TCP, as a server elsewhere does)."""
    assert cluster.client("dropdb", "serd").returncode == 0
    lines = documented(r"^sudo -u postgres create(user|db) ")
    assert lines == ["sudo -u postgres createuser serd", "sudo -u postgres createdb --owner=serd serd",
                     "sudo -u postgres createuser --pwprompt serd_dashboard"], lines
    for line in lines:
        argv = [a for a in line.removeprefix("sudo -u postgres ").split() if a != "--pwprompt"]
        done = cluster.client(*argv)
        assert done.returncode == 0, (line, done.stderr)
    for role, password in PASSWORDS.items():
        done = cluster.client("psql", "-v", "ON_ERROR_STOP=1", "-c", f"ALTER ROLE {role} PASSWORD '{password}'",
                              "postgres")
        assert done.returncode == 0, done.stderr


def grant_as_documented(cluster: Cluster) -> None:
    line = documented(r"^sudo -u postgres psql ")[0]
    argv = line.removeprefix("sudo -u postgres ").replace(" <<'SQL'", "").split()
    done = cluster.client(*argv, "-v", "ON_ERROR_STOP=1", input_text=documented_sql())
    assert done.returncode == 0, done.stderr


def passfile(path: Path, *lines: str) -> Path:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    path.chmod(0o600)  # libpq ignores a password file that group or others can read
    return path


def tcp_url(cluster: Cluster, role: str, query: str = "") -> str:
    return f"postgresql://{role}@127.0.0.1:{cluster.port}/serd{query}"


def record_windows(url: str) -> None:
    """What serd record does on start (create the tables: a migration) and with a message, in-process."""
    store = open_store(url, create=True)
    try:
        store.migrate()
        recorder = Recorder(store, ["tcp://127.0.0.1:1"], WriterSettings())
        t0 = time.time() - 3600
        for i in range(WINDOWS):
            recorder.handle(encode(emotion(ROOM, i, t0 + i)))
        write_batch(store, recorder.writer._take())
    finally:
        store.close()


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """No password from the test machine's own libpq settings: a HOME of the test's, no PG* variables."""
    env = {k: v for k, v in serd_env().items() if not k.startswith("PG")}
    env.update(HOME=str(home), **extra)
    return env


def history_rows(done) -> int:
    assert done.returncode == 0, done.stderr
    return done.stdout.count(f"{ROOM} ")


@pytest.mark.parametrize("grants_first", [True, False], ids=["grants-then-tables", "tables-then-grants"])
def test_the_documented_dashboard_role_reads_the_history_and_cannot_change_it(cluster, tmp_path, grants_first):
    set_up_as_documented(cluster)
    recorder_pass = passfile(tmp_path / "recorder.pgpass", f"127.0.0.1:{cluster.port}:serd:serd:{PASSWORDS['serd']}")
    recorder_url = tcp_url(cluster, "serd", f"?passfile={recorder_pass}")
    if grants_first:  # ALTER DEFAULT PRIVILEGES: tables the recorder creates later are readable
        grant_as_documented(cluster)
        record_windows(recorder_url)
    else:  # GRANT SELECT ON ALL TABLES: tables already there are readable
        record_windows(recorder_url)
        grant_as_documented(cluster)

    home = tmp_path / "home"
    home.mkdir()
    # As documented: ~/.pgpass for localhost, and the documented URL (PGPORT: the cluster's port).
    passfile(home / ".pgpass", f"localhost:{cluster.port}:serd:serd_dashboard:{PASSWORDS['serd_dashboard']}")
    (dashboard_url,) = (line.split("--db ", 1)[1] for line in documented(r"^serd dashboard --db postgresql://"))
    assert dashboard_url == "postgresql://serd_dashboard@localhost/serd"
    env = clean_env(home, PGPORT=str(cluster.port))

    assert history_rows(run_serd(["history", "--db", dashboard_url, "--since", "7d"], cwd=tmp_path, env=env)) == WINDOWS
    done = run_serd(["history", "--db", dashboard_url, "--delete", ROOM, "--before", "now", "--yes"], cwd=tmp_path,
                    env=env, input=b"")
    assert done.returncode == 1 and "permission denied" in done.stderr, done.stderr
    assert history_rows(run_serd(["history", "--db", recorder_url, "--since", "7d"], cwd=tmp_path,
                                 env=clean_env(home))) == WINDOWS

    import psycopg
    with psycopg.connect(f"{dashboard_url}?passfile={home / '.pgpass'}&port={cluster.port}", autocommit=True) as conn:
        for statement in ("INSERT INTO meta (key, value) VALUES ('x', 'y')", "DELETE FROM windows",
                          "DROP TABLE windows", "CREATE TABLE public.mine (x int)"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)

    dashboard = DaemonProcess(["dashboard", "--db", dashboard_url, "--connect", f"ipc://{tmp_path}/none",
                               "--listen", "127.0.0.1:0"], cwd=tmp_path, env=env)
    try:
        deadline = time.monotonic() + DASHBOARD_START_S
        while not (match := re.search(r"serving on (http://\S+/)", dashboard.stderr_text())):
            assert dashboard.poll() is None and time.monotonic() < deadline, dashboard.stderr_text()
            time.sleep(0.1)
        status, rooms = get_json(match.group(1) + "api/history/rooms")
        assert status == 200 and [room["device"] for room in rooms["rooms"]] == [ROOM], rooms
    finally:
        dashboard.close()


def test_a_password_file_or_service_file_keeps_the_password_out_of_the_url(cluster, tmp_path):
    set_up_as_documented(cluster)
    home = tmp_path / "home"
    home.mkdir()
    pgpass = passfile(tmp_path / "pgpass", f"127.0.0.1:{cluster.port}:serd:serd:{PASSWORDS['serd']}")
    plain = tcp_url(cluster, "serd")
    history = ["history", "--since", "7d", "--db"]

    # No password anywhere: the server refuses, in one line, exit 1.
    done = run_serd([*history, plain], cwd=tmp_path, env=clean_env(home))
    assert done.returncode == 1 and len(serd_lines(done.stderr)) == 1 and "password" in done.stderr, done.stderr

    record_windows(f"{plain}?passfile={pgpass}")  # `serd record`'s own connection, by ?passfile=
    assert history_rows(run_serd([*history, f"{plain}?passfile={pgpass}"], cwd=tmp_path, env=clean_env(home))) \
        == WINDOWS
    assert history_rows(run_serd([*history, plain], cwd=tmp_path, env=clean_env(home, PGPASSFILE=str(pgpass)))) \
        == WINDOWS
    passfile(home / ".pgpass", f"127.0.0.1:{cluster.port}:serd:serd:{PASSWORDS['serd']}")
    assert history_rows(run_serd([*history, plain], cwd=tmp_path, env=clean_env(home))) == WINDOWS
    (home / ".pgpass").unlink()

    # The service file as documented, with this cluster's host and port.
    (block,) = re.findall(r"```ini\n(\[serd\]\n.*?)```", DOCS, re.S)
    service_file = tmp_path / "pg_service.conf"
    service_file.write_text(block.replace("host=dbhost", "host=127.0.0.1").replace("port=5432", f"port={cluster.port}")
                            .replace("passfile=/etc/serd/pgpass", f"passfile={pgpass}"), encoding="utf-8")
    assert "--db 'postgresql:///?service=serd'" in DOCS
    assert history_rows(run_serd([*history, "postgresql:///?service=serd"], cwd=tmp_path,
                                 env=clean_env(home, PGSERVICEFILE=str(service_file)))) == WINDOWS

    # ?host=DIRECTORY: the Unix socket (trusted here, as `peer` is for the serd user on a Pi).
    assert history_rows(run_serd([*history, cluster.socket_url], cwd=tmp_path, env=clean_env(home))) == WINDOWS


def test_a_password_in_the_url_is_never_printed():
    assert describe_url("postgresql://serd:hunter2@dbhost/serd") == "postgresql://serd:***@dbhost/serd"
    assert describe_url("postgresql://serd:hunter2@dbhost/serd?sslmode=require&passfile=/a@b") == (
        "postgresql://serd:***@dbhost/serd?sslmode=require&passfile=/a@b")
    assert describe_url("postgresql:///serd?host=/run/postgresql&password=hunter2&port=5433") == (
        "postgresql:///serd?host=/run/postgresql&password=***&port=5433")
    assert describe_url("postgresql:///?service=serd") == "postgresql:///?service=serd"


def test_a_refused_password_in_the_url_is_not_in_the_error(cluster, tmp_path):
    set_up_as_documented(cluster)
    done = run_serd(["history", "--db", tcp_url(cluster, "serd", "?password=wrong-hunter2")], cwd=tmp_path,
                    env=clean_env(tmp_path))
    assert done.returncode == 1 and "password=***" in done.stderr, done.stderr
    assert "hunter2" not in done.stderr


@needs_systemd_analyze
def test_the_documented_drop_in_verifies(tmp_path):
    """serd-record.service with the docs' drop-in (Wants=postgresql.service) appended: still clean."""
    (drop_in,) = re.findall(r"```ini\n(\[Unit\]\nWants=postgresql\.service\n)```", DOCS)
    unit = tmp_path / "unit" / "serd-record.service"
    unit.parent.mkdir()
    unit.write_text((REPO_ROOT / "systemd" / "serd-record.service").read_text(encoding="utf-8") + "\n" + drop_in,
                    encoding="utf-8")
    assert_verify_is_clean(tmp_path, unit)
    assert "postgresql.service" in next(line for line in unit.read_text().splitlines() if line.startswith("After="))
