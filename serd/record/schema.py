"""The history schema and its migrations, in SQL both SQLite and PostgreSQL accept.

A database records its schema version in `meta`. Opening it runs every migration above
that version, in order, in one transaction, so a newer serd opens an older file and an
interrupted upgrade leaves the old version intact. Never edit a released migration: add one.

Times are Unix seconds (REAL / DOUBLE PRECISION). A `session` is one run of a daemon as
the recorder saw it: the time of its first recorded window in milliseconds (a restart,
seen as `seq` going back, starts a new one). Probabilities are JSON text by label, so
the schema does not depend on a model's label set. The per-minute and per-hour aggregates
hold sums, never means, so that every batch adds to them (`prob_sums`: summed probabilities
of the speech windows by label, JSON).
"""

from __future__ import annotations

REAL = "DOUBLE PRECISION"
"""A 64-bit float in both dialects (SQLite reads it as REAL)."""

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: windows, statuses, gaps, sessions, per-minute and per-hour aggregates (hours: so that a week of
    #    twenty rooms is summed from 3,360 rows, not 201,600).
    (
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        f"""CREATE TABLE windows (
            device TEXT NOT NULL, session BIGINT NOT NULL, seq BIGINT NOT NULL,
            time {REAL} NOT NULL, captured_at {REAL} NOT NULL, start_s {REAL} NOT NULL, end_s {REAL} NOT NULL,
            speech BOOLEAN NOT NULL, level_dbfs {REAL} NOT NULL, probs TEXT, smoothed TEXT,
            label TEXT, confidence {REAL}, model TEXT NOT NULL,
            PRIMARY KEY (device, session, seq))""",
        "CREATE INDEX windows_device_time ON windows (device, time)",
        "CREATE INDEX windows_time ON windows (time)",
        f"""CREATE TABLE statuses (
            device TEXT NOT NULL, session BIGINT NOT NULL, seq BIGINT NOT NULL, time {REAL} NOT NULL,
            state TEXT NOT NULL, uptime_s {REAL} NOT NULL, source TEXT NOT NULL, model TEXT NOT NULL,
            windows BIGINT NOT NULL, published BIGINT NOT NULL, overruns BIGINT NOT NULL, dropped BIGINT NOT NULL,
            cpu_percent {REAL} NOT NULL, rss_mb {REAL} NOT NULL, detail TEXT NOT NULL, version TEXT NOT NULL,
            PRIMARY KEY (device, session, seq))""",
        "CREATE INDEX statuses_time ON statuses (time)",
        f"""CREATE TABLE sessions (
            device TEXT NOT NULL, session BIGINT NOT NULL, started_at {REAL} NOT NULL, first_seq BIGINT NOT NULL,
            PRIMARY KEY (device, session))""",
        f"""CREATE TABLE gaps (
            device TEXT NOT NULL, session BIGINT NOT NULL, topic TEXT NOT NULL, reason TEXT NOT NULL,
            after_seq BIGINT NOT NULL, missing BIGINT NOT NULL, time {REAL} NOT NULL)""",
        "CREATE INDEX gaps_device_time ON gaps (device, time)",
        *(statement for period in ("minute", "hour") for statement in (
            f"""CREATE TABLE {period}s (
                device TEXT NOT NULL, {period} BIGINT NOT NULL, windows BIGINT NOT NULL,
                speech_windows BIGINT NOT NULL, recorded_s {REAL} NOT NULL, speech_s {REAL} NOT NULL,
                level_sum {REAL} NOT NULL, prob_sums TEXT NOT NULL, PRIMARY KEY (device, {period}))""",
            f"CREATE INDEX {period}s_{period} ON {period}s ({period})")),
    ),
    # 2: arousal (summed probabilities of the aroused emotions), per window and per minute.
    (
        f"ALTER TABLE windows ADD COLUMN arousal {REAL}",
        f"ALTER TABLE windows ADD COLUMN smoothed_arousal {REAL}",
        *(statement for table in ("minutes", "hours") for statement in (
            f"ALTER TABLE {table} ADD COLUMN arousal_sum {REAL} NOT NULL DEFAULT 0",
            f"ALTER TABLE {table} ADD COLUMN arousal_windows BIGINT NOT NULL DEFAULT 0")),
    ),
)

SCHEMA_VERSION = len(MIGRATIONS)
