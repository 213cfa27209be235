"""History figures (`serd record`, `serd history`), re-runnable with one command:

    python benchmarks/record.py [--rooms 20] [--publish-s 60] [--json]

Measures, on this machine, with real SQLite files in a temporary directory:
- rows/s the batched writer commits into SQLite (1000-row transactions, aggregates included),
  pinned to one core, and how that compares with 100 rooms x 2 windows/s;
- the recorder's own per-message work (decode + session/gap tracking + queueing);
- database growth per room per day, raw and aggregated, from a simulated room-day;
- `serd record` CPU (% of one core) and RSS with `--rooms` rooms publishing in real time;
- history query time for 7 days x `--rooms` rooms of aggregates (per hour, per minute,
  the rooms x days table) and one room-day of raw windows;
- peak RSS of `serd history` exports of the same (CSV, JSON lines, the table; `--pg URL` adds
  the same against PostgreSQL; `--exports-only` measures just these).
Run it on a quiet machine: other processes on the same cores skew every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from run import pin_to_one_core, proc_cpu_seconds, proc_rss_mb  # noqa: E402
from peak_rss import peak_rss_mb  # noqa: E402  (tests/peak_rss.py, on the path run.py sets)

from serd.messages import EmotionMessage, StatusMessage, encode  # noqa: E402
from serd.record import queries  # noqa: E402
from serd.record.recorder import Recorder  # noqa: E402
from serd.record.store import open_store, sqlite_url  # noqa: E402
from serd.record.writer import WriterSettings  # noqa: E402
from serd.record.writes import ADD, write_batch  # noqa: E402

LABELS = ("neutral", "happy", "sad", "angry", "fearful", "disgust")
HOP_S = 0.5
STATUS_EVERY_S = 5.0
SPEECH_SHARE = 0.5
"""A simulated classroom day: half the windows pass the speech gate."""
DAY_S = 86400
SIM_HOURS = 2.0
"""Simulated hours of one room for the growth figure (scaled to a day)."""
TARGET_ROWS_S = 100 * 2 * 20
"""100 rooms x 2 windows/s with 20x headroom."""


def message(device: str, seq: int, t: float) -> EmotionMessage:
    speech = (seq // 20) % 2 == 0  # 10 s of speech, 10 s of quiet
    raw = [((seq * 7 + k * 3) % 11) + 1.0 for k in range(len(LABELS))]
    probs = {label: round(v / sum(raw), 5) for label, v in zip(LABELS, raw)} if speech else None
    label = max(probs, key=probs.__getitem__) if probs else None
    return EmotionMessage(device=device, seq=seq, time=t, captured_at=t - 0.002, start_s=seq * HOP_S,
                          end_s=seq * HOP_S + 2.0, speech=speech, level_dbfs=-31.27 if speech else -61.5, probs=probs,
                          smoothed=probs, label=label, confidence=probs[label] if probs else None,
                          model="serd-emotion6-int8", arousal=0.41234 if speech else None,
                          smoothed_arousal=0.39876 if speech else None)


def status(device: str, seq: int, t: float) -> StatusMessage:
    return StatusMessage(device=device, seq=seq, time=t, state="running", uptime_s=seq * STATUS_EVERY_S,
                         source="mic:USB Audio Device@48000Hz", model="serd-emotion6-int8", windows=seq * 10,
                         published=seq * 10, cpu_percent=0.6, rss_mb=64.6, version="0.1.0")


def frames_for(rooms: int, seconds: float, t0: float) -> list[list[bytes]]:
    out = []
    for i in range(int(seconds / HOP_S)):
        for r in range(rooms):
            out.append(encode(message(f"room-{r:03d}", i, t0 + i * HOP_S)))
        if i % int(STATUS_EVERY_S / HOP_S) == 0:
            for r in range(rooms):
                out.append(encode(status(f"room-{r:03d}", i // 10, t0 + i * HOP_S)))
    return out


def write_speed(tmp: Path) -> dict[str, float]:
    store = open_store(sqlite_url(tmp / "speed.sqlite3"), create=True)
    store.migrate()
    recorder = Recorder(store, ["tcp://127.0.0.1:1"], WriterSettings(queue_rows=10_000_000))
    frames = frames_for(100, 300, time.time() - 3600)  # 100 rooms, 5 minutes
    t = time.perf_counter()
    for f in frames:
        recorder.handle(f)
    handle_s = time.perf_counter() - t
    rows = recorder.writer.queued
    t = time.perf_counter()
    while recorder.writer.queued:
        write_batch(store, recorder.writer._take())
    write_s = time.perf_counter() - t
    store.close()
    return {"messages": len(frames), "handle_per_s": len(frames) / handle_s, "rows": rows,
            "rows_per_s": rows / write_s}


def compacted_size(store, path: Path) -> int:
    """The file's size with its free pages dropped and the WAL folded in (VACUUM goes through the WAL)."""
    store.execute("VACUUM")
    store.query("PRAGMA wal_checkpoint(TRUNCATE)")
    return path.stat().st_size


