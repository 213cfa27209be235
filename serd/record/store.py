"""One small interface over the two databases: SQLite (a file, stdlib `sqlite3`, WAL) and
PostgreSQL (psycopg 3, the optional extra `serd[postgres]`).

Everything above this module writes SQL once, with `?` placeholders, in the subset both
dialects share (ON CONFLICT upserts, integer division, BIGINT/DOUBLE PRECISION/BOOLEAN).
A `Store` turns driver errors into `StoreError`, which says whether waiting can help
(a locked file, a lost server connection) or not (a full disk, a read-only file).
"""

from __future__ import annotations

import abc
import logging
import os
import re
import sqlite3
import urllib.parse
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from serd.record.schema import MIGRATIONS, SCHEMA_VERSION

_LOGGER = logging.getLogger(__name__)

DB_FILE_NAME = "history.sqlite3"
SQLITE_BUSY_TIMEOUT_S = 5.0
SQLITE_INCREMENTAL = 2  # PRAGMA auto_vacuum's value for incremental
SQLITE_VACUUM_FREE_SHARE = 0.25  # a file without incremental auto-vacuum is rewritten once this share is free
"""A writer waits this long for another writer (e.g. `serd history --delete`) before giving up on a batch."""
PG_CONNECT_TIMEOUT_S = 10
STREAM_ROWS = 2000
"""Rows fetched at a time by `Store.stream`."""
PG_MIGRATION_LOCK = 0x5E7D
"""Advisory lock id: two recorders starting at once must not both migrate."""


class StoreError(RuntimeError):
    """A database failure, in one line. `transient`: retrying later may succeed; `refused`: the
    database would not take a value in a row (a constraint, a number out of its range), so the
    same statement without that row may succeed."""

    def __init__(self, message: str, transient: bool = False, refused: bool = False) -> None:
        super().__init__(message)
        self.transient = transient
        self.refused = refused


def default_state_dir() -> Path:
    """systemd's StateDirectory= (it sets $STATE_DIRECTORY), else the XDG state directory."""
    if os.environ.get("STATE_DIRECTORY"):
        return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "serd"


SERVICE_STATE_DIR = Path("/var/lib/serd-record")
"""The state directory of systemd/serd-record.service (`StateDirectory=serd-record`): its database."""
SERVICE_STATE_DIR_ENV = "SERD_SERVICE_STATE_DIR"
"""Internal, for the tests only: a stand-in for SERVICE_STATE_DIR (a test cannot write /var/lib)."""


def service_db_path() -> Path:
    """The database serd-record.service writes when its config sets no record.db."""
    return Path(os.environ.get(SERVICE_STATE_DIR_ENV) or SERVICE_STATE_DIR) / DB_FILE_NAME


def default_url() -> str:
    """The database `serd record` writes without --db / record.db: history.sqlite3 in the state directory."""
    return sqlite_url(default_state_dir() / DB_FILE_NAME)


def default_read_url() -> tuple[str, str | None]:
    """The database `serd history` reads without --db: the one `serd record` run by this user writes;
    when there is none, but serd-record.service's exists (a systemd install: its state directory is not
    the user's), that one. Returns (URL, None), or (URL, a line saying which file it is)."""
    own = default_state_dir() / DB_FILE_NAME
    service = service_db_path()
    if own == service or _exists(own) or not _exists(service):
        return sqlite_url(own), None
    return sqlite_url(service), (f"reading serd-record.service's {service} (there is none in {own.parent}; "
                                 "--db chooses another)")


def _exists(path: Path) -> bool:
    """Whether a file is there; False also when its directory is not readable by this user
    (the service's is the serd user's only: `sudo -u serd serd history` reads it)."""
    try:
        return path.is_file()
    except OSError:
        return False


_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&#]*")


def describe_url(url: str) -> str:
    """The URL without a password (after `user:` or in a `password=` parameter), for logs and errors.
    Every other parameter stays: libpq reads them (`?host=/run/postgresql`, `?passfile=`, `?service=`)."""
    url = _QUERY_PASSWORD.sub(r"\1***", url)
    if "://" in url and "@" in url.split("://", 1)[1].split("?", 1)[0]:
        scheme, rest = url.split("://", 1)
        authority, query = rest.split("?", 1) if "?" in rest else (rest, None)
        creds, host = authority.rsplit("@", 1)
        if ":" in creds:
            return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}" + ("" if query is None else f"?{query}")
    return url


SQLITE_SCHEME = "sqlite://"
SQLITE_FORMS = "sqlite:////ABSOLUTE/PATH or sqlite:///RELATIVE/PATH"


def sqlite_url(path: Path) -> str:
    """The `sqlite://` URL of a file (SQLAlchemy's convention: four slashes before an absolute path),
    with the characters a URL would misread (`%`, `?`, `#`) percent-escaped."""
    return SQLITE_SCHEME + "/" + urllib.parse.quote(str(path), safe="/")


