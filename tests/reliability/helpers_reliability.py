"""The reliability runs, shared by `tests/reliability/` (short) and `benchmarks/reliability.py` (long).

Each run starts `serd run` exactly as a user does (`python -m serd`, optionally under
`taskset`), talks to it over real ZeroMQ sockets and reads its memory, file descriptors
and CPU time from /proc. Nothing here imports pytest, so the benchmark runs without it.
Every wait has a timeout: a hung daemon fails its run instead of hanging it. Timeouts are
bounds for failing on a busy machine, never figures.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
import urllib.request
from pathlib import Path

import numpy as np
import zmq

from serd.messages import MessageError, decode

REPO_ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
DEMO_FLAC = REPO_ROOT / "examples" / "demo.flac"
GENERATOR = HERE / "pcm_generator.py"
SWARM = HERE / "sub_swarm.py"
RATE = 16000
WINDOW_S = 2.0
HOP_S = 0.5
WINDOW_SAMPLES = int(WINDOW_S * RATE)
HOP_SAMPLES = int(HOP_S * RATE)
STATUS_INTERVAL_S = 0.2
"""The smallest heartbeat the config allows: an RSS sample every 0.2 s of wall time."""
STARTUP_S = 60.0
EXIT_S = 60.0
MIN_SPEED = 20.0
"""A run slower than this many times real time is treated as hung (the soak's timeout)."""
CLK_TCK = os.sysconf("SC_CLK_TCK")
BUSY_LOOP = "while True: pass"


def serd_env(**extra: str) -> dict[str, str]:
    """The checkout importable, no inherited systemd variables."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "SERD_TFLITE_BACKEND"):
        env.pop(name, None)
    env.update(extra)
    return env


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def expected_windows(samples: int) -> int:
    """Windows the daemon cuts from a stream of `samples` (a stream shorter than a window is padded to one)."""
    if samples <= 0:
        return 0
    return 1 if samples < WINDOW_SAMPLES else (samples - WINDOW_SAMPLES) // HOP_SAMPLES + 1


# -- /proc ---------------------------------------------------------------------------------------

def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmRSS for {pid}")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def percentile(values, q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q)) if len(values) else float("nan")


# -- the daemon ------------------------------------------------------------------------------------

class Daemon:
    """`serd run ARGS` in the background; stderr to a file (a full pipe must never stall it)."""

    def __init__(self, args: list, workdir: Path, stdin=subprocess.DEVNULL, prefix: tuple[str, ...] = ()) -> None:
        self._stderr_path = workdir / f"serd-{time.monotonic_ns()}.stderr"
        self._stderr = open(self._stderr_path, "wb")
        self.process = subprocess.Popen([*prefix, sys.executable, "-m", "serd", "run", *map(str, args)],
                                        cwd=workdir, env=serd_env(), stdin=stdin, stdout=subprocess.DEVNULL,
                                        stderr=self._stderr)
        self.pid = self.process.pid

    def poll(self) -> int | None:
        return self.process.poll()

    def wait(self, timeout_s: float = EXIT_S) -> int:
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"serd did not exit within {timeout_s} s\nstderr:\n{self.stderr_text()}") from None

    def stderr_text(self) -> str:
        self._stderr.flush()
        return self._stderr_path.read_text(encoding="utf-8", errors="replace")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def close(self) -> None:
        self.kill()
        self._stderr.close()


def write_config(workdir: Path, device: str, status_interval_s: float | None = STATUS_INTERVAL_S) -> Path:
    """A config naming the device; heartbeats every `status_interval_s` (None: the default, 5 s)."""
    path = workdir / f"{device}.yaml"
    text = f"device_id: {device}\n"
    if status_interval_s is not None:
        text += f"publisher:\n  status_interval_s: {status_interval_s}\n"
    path.write_text(text)
    return path


class PipeEnd:
    """The write end of the daemon's stdin pipe; closing it is EOF for the daemon (once, whoever asks)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.closed = False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self.fd)


@contextmanager
def stdin_daemon(model: Path, workdir: Path, device: str, endpoint: str,
                 prefix: tuple[str, ...] = ()) -> Iterator[tuple[Daemon, PipeEnd]]:
    """A daemon reading stdin from a pipe whose write end stays with the caller.

    Audio comes from a generator process started later on the same write end, so the
    caller decides when audio starts (after its subscribers are in place) and when it ends
    (closing the write end: EOF), and can read /proc at the start and end of the audio
    while the daemon is still running.
    """
    read_end, write_end = os.pipe()
    pipe = PipeEnd(write_end)
    try:
        daemon = Daemon(["--config", write_config(workdir, device), "--source", "-", "--bind", endpoint,
                         "--model", model], workdir, stdin=read_end, prefix=prefix)
    finally:
        os.close(read_end)
    try:
        yield daemon, pipe
    finally:
        pipe.close()
        daemon.close()


def start_generator(pipe: PipeEnd, hours: float, speed: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(GENERATOR), "--hours", str(hours), "--speed", str(speed)],
                            stdout=pipe.fd, stderr=subprocess.DEVNULL)