def growth(tmp: Path) -> dict[str, float]:
    path = tmp / "growth.sqlite3"
    store = open_store(sqlite_url(path), create=True)
    store.migrate()
    empty = compacted_size(store, path)
    recorder = Recorder(store, ["tcp://127.0.0.1:1"], WriterSettings(queue_rows=10_000_000))
    for f in frames_for(1, SIM_HOURS * 3600, time.time() - 86400):
        recorder.handle(f)
        if recorder.writer.queued >= 1000:
            write_batch(store, recorder.writer._take())
    write_batch(store, recorder.writer._take())
    full = compacted_size(store, path) - empty
    with store.transaction():
        store.execute("DELETE FROM windows")
        store.execute("DELETE FROM statuses")
    aggregated = compacted_size(store, path) - empty
    store.close()
    scale = 24 / SIM_HOURS
    return {"raw_mb_per_day": (full - aggregated) * scale / 1e6, "aggregate_mb_per_day": aggregated * scale / 1e6,
            "raw_bytes_per_window": (full - aggregated) / (SIM_HOURS * 3600 / HOP_S)}


PUBLISHER = r"""
import sys, time, zmq
sys.path.insert(0, sys.argv[4])
from record import message, status, HOP_S, STATUS_EVERY_S
from serd.messages import encode
endpoint, rooms, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
pub = zmq.Context.instance().socket(zmq.XPUB)
pub.bind(endpoint)
while pub.recv()[:1] != b"\x01":
    pass
start = time.time()
i = 0
while i * HOP_S < seconds:
    wake = start + i * HOP_S
    time.sleep(max(0.0, wake - time.time()))
    for r in range(rooms):
        pub.send_multipart(encode(message(f"room-{r:03d}", i, time.time())))
    if i % int(STATUS_EVERY_S / HOP_S) == 0:
        for r in range(rooms):
            pub.send_multipart(encode(status(f"room-{r:03d}", i // 10, time.time())))
    i += 1
pub.close(linger=2000)
"""


def recorder_realtime(tmp: Path, rooms: int, seconds: float) -> dict[str, float]:
    endpoint = f"ipc://{tmp}/pub"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    recorder = subprocess.Popen([sys.executable, "-m", "serd", "record", "--connect", endpoint, "--db",
                                 sqlite_url(tmp / "rt.sqlite3")], env=env, stderr=subprocess.DEVNULL)
    publisher = subprocess.Popen([sys.executable, "-c", PUBLISHER, endpoint, str(rooms), str(seconds),
                                  str(ROOT / "benchmarks")], env=env)
    time.sleep(2.0)  # imports done, subscribed
    cpu0, t0 = proc_cpu_seconds(recorder.pid), time.monotonic()
    rss = []
    while publisher.poll() is None:
        rss.append(proc_rss_mb(recorder.pid))
        time.sleep(1.0)
    cpu = (proc_cpu_seconds(recorder.pid) - cpu0) / (time.monotonic() - t0) * 100
    time.sleep(2.0)
    recorder.send_signal(signal.SIGTERM)
    recorder.wait(30)
    with sqlite3.connect(tmp / "rt.sqlite3") as conn:
        stored = conn.execute("SELECT COUNT(*) FROM windows").fetchone()[0]
    return {"rooms": rooms, "seconds": seconds, "cpu_percent": cpu, "rss_max_mb": max(rss),
            "windows_stored": stored, "windows_published": rooms * int(seconds / HOP_S)}