def sqlite_path(url: str, cwd: Path | None = None) -> Path | None:
    """The file a `--db` value names, for `record`, `history` and the dashboard alike; None for
    other schemes. SQLAlchemy's convention: `sqlite:////abs/path.db` is absolute,
    `sqlite:///rel.db` is relative to the working directory; percent escapes are decoded (`%23`
    for a `#` in a file name); a bare path is taken as it is."""
    if not url.startswith(SQLITE_SCHEME):
        return None if "://" in url else _absolute(Path(url), cwd)
    rest = url[len(SQLITE_SCHEME):]
    if not rest.startswith("/"):
        raise StoreError(f"{url}: a sqlite URL has no host; expected {SQLITE_FORMS}")
    rest = rest[1:]
    for char, escape in (("?", "%3F"), ("#", "%23")):
        if char in rest:
            raise StoreError(f"{url}: {char!r} is not part of a sqlite URL's path (write {escape} for a {char} in a "
                             f"file name); expected {SQLITE_FORMS}")
    try:
        path = urllib.parse.unquote(rest, errors="strict")
    except UnicodeDecodeError:
        raise StoreError(f"{url}: a percent escape that is not UTF-8; expected {SQLITE_FORMS}") from None
    if not path or path.endswith("/"):
        raise StoreError(f"{url}: no file name; expected {SQLITE_FORMS}")
    return _absolute(Path(path), cwd)


def _absolute(path: Path, cwd: Path | None) -> Path:
    return path if path.is_absolute() else (cwd or Path.cwd()) / path