def stop_process(process: subprocess.Popen | None) -> None:
    if process is not None and process.poll() is None:
        process.kill()
        process.wait(timeout=10)


def sub_socket(context: zmq.Context, endpoint: str, rcvhwm: int = 0, rcvbuf: int | None = None,
               topic: bytes = b"serd.") -> zmq.Socket:
    """A SUB socket (all serd topics by default); RCVHWM 0 (unlimited): its I/O thread keeps draining the wire."""
    sock = context.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, rcvhwm)
    if rcvbuf is not None:
        sock.setsockopt(zmq.RCVBUF, rcvbuf)  # before connect: options are copied at connect time
    sock.setsockopt(zmq.SUBSCRIBE, topic)
    sock.connect(endpoint)
    return sock


def emotions_in(sub: zmq.Socket, seconds: float, on_tick=None) -> int:
    """Emotion messages a subscriber decodes in `seconds` (malformed ones skipped); `on_tick` at each wake-up."""
    count, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        if on_tick is not None:
            on_tick()
        if sub.poll(200):
            while True:
                try:
                    frames = sub.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                try:
                    count += decode(frames).topic.startswith("serd.emotion.")
                except MessageError:
                    pass
    return count


def wait_readable(sock: zmq.Socket, daemon: Daemon, timeout_s: float = STARTUP_S, what: str = "a message") -> None:
    """Until a message is waiting (not read): the subscription reached the daemon."""
    deadline = time.monotonic() + timeout_s
    while not sock.poll(100):
        if daemon.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"no {what} (serd exit {daemon.poll()}):\n{daemon.stderr_text()}")


class SeqTracker:
    """Emotion `seq` of one subscriber: count, first, and every gap (expected, got)."""

    def __init__(self) -> None:
        self.count = 0
        self.first: int | None = None
        self.last: int | None = None
        self.gaps: list[tuple[int, int]] = []

    def add(self, seq: int) -> None:
        if self.first is None:
            self.first = seq
        elif seq != self.last + 1:
            self.gaps.append((self.last + 1, seq))
        self.last = seq
        self.count += 1


# -- soak ------------------------------------------------------------------------------------------

@dataclass
class SoakResult:
    hours: float
    expected: int
    seq: SeqTracker
    speech_windows: int
    final: dict
    exit_code: int
    stderr: str
    wall_s: float
    cpu_s: float
    rss_series: list[tuple[float, float]]
    """(hours of audio processed, daemon RSS MiB) from every status heartbeat during the audio."""
    rss_start_mb: float
    rss_end_mb: float
    fd_start: int
    fd_end: int

    @property
    def windows_per_s(self) -> float:
        return self.seq.count / self.wall_s

    @property
    def speed(self) -> float:
        """Times real time."""
        return self.hours * 3600 / self.wall_s

    def rss_in_hour(self, first_h: float) -> list[float]:
        return [mb for h, mb in self.rss_series if first_h <= h <= first_h + 1.0]

    @property
    def rss_first_hour_mb(self) -> float:
        return max(self.rss_in_hour(0.0))

    @property
    def rss_last_hour_mb(self) -> float:
        return max(self.rss_in_hour(self.hours - 1.0))

    @property
    def rss_growth_mb(self) -> float:
        """Peak RSS of the last hour of audio minus peak RSS of the first hour."""
        return self.rss_last_hour_mb - self.rss_first_hour_mb