def fill_week(store, rooms: int, now: float) -> None:
    """7 days x `rooms` of aggregates as the writer leaves them: 120 windows a minute, half speech."""
    first = int((now - 7 * DAY_S) // 60) * 60
    probs = json.dumps({label: 10.0 + k for k, label in enumerate(LABELS)})
    with store.transaction():
        for period, step, per in (("minute", 60, 1), ("hour", 3600, 60)):
            store.executemany(ADD[period], [
                (f"room-{r:03d}", start, 120 * per, 60 * per, 60.0 * per, 30.0 * per, -40.0 * 120 * per,
                 0.4 * 60 * per, 60 * per, probs)
                for r in range(rooms) for start in range(first - first % step, first + 7 * DAY_S, step)])


def fill_raw_day(store, now: float) -> None:
    """One room-day of raw windows (172,800), written by the recorder's own code."""
    recorder = Recorder(store, ["tcp://127.0.0.1:1"], WriterSettings(queue_rows=10_000_000))
    for i in range(int(DAY_S / HOP_S)):
        recorder.handle(encode(message("room-000", i, now - DAY_S + i * HOP_S)))
        if recorder.writer.queued >= 5000:
            write_batch(store, recorder.writer._take())
    write_batch(store, recorder.writer._take())


def query_time(tmp: Path, rooms: int) -> dict[str, float]:
    store = open_store(sqlite_url(tmp / "query.sqlite3"), create=True)
    store.migrate()
    now = time.time()
    fill_week(store, rooms, now)
    fill_raw_day(store, now)

    def best(fn, repeat: int = 3) -> float:
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return min(times)

    week = queries.Range(now - 7 * DAY_S, now)
    out = {
        "hourly_7d_all_rooms_s": best(lambda: queries.aggregates(store, week, 3600)),
        "daily_7d_all_rooms_s": best(lambda: queries.aggregates(store, week, 86400)),
        "minutely_7d_all_rooms_s": best(lambda: queries.aggregates(store, week, 60)),
        "minutely_1d_one_room_s": best(lambda: queries.aggregates(store, queries.Range(now - DAY_S, now, "room-000"), 60)),
        "raw_1d_one_room_s": best(lambda: queries.windows(store, queries.Range(now - DAY_S, now, "room-000")), 1),
    }
    store.close()
    return out


EXPORTS = {
    "every_1m_7d_csv": ["--every", "1m", "--since", "7d", "--csv"],
    "every_1m_7d_json": ["--every", "1m", "--since", "7d", "--json"],
    "every_1m_7d_table": ["--every", "1m", "--since", "7d"],
    "raw_1d_csv": ["room-000", "--since", "2d", "--csv"],
    "raw_1d_json": ["room-000", "--since", "2d", "--json"],
}
"""`serd history` exports measured for peak RSS (7 days x --rooms rooms of summaries, one room-day of raw windows)."""


def export_rss(url: str, rooms: int, fill: bool = True) -> dict[str, dict[str, float]]:
    """Peak RSS (MB) and time of each `serd history` export, run as a user runs it, output to /dev/null."""
    if fill:
        store = open_store(url, create=True)
        store.migrate()
        now = time.time()
        fill_week(store, rooms, now)
        fill_raw_day(store, now)
        store.close()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = {}
    for name, args in EXPORTS.items():
        t = time.perf_counter()
        rss_mb, done = peak_rss_mb([sys.executable, "-m", "serd", "history", "--db", url, *args], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if done.returncode:
            raise RuntimeError(f"serd history {' '.join(args)}: {done.stderr.decode()}")
        out[name] = {"rss_mb": rss_mb, "seconds": time.perf_counter() - t}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rooms", type=int, default=20)
    parser.add_argument("--publish-s", type=float, default=60.0)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--pg", metavar="URL", default=None,
                        help="also measure the exports against this (empty) PostgreSQL database")
    parser.add_argument("--exports-only", action="store_true", help="only the export memory figures")
    args = parser.parse_args()
    if args.exports_only:
        with tempfile.TemporaryDirectory(prefix="serd-bench-", dir="/tmp") as tmp:
            r = {"sqlite": export_rss(sqlite_url(Path(tmp) / "export.sqlite3"), args.rooms)}
            if args.pg:
                r["postgresql"] = export_rss(args.pg, args.rooms)
        print(json.dumps(r, indent=1) if args.json else export_report(r, args.rooms))
        return
    pinned = pin_to_one_core()
    with tempfile.TemporaryDirectory(prefix="serd-bench-", dir="/tmp") as tmp:
        tmp = Path(tmp)
        r = {"pinned": pinned, "machine": f"{platform.platform()}, Python {platform.python_version()}, "
                                          f"SQLite {sqlite3.sqlite_version}",
             "when": time.strftime("%Y-%m-%d %H:%M"),
             "write": write_speed(tmp), "growth": growth(tmp), "realtime": recorder_realtime(tmp, args.rooms,
                                                                                            args.publish_s),
             "query": query_time(tmp, args.rooms),
             "exports": {"sqlite": export_rss(sqlite_url(tmp / "export.sqlite3"), args.rooms)}}
        if args.pg:
            r["exports"]["postgresql"] = export_rss(args.pg, args.rooms)
    print(json.dumps(r, indent=1) if args.json else report(r))


def report(r: dict) -> str:
    w, g, rt, q = r["write"], r["growth"], r["realtime"], r["query"]
    return "\n".join([
        f"Measured {r['when']} on {r['machine']}, {r['pinned']}.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| rows/s committed into SQLite (1000-row transactions, with aggregates) | {w['rows_per_s']:,.0f} |",
        f"| ... as a multiple of 100 rooms x 2 windows/s | {w['rows_per_s'] / 200:,.0f}x (target >= 20x) |",
        f"| messages/s decoded and queued by the recorder | {w['handle_per_s']:,.0f} |",
        f"| raw windows + statuses, per room per day of running | {g['raw_mb_per_day']:.1f} MB "
        f"({g['raw_bytes_per_window']:.0f} bytes per window) |",
        f"| per-minute and per-hour aggregates, per room per day | {g['aggregate_mb_per_day']:.2f} MB |",
        f"| `serd record`, {rt['rooms']} rooms in real time for {rt['seconds']:.0f} s: CPU | {rt['cpu_percent']:.1f} % of one core |",
        f"| ... RSS (max) | {rt['rss_max_mb']:.1f} MB |",
        f"| ... windows stored / published | {rt['windows_stored']} / {rt['windows_published']} |",
        f"| history query, 7 days x 20 rooms, per hour | {q['hourly_7d_all_rooms_s'] * 1000:.0f} ms (target < 500 ms) |",
        f"| history query, 7 days x 20 rooms, per day (rooms x days table) | {q['daily_7d_all_rooms_s'] * 1000:.0f} ms |",
        f"| history query, 7 days x 20 rooms, per minute | {q['minutely_7d_all_rooms_s'] * 1000:.0f} ms |",
        f"| history query, 1 room, 1 day, per minute | {q['minutely_1d_one_room_s'] * 1000:.0f} ms |",
        f"| history query, 1 room, 1 day of raw windows (172,800) | {q['raw_1d_one_room_s'] * 1000:.0f} ms |",
    ]) + "\n\n" + export_report(r["exports"], r["realtime"]["rooms"])


def export_report(exports: dict, rooms: int) -> str:
    lines = [f"| `serd history` export ({rooms} rooms x 7 days of summaries; 1 room-day raw) | database | "
             "peak RSS | time |", "|---|---|---|---|"]
    for dialect, figures in exports.items():
        for name, f in figures.items():
            lines.append(f"| `{' '.join(EXPORTS[name])}` | {dialect} | {f['rss_mb']:.0f} MB | {f['seconds']:.1f} s |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