class Store(abc.ABC):
    """A connection to one history database. Not thread-safe: one thread at a time uses it."""

    dialect: str

    def __init__(self, url: str) -> None:
        self.url = url

    # -- the parts each dialect provides -----------------------------------------------------
    @abc.abstractmethod
    def _execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run one statement; returns a cursor."""

    @abc.abstractmethod
    def _executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one statement for every row."""

    @abc.abstractmethod
    def _begin(self) -> AbstractContextManager[None]:
        """A context that commits on success and rolls back on an exception."""

    @abc.abstractmethod
    def _has_table(self, name: str) -> bool:
        """Whether the table exists."""

    @abc.abstractmethod
    def _is_driver_error(self, exc: Exception) -> bool:
        """Whether the exception comes from the database driver."""

    @abc.abstractmethod
    def _error(self, exc: Exception) -> StoreError:
        """The driver's exception as one line, transient or not."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close the connection."""

    def reclaim_space(self) -> int:
        """After large deletes: give the freed space back to the filesystem where the database keeps it
        (a SQLite file); bytes given back. PostgreSQL's autovacuum reuses the space by itself."""
        return 0

    @property
    def identity(self) -> str:
        """Which database this is, without a password (it names the journal of rows kept for it)."""
        return describe_url(self.url)

    # -- shared -------------------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One transaction: everything in it is committed together or not at all."""
        try:
            with self._begin():
                yield
        except StoreError:
            raise
        except Exception as exc:
            if self._is_driver_error(exc):
                raise self._error(exc) from exc
            raise

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; the rows it changed (-1 where the driver cannot tell)."""
        return self._guard(self._execute, sql, params).rowcount

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self._guard(self._executemany, sql, rows)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        return self._guard(lambda s, p: self._execute(s, p).fetchall(), sql, params)

    def stream(self, sql: str, params: Sequence[Any] = ()) -> Iterator[tuple]:
        """Rows a batch at a time, so that a long export never holds the whole range in memory."""
        try:
            yield from self._stream(sql, params)
        except Exception as exc:
            if self._is_driver_error(exc):
                raise self._error(exc) from exc
            raise

    def _stream(self, sql: str, params: Sequence[Any]) -> Iterator[tuple]:
        cursor = self._execute(sql, params)
        while rows := cursor.fetchmany(STREAM_ROWS):
            yield from rows

    def _guard(self, fn, sql, params):
        try:
            return fn(sql, params)
        except Exception as exc:
            if self._is_driver_error(exc):
                raise self._error(exc) from exc
            raise

    def schema_version(self) -> int:
        if not self._has_table("meta"):
            return 0
        rows = self.query("SELECT value FROM meta WHERE key = 'schema_version'")
        return int(rows[0][0]) if rows else 0

    def migrate(self) -> int:
        """Bring the schema up to this serd's version; returns the version found before."""
        with self.transaction():
            self._lock_for_migration()
            found = self.schema_version()
            if found > SCHEMA_VERSION:
                raise StoreError(f"{describe_url(self.url)}: schema version {found} is newer than this serd "
                                 f"understands ({SCHEMA_VERSION}); upgrade serd")
            for version in range(found + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[version - 1]:
                    self.execute(statement)
                self.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
                             "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (str(version),))
        if found < SCHEMA_VERSION:
            _LOGGER.info("history schema: version %d -> %d", found, SCHEMA_VERSION)
        return found

    def _lock_for_migration(self) -> None:
        pass

    def reopen_if_replaced(self) -> bool:
        """Before a write: if the database behind the URL is no longer the one open (a deleted or
        replaced file), open the one there now, with the schema; True if it did. Cheap (a stat)."""
        return False

    def check_schema(self) -> None:
        """For readers: the database exists and this serd understands it (without changing it)."""
        found = self.schema_version()
        if found == 0:
            raise StoreError(f"{describe_url(self.url)}: no serd history here (run `serd record` first)")
        if found != SCHEMA_VERSION:
            raise StoreError(f"{describe_url(self.url)}: history schema version {found}, this serd reads "
                             f"{SCHEMA_VERSION}; run `serd record` once to upgrade it" if found < SCHEMA_VERSION
                             else f"{describe_url(self.url)}: schema version {found} is newer than this serd")


class SqliteStore(Store):
    dialect = "sqlite"

    def __init__(self, url: str, path: Path, create: bool) -> None:
        super().__init__(url)
        self.path = path
        self.create = create
        self._connect()

    def _connect(self) -> None:
        path = self.path
        if self.create:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"{path.parent}: cannot create the directory ({exc.strerror or exc})") from None
        elif not path.exists():
            raise StoreError(f"{path}: no such history database (run `serd record` first, or give --db)")
        mode = "rwc" if self.create else "rw"
        try:
            # isolation_level=None: transactions are ours (BEGIN ... COMMIT), not the driver's guesses.
            # A file: URI (for mode=) with the path percent-escaped: a `?` or `#` in it is part of the name.
            uri = f"file:{urllib.parse.quote(str(path), safe='/')}?mode={mode}"
            self.conn = sqlite3.connect(uri, uri=True, timeout=SQLITE_BUSY_TIMEOUT_S,
                                        isolation_level=None, check_same_thread=False)
            # Incremental auto-vacuum: retention and --delete can give freed pages back to the filesystem
            # (reclaim_space). Before WAL: it takes effect in a file not yet written; an older file has it recorded
            # here and gets it from the one full VACUUM reclaim_space runs there.
            self.conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
            # WAL: readers (serd history, the dashboard) never block the recorder, and a kill -9
            # loses at most the transaction being written. synchronous=NORMAL is safe in WAL
            # against a crashed process; only a power cut can lose the last committed batches.
            mode_set = self.conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode_set.lower() != "wal":
                _LOGGER.warning("%s: journal mode is %s, not WAL", path, mode_set)
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self._identity = _file_identity(path)
        except sqlite3.Error as exc:
            raise self._error(exc) from None

    @property
    def identity(self) -> str:
        return str(self.path)

    def reopen_if_replaced(self) -> bool:
        # A deleted file stays writable through the open connection, and every row written into it
        # is lost when it closes: `rm history.sqlite3*` under a running recorder was silent data loss.
        if _file_identity(self.path) == self._identity:
            return False
        _LOGGER.warning("%s: the database file was deleted or replaced; writing to a new one there from now on "
                        "(what the old file held is not in it)", self.path)
        try:
            self.conn.close()
        except sqlite3.Error:
            pass
        self._connect()
        self.migrate()
        return True

    def _execute(self, sql, params=()):
        return self.conn.execute(sql, params)

    def _executemany(self, sql, rows):
        self.conn.executemany(sql, rows)

    @contextmanager
    def _begin(self):
        self.conn.execute("BEGIN IMMEDIATE")  # take the write lock now, not half-way through
        try:
            yield
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:  # also after a failed COMMIT: the next batch starts clean
                self.conn.execute("ROLLBACK")
            raise

    def _has_table(self, name):
        return bool(self.query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)))

    def reclaim_space(self) -> int:
        size_before = self._file_bytes()
        try:
            free_pages = self.conn.execute("PRAGMA freelist_count").fetchone()[0]
            if not free_pages:
                return 0
            if self.conn.execute("PRAGMA auto_vacuum").fetchone()[0] == SQLITE_INCREMENTAL:
                # executescript: it steps the statement to its end; execute() frees one page a step.
                self.conn.executescript("PRAGMA incremental_vacuum;")
            elif free_pages >= SQLITE_VACUUM_FREE_SHARE * self.conn.execute("PRAGMA page_count").fetchone()[0]:
                # A file made before serd set incremental auto-vacuum: one full VACUUM rewrites it with it
                # (it needs room for a copy of the file; on a full disk it fails and the file stays as it is).
                _LOGGER.info("%s: rewriting the file once (VACUUM) so that deleted history frees disk space",
                             self.path)
                self.conn.execute("VACUUM")
            else:
                return 0
            # In WAL mode the file shrinks at a checkpoint: now, not at some later one.
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.Error as exc:
            raise self._error(exc) from None
        return max(0, size_before - self._file_bytes())

    def _file_bytes(self) -> int:
        try:
            return self.path.stat().st_size
        except OSError:
            return 0

    def _is_driver_error(self, exc):
        return isinstance(exc, sqlite3.Error)

    def _error(self, exc: Exception) -> StoreError:
        text = str(exc)
        transient = "locked" in text or "busy" in text
        refused = isinstance(exc, (sqlite3.IntegrityError, sqlite3.DataError))
        if "readonly" in text or "read-only" in text:
            text = "the database is read-only (check the file's and directory's permissions)"
        elif "disk is full" in text or "disk I/O error" in text:
            text = f"{text}: free some space, or lower --keep-days"
        elif "unable to open" in text:
            text = "cannot open the database file (does the directory exist and is it writable?)"
        return StoreError(f"{self.path}: {text}", transient=transient, refused=refused)

    def close(self):
        self.conn.close()