def audio_hours(windows: int) -> float:
    return 0.0 if windows <= 0 else ((windows - 1) * HOP_S + WINDOW_S) / 3600.0


def soak(model: Path, workdir: Path, hours: float) -> SoakResult:
    """`hours` of the generator's pattern through `serd run --source -` to one keeping-up subscriber.

    The subscriber is connected, and a heartbeat has proven its subscription, before the
    first byte of audio; file descriptors and RSS are read from /proc before the first byte
    and after the last window arrived, with the daemon still running (the caller's write
    end keeps the pipe open); then EOF ends the run with the final `stopping` status.
    """
    from serd.messages import EmotionMessage, StatusMessage, decode

    from pcm_generator import total_samples

    expected = expected_windows(total_samples(hours))
    endpoint = f"tcp://127.0.0.1:{free_tcp_port()}"
    context = zmq.Context()
    generator = None
    try:
        with stdin_daemon(model, workdir, "soak", endpoint) as (daemon, pipe):
            sub = sub_socket(context, endpoint)
            wait_readable(sub, daemon, what="heartbeat before the audio")
            fd_start, rss_start = fd_count(daemon.pid), rss_mb(daemon.pid)
            started = time.monotonic()
            generator = start_generator(pipe, hours, speed=0.0)
            seq, speech, rss_series, final = SeqTracker(), 0, [], None
            deadline = started + STARTUP_S + hours * 3600 / MIN_SPEED
            ends: dict[str, float] = {}
            while final is None and time.monotonic() < deadline:
                if not sub.poll(1000):
                    if daemon.poll() is not None:
                        break
                    continue
                message = decode(sub.recv_multipart())
                if isinstance(message, EmotionMessage):
                    seq.add(message.seq)
                    speech += message.speech
                    if seq.count == expected:  # the whole stream is in: read /proc while serd still runs
                        ends = {"wall": time.monotonic(), "fd": fd_count(daemon.pid), "rss": rss_mb(daemon.pid),
                                "cpu": cpu_s(daemon.pid)}
                        pipe.close()  # EOF: serd ends the stream with its final status
                elif isinstance(message, StatusMessage):
                    if message.state == "stopping":
                        final = message.to_dict()
                    elif message.windows:
                        rss_series.append((audio_hours(message.windows), message.rss_mb))
            pipe.close()
            code = daemon.wait()
            return SoakResult(
                hours=hours, expected=expected, seq=seq, speech_windows=speech, final=final or {}, exit_code=code,
                stderr=daemon.stderr_text(), wall_s=ends.get("wall", time.monotonic()) - started,
                cpu_s=ends.get("cpu", float("nan")), rss_series=rss_series, rss_start_mb=rss_start,
                rss_end_mb=ends.get("rss", float("nan")), fd_start=fd_start, fd_end=ends.get("fd", -1),
            )
    finally:
        stop_process(generator)
        context.destroy(linger=0)


# -- load: many subscribers, one stalled -----------------------------------------------------------

@dataclass
class LoadResult:
    subscribers: list[dict]
    """Per keeping-up subscriber (from sub_swarm.py): emotions, first, last, gaps, stopped."""
    latency_ms: dict
    """Receipt - captured_at at subscriber 0: p50/p95/max over the first and the last fifth."""
    stalled_emotions: int
    stalled_first_seq: int | None
    stalled_last_seq: int | None
    stalled_gaps: int
    stalled_saw_stop: bool
    final: dict
    exit_code: int
    stderr: str
    expected: int
    wall_s: float
    cpu_per_window_ms: tuple[float, float]
    """Daemon CPU per window over the first and the second half of the run."""
    rss_mb: tuple[float, float]
    """Daemon RSS at a tenth of the run and at its end."""

    @property
    def cpu_ratio(self) -> float:
        early, late = self.cpu_per_window_ms
        return late / early