class PostgresStore(Store):
    dialect = "postgresql"

    def __init__(self, url: str) -> None:
        super().__init__(url)
        try:
            import psycopg
        except ImportError:
            raise StoreError("PostgreSQL needs psycopg 3: pip install 'serd[postgres]'") from None
        self._psycopg = psycopg
        self.conn = self._connect()

    def _connect(self):
        try:
            return self._psycopg.connect(self.url, autocommit=True, connect_timeout=PG_CONNECT_TIMEOUT_S)
        except self._psycopg.Error as exc:
            raise StoreError(f"{describe_url(self.url)}: cannot connect ({one_line(exc)})", transient=True) from None

    def _execute(self, sql, params=()):
        return self.conn.execute(sql.replace("?", "%s"), tuple(params))

    def _executemany(self, sql, rows):
        with self.conn.cursor() as cur:
            cur.executemany(sql.replace("?", "%s"), list(rows))

    @contextmanager
    def _begin(self):
        if self.conn.closed or self.conn.broken:  # the server restarted or dropped us: a retry reconnects
            self.conn = self._connect()
        with self.conn.transaction():
            yield

    def _has_table(self, name):
        return self.query("SELECT to_regclass(?)", (name,))[0][0] is not None

    def _stream(self, sql, params):
        # A server-side cursor (it needs a transaction): psycopg's default cursor fetches every row at once.
        with self.conn.transaction(), self.conn.cursor(name="serd_stream") as cursor:
            cursor.execute(sql.replace("?", "%s"), tuple(params))
            while rows := cursor.fetchmany(STREAM_ROWS):
                yield from rows

    def _lock_for_migration(self):
        self.execute("SELECT pg_advisory_xact_lock(?)", (PG_MIGRATION_LOCK,))

    def _is_driver_error(self, exc):
        return isinstance(exc, self._psycopg.Error)

    def _error(self, exc: Exception) -> StoreError:
        errors = self._psycopg.errors
        transient = isinstance(exc, (self._psycopg.OperationalError, errors.SerializationFailure,
                                     errors.DeadlockDetected, errors.LockNotAvailable)) and not isinstance(
            exc, (errors.DiskFull, errors.InsufficientPrivilege, errors.ReadOnlySqlTransaction))
        refused = isinstance(exc, (self._psycopg.DataError, self._psycopg.IntegrityError))
        return StoreError(f"{describe_url(self.url)}: {one_line(exc)}", transient=transient, refused=refused)

    def close(self):
        self.conn.close()


def _file_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the file at `path`; None when there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def one_line(exc: Exception) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def open_store(url: str, create: bool = False) -> Store:
    """The store behind a `--db` URL; `create`: make the file/schema if missing (the recorder)."""
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresStore(url)
    path = sqlite_path(url)
    if path is None:
        raise StoreError(f"{url.split('://', 1)[0]}://: unknown database (expected {SQLITE_FORMS}, a file path, "
                         "or postgresql://...)")
    _refuse_the_old_absolute_form(url, path)
    return SqliteStore(url, path, create)


def _refuse_the_old_absolute_form(url: str, path: Path) -> None:
    """serd once read `sqlite:///var/lib/x.sqlite3` as the absolute path: where that file exists and the
    relative one does not, say so rather than quietly start (or look for) another file."""
    rest = url[len(SQLITE_SCHEME) + 1:] if url.startswith(SQLITE_SCHEME + "/") else ""
    if not rest or rest.startswith("/") or path.exists():
        return
    absolute = Path("/" + urllib.parse.unquote(rest))
    if absolute.exists():
        raise StoreError(f"{url} is {path} (relative to the working directory, as in SQLAlchemy), which does not "
                         f"exist; for {absolute} write {sqlite_url(absolute)}")