def load(model: Path, workdir: Path, hours: float, speed: float, n_subscribers: int = 20,
         transport: str = "tcp") -> LoadResult:
    """`n_subscribers` keeping-up subscribers (another process) and one that never reads, on one daemon.

    The generator paces the audio at `speed` times real time, so the subscribers' work is a
    known rate, and the daemon's CPU per window can be compared between the two halves.
    """
    from pcm_generator import total_samples

    expected = expected_windows(total_samples(hours))
    endpoint = f"tcp://127.0.0.1:{free_tcp_port()}" if transport == "tcp" else f"ipc://{workdir}/load.ipc"
    context = zmq.Context()
    generator = swarm = None
    try:
        with stdin_daemon(model, workdir, "load", endpoint) as (daemon, pipe):
            swarm = subprocess.Popen([sys.executable, str(SWARM), endpoint, str(n_subscribers)], env=serd_env(),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            stalled = sub_socket(context, endpoint, rcvhwm=1, rcvbuf=1024)
            wait_readable(stalled, daemon, what="heartbeat at the stalled subscriber")
            ready = swarm.stdout.readline().strip()  # the swarm says so once every socket heard a heartbeat
            if ready != "ready":
                raise AssertionError(f"subscriber swarm not ready ({ready!r}): {swarm.stderr.read()}")
            started = time.monotonic()
            generator = start_generator(pipe, hours, speed)
            probe = sub_socket(context, endpoint, topic=b"serd.status.")  # the daemon's window count over time
            samples: list[tuple[int, float, float]] = []  # (windows, cpu s, rss MiB)
            deadline = started + STARTUP_S + 2 * hours * 3600 / speed
            final = None
            while final is None and time.monotonic() < deadline and daemon.poll() is None:
                if not probe.poll(500):
                    continue
                status = json.loads(probe.recv_multipart()[1])
                if status["state"] == "stopping":
                    final = status
                    break
                samples.append((status["windows"], cpu_s(daemon.pid), rss_mb(daemon.pid)))
                if status["windows"] >= expected and not pipe.closed:
                    # The stalled subscriber wakes up while the daemon still runs (its connection, and what
                    # its path holds, stay): it gets what got through, then only what comes after.
                    stalled_seq, stalled_stop = drain(stalled)
                    pipe.close()
            code = daemon.wait()
            wall = time.monotonic() - started
            out, err = swarm.communicate(timeout=EXIT_S)
            subscribers = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
            if len(subscribers) != n_subscribers:
                raise AssertionError(f"swarm reported {len(subscribers)} subscribers: {out}\n{err}")
            if not pipe.closed:
                raise AssertionError(f"the daemon never reached {expected} windows (exit {code}):\n"
                                     f"{daemon.stderr_text()}")
            return LoadResult(
                subscribers=subscribers, latency_ms=subscribers[0].get("latency_ms", {}),
                stalled_emotions=stalled_seq.count, stalled_first_seq=stalled_seq.first,
                stalled_last_seq=stalled_seq.last,
                stalled_gaps=len(stalled_seq.gaps), stalled_saw_stop=stalled_stop, final=final or {},
                exit_code=code, stderr=daemon.stderr_text(), expected=expected, wall_s=wall,
                cpu_per_window_ms=cpu_halves(samples), rss_mb=rss_tenth_and_end(samples),
            )
    finally:
        stop_process(generator)
        stop_process(swarm)
        context.destroy(linger=0)


def drain(sock: zmq.Socket, quiet_s: float = 1.0, cap_s: float = 60.0) -> tuple[SeqTracker, bool]:
    """Read a subscriber until no emotion message came for `quiet_s` (heartbeats go on): its emotion
    seqs, and whether it saw `stopping`."""
    seq, stopped = SeqTracker(), False
    last_emotion = started = time.monotonic()
    while time.monotonic() - last_emotion < quiet_s and time.monotonic() - started < cap_s:
        if not sock.poll(100):
            continue
        topic, body = sock.recv_multipart()
        message = json.loads(body)
        if topic.startswith(b"serd.emotion."):
            seq.add(message["seq"])
            last_emotion = time.monotonic()
        elif message["state"] == "stopping":
            stopped = True
    return seq, stopped


def cpu_halves(samples: list[tuple[int, float, float]]) -> tuple[float, float]:
    """ms of daemon CPU per window over the first and second half of the windows (warm-up excluded)."""
    usable = [s for s in samples if s[0] > 0]
    if len(usable) < 5:
        return float("nan"), float("nan")
    first, last = usable[len(usable) // 10], usable[-1]
    middle = min(usable, key=lambda s: abs(s[0] - (first[0] + last[0]) / 2))

    def per_window(a, b) -> float:
        return 1000.0 * (b[1] - a[1]) / max(1, b[0] - a[0])

    return per_window(first, middle), per_window(middle, last)


def rss_tenth_and_end(samples: list[tuple[int, float, float]]) -> tuple[float, float]:
    if not samples:
        return float("nan"), float("nan")
    return samples[len(samples) // 10][2], samples[-1][2]


# -- churn: subscribers that come and go ---------------------------------------------------------------

@dataclass
class ChurnResult:
    cycles: int
    warmup: int
    rss_mb: list[tuple[int, float]]
    """(measured cycles done, daemon RSS MiB), from the end of the warm-up on."""
    fds: list[tuple[int, int]]
    fd_baseline: int
    """The daemon's descriptors with no subscriber connected, before any churn."""
    rss_before_warmup_mb: float
    wall_s: float
    exit_code: int
    stderr: str

    @property
    def rss_growth_mb(self) -> float:
        """Over the measured cycles (after the warm-up)."""
        return self.rss_mb[-1][1] - self.rss_mb[0][1]

    @property
    def warmup_growth_mb(self) -> float:
        return self.rss_mb[0][1] - self.rss_before_warmup_mb

    @property
    def fd_growth(self) -> int:
        return max(fds for _, fds in self.fds) - self.fd_baseline


CHURN_BATCH = 10
"""Subscribers connected at once."""
CHURN_WARMUP = 1000
"""Connections before the baseline. Allocations for connections raise the daemon's RSS
by 1-3 MiB over the first thousand or so and then stay flat (measured up to 12000): the
allocator's high-water mark, not a leak. The baseline is taken after it."""
WARMUP_AUDIO_H = 0.5
"""Audio processed flat out before the churn: the daemon's own first-hour RSS creep (~0.5 MiB)
then happens before the baseline."""
CHURN_SPEED = 40.0
RSS_READS = 5


def churn(model: Path, workdir: Path, cycles: int = 1000, warmup: int = CHURN_WARMUP,
          samples: int = 2) -> ChurnResult:
    """Subscribers connect, receive one message, and disconnect, `cycles` times, while audio flows.

    After WARMUP_AUDIO_H of audio and `warmup` churn cycles, RSS and the file descriptor count
    of the daemon are read `samples` times over the measured cycles (and at their start), each
    time once the daemon has closed every departed connection (its fd count is back to the
    baseline, or 10 s passed).
    """
    from pcm_generator import total_samples

    endpoint = f"tcp://127.0.0.1:{free_tcp_port()}"
    context = zmq.Context()
    generator = None
    try:
        with stdin_daemon(model, workdir, "churn", endpoint) as (daemon, pipe):
            probe = sub_socket(context, endpoint, topic=b"serd.status.")
            wait_readable(probe, daemon, what="heartbeat")
            fd_baseline = fd_count(daemon.pid) - 1  # without the probe's connection

            warmup_windows = expected_windows(total_samples(WARMUP_AUDIO_H))
            generator = start_generator(pipe, hours=WARMUP_AUDIO_H, speed=0.0)
            deadline = time.monotonic() + STARTUP_S + WARMUP_AUDIO_H * 3600 / MIN_SPEED
            while time.monotonic() < deadline:
                if probe.poll(500) and json.loads(probe.recv_multipart()[1])["windows"] >= warmup_windows:
                    break
            probe.close()
            generator.wait(timeout=EXIT_S)
            generator = start_generator(pipe, hours=(warmup + cycles) / 20.0, speed=CHURN_SPEED)  # outlasts the churn

            rss, fds = [], []
            done = 0

            def settle() -> None:
                deadline = time.monotonic() + 10.0
                while fd_count(daemon.pid) > fd_baseline and time.monotonic() < deadline:
                    time.sleep(0.05)
                reads = []
                for _ in range(RSS_READS):  # the lowest of a few: messages in flight make brief peaks
                    reads.append(rss_mb(daemon.pid))
                    time.sleep(0.1)
                rss.append((done - warmup, min(reads)))
                fds.append((done - warmup, fd_count(daemon.pid)))

            rss_before = rss_mb(daemon.pid)
            started = time.monotonic()
            total = warmup + cycles
            marks = {warmup + cycles * i // samples for i in range(samples + 1)}
            while done < total:
                batch = [sub_socket(context, endpoint) for _ in range(min(CHURN_BATCH, total - done))]
                for sock in batch:
                    wait_readable(sock, daemon, timeout_s=30.0, what="message at a churning subscriber")
                    sock.recv_multipart()
                    sock.close(linger=0)
                done += len(batch)
                if done in marks:
                    settle()
            wall = time.monotonic() - started
            stop_process(generator)
            pipe.close()
            code = daemon.wait()
            return ChurnResult(cycles=cycles, warmup=warmup, rss_mb=rss, fds=fds, fd_baseline=fd_baseline,
                               rss_before_warmup_mb=rss_before, wall_s=wall, exit_code=code,
                               stderr=daemon.stderr_text())
    finally:
        stop_process(generator)
        context.destroy(linger=0)


# -- the Pi budget: one core, shared with a busy sibling --------------------------------------------

@dataclass
class BudgetResult:
    expected: int
    seq: SeqTracker
    final: dict
    exit_code: int
    stderr: str
    latency_s: list[float]
    """Receipt time - captured_at, per window in order."""
    cpu_per_hop_s: float
    """Daemon CPU (all threads) from the first to the last window, per hop."""
    sibling_share: float
    """Fraction of the core the busy sibling got meanwhile."""
    daemon_share: float
    wall_s: float
    audio_s: float

    @property
    def pace(self) -> float:
        """Wall time from the first to the last window over the audio time between them: 1.0 keeps up,
        a worker falling behind stretches it (it cannot be below 1: the source is paced)."""
        return self.wall_s / max(HOP_S, (self.seq.count - 1) * HOP_S)

    @property
    def headroom(self) -> float:
        """Processing time per hop / hop length (the share of one core serd needs at real time)."""
        return self.cpu_per_hop_s / HOP_S


@contextmanager
def busy_sibling(core: int) -> Iterator[subprocess.Popen]:
    """A Python busy loop pinned to `core`: a competing process with the same priority."""
    sibling = subprocess.Popen(["taskset", "-c", str(core), sys.executable, "-c", BUSY_LOOP])
    try:
        yield sibling
    finally:
        stop_process(sibling)


def budget(model: Path, workdir: Path, audio: Path = DEMO_FLAC, core: int = 0) -> BudgetResult:
    """`serd run` on `audio` in real time, pinned to `core` next to a busy sibling on the same core."""
    import soundfile

    from serd.messages import EmotionMessage, StatusMessage, decode

    info = soundfile.info(str(audio))
    if info.samplerate != RATE:
        raise ValueError(f"{audio}: the budget run expects {RATE} Hz audio")
    expected = expected_windows(info.frames)
    endpoint = f"tcp://127.0.0.1:{free_tcp_port()}"
    context = zmq.Context()
    config = write_config(workdir, "budget", status_interval_s=None)  # as deployed: its CPU is part of the budget
    try:
        with busy_sibling(core) as sibling:
            sub = sub_socket(context, endpoint)  # connected before the daemon binds: ZeroMQ retries until it does
            daemon = Daemon(["--config", config, "--source", audio, "--bind", endpoint, "--model", model], workdir,
                            prefix=("taskset", "-c", str(core)))
            try:
                seq, latency, final = SeqTracker(), [], None
                first = last = None  # (wall, daemon cpu s, sibling cpu s) at the first and the last window
                deadline = time.monotonic() + STARTUP_S + 2 * info.duration
                while final is None and time.monotonic() < deadline:
                    if not sub.poll(500):
                        if daemon.poll() is not None:
                            break
                        continue
                    message = decode(sub.recv_multipart())
                    received = time.time()
                    if isinstance(message, EmotionMessage):
                        latency.append(received - message.captured_at)
                        seq.add(message.seq)
                        last = (time.monotonic(), cpu_s(daemon.pid), cpu_s(sibling.pid))
                        first = first or last
                    elif isinstance(message, StatusMessage) and message.state == "stopping":
                        final = message.to_dict()
                code = daemon.wait()
                stderr = daemon.stderr_text()
            finally:
                daemon.close()
    finally:
        context.destroy(linger=0)
    hops = max(1, seq.count - 1)
    if first is None:
        raise AssertionError(f"no window arrived (serd exit {code}):\n{stderr}")
    (w0, c0, s0), (w1, c1, s1) = first, last
    return BudgetResult(
        expected=expected, seq=seq, final=final or {}, exit_code=code, stderr=stderr, latency_s=latency,
        cpu_per_hop_s=(c1 - c0) / hops, sibling_share=(s1 - s0) / max(1e-9, w1 - w0),
        daemon_share=(c1 - c0) / max(1e-9, w1 - w0), wall_s=w1 - w0, audio_s=info.duration,
    )


def taskset_available() -> str:
    """Why pinning cannot work here ("" if it can)."""
    if not Path("/usr/bin/taskset").exists() and not any(
            (Path(p) / "taskset").exists() for p in os.environ.get("PATH", "").split(os.pathsep)):
        return "taskset not found (util-linux)"
    if 0 not in os.sched_getaffinity(0):
        return "CPU 0 is not available to this process"
    return ""


# -- the dashboard ---------------------------------------------------------------------------------

DASHBOARD_WAIT_S = 60.0


def _refuse_constant(name: str):
    raise AssertionError(f"{name} in /api/state")


class DashboardProcess:
    """`serd dashboard --connect ...` on a free port (no upload model), read over real HTTP."""

    def __init__(self, endpoints: list[str]) -> None:
        args = [a for e in endpoints for a in ("--connect", e)]
        self.process = subprocess.Popen([sys.executable, "-m", "serd", "dashboard", *args, "--listen", "127.0.0.1:0",
                                         "--model", "none"], cwd=REPO_ROOT, env=serd_env(), stderr=subprocess.PIPE,
                                        text=True)
        self.url = None
        for line in self.process.stderr:
            match = re.search(r"serving on (http://\S+/)", line)
            if match:
                self.url = match.group(1)
                break
        assert self.url, "the dashboard did not start"

    def state(self) -> dict:
        with urllib.request.urlopen(self.url + "api/state", timeout=DASHBOARD_WAIT_S) as response:
            return json.loads(response.read(), parse_constant=_refuse_constant)

    def wait_for(self, condition, what: str) -> dict:
        deadline = time.monotonic() + DASHBOARD_WAIT_S
        while True:
            assert self.process.poll() is None, "the dashboard exited"
            state = self.state()
            if condition(state):
                return state
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {state['malformed']} malformed"
            time.sleep(0.05)

    def close(self) -> str:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        return self.process.stderr.read()
