"""Faults a service meets unattended: broken models, busy addresses, signals at any moment,
a stuck worker (the systemd watchdog), a microphone that disappears and comes back.

Subprocess tests run `python -m serd` as systemd does and read its exit code, stderr and
sd_notify datagrams on a real unix socket. The microphone tests drive the real reconnection
code in `serd.daemon.Daemon`: once in-process with a test-only live source that fails on
command (deterministic, fast), and once as a subprocess against a real capture device, an
ALSA `pulse` PCM on a private PulseAudio server's null sink, which vanishes when the sink's
module is unloaded (or the server is not running yet).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from helpers_service import (
    DEMO_FLAC, EXIT_S, MESSAGE_S, STARTUP_S, Collector, NotifySocket, ServeProcess, assert_one_line_error,
    emotions_at_least, free_tcp_port, run_serd, serd_env, short_tmpdir, state_seen, sub_socket, write_config,
)
from serd.config import from_dict
from serd.daemon import FIRST_RETRY_S, Daemon
from serd.messages import StatusMessage
from serd.model import Model
from serd.notify import SystemdNotifier
from serd.publisher import Publisher
from serd.sources import AudioBlock, Converter, SourceError

WATCHDOG_USEC = 400_000
PING_INTERVAL_S = WATCHDOG_USEC / 2 / 1e6
"""sd_watchdog_enabled(3): ping at half the timeout."""


@pytest.fixture
def tmp():
    with short_tmpdir("serd-flt-") as path:
        yield path


@pytest.fixture
def zmq_context():
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


def run_args(model: Path, tmp: Path, *extra: str) -> list:
    return ["run", "--model", model, "--source", DEMO_FLAC, "--bind", f"ipc://{tmp}/serd.ipc", *extra]


# -- a broken model ------------------------------------------------------------------------------

def copy_model(model: Path, directory: Path) -> Path:
    directory.mkdir(exist_ok=True)
    for suffix in (".tflite", ".json"):
        shutil.copy(model.with_suffix(suffix), directory / f"broken{suffix}")
    return directory / "broken.tflite"


def corrupt(path: Path, how: str) -> None:
    """Replace the model's bytes, and give the sidecar the matching SHA-256 so the hash check lets it by."""
    original = path.read_bytes()
    noise = np.random.default_rng(7).integers(0, 256, len(original), dtype=np.uint8).tobytes()
    data = {
        "random_bytes": noise,
        "valid_header_then_garbage": original[:8] + noise[8:],  # "TFL3" identifier intact
        "truncated": original[: len(original) // 2],
    }[how]
    path.write_bytes(data)
    sidecar = json.loads(path.with_suffix(".json").read_text())
    sidecar["sha256"] = hashlib.sha256(data).hexdigest()
    path.with_suffix(".json").write_text(json.dumps(sidecar))


HAVE_TFLITE_RUNTIME = importlib.util.find_spec("tflite_runtime") is not None
CORRUPTIONS = ("random_bytes", "valid_header_then_garbage", "truncated")
BACKENDS = [
    pytest.param("ai-edge-litert", how, id=f"ai-edge-litert-{how}") for how in CORRUPTIONS
] + [
    pytest.param("tflite-runtime", how, id=f"tflite-runtime-{how}", marks=[
        pytest.mark.skipif(not HAVE_TFLITE_RUNTIME, reason="tflite-runtime not installed"),
        *([pytest.mark.xfail(reason="KNOWN BUG: tflite-runtime 2.14 builds the model without verifying the "
                                    "flatbuffer and segfaults (exit 139, so systemd restarts it in a loop); "
                                    "ai-edge-litert verifies it. Not deterministic for a truncated file.",
                             strict=False)] if how != "random_bytes" else []),
    ]) for how in CORRUPTIONS
]


@pytest.mark.parametrize("backend, how", BACKENDS)
def test_corrupt_model_is_refused_at_start(tiny_model_int8: Path, tmp: Path, backend: str, how: str):
    model = copy_model(tiny_model_int8, tmp / "model")
    corrupt(model, how)
    done = run_serd(run_args(model, tmp), cwd=tmp, env=serd_env(SERD_TFLITE_BACKEND=backend))
    assert done.returncode == 78, f"exit {done.returncode}\n{done.stderr}"
    assert_one_line_error(done.stderr, "model error", str(model))


def test_model_without_sidecar_is_refused(tiny_model_int8: Path, tmp: Path):
    model = copy_model(tiny_model_int8, tmp / "model")
    model.with_suffix(".json").unlink()
    done = run_serd(run_args(model, tmp), cwd=tmp)
    assert done.returncode == 78, done.stderr
    assert_one_line_error(done.stderr, "model error", "broken.json", "sidecar")


def test_model_with_a_stale_sidecar_is_refused(tiny_model_int8: Path, tmp: Path):
    """The hash check itself: one flipped byte, sidecar untouched."""
    model = copy_model(tiny_model_int8, tmp / "model")
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    done = run_serd(run_args(model, tmp), cwd=tmp)
    assert done.returncode == 78, done.stderr
    assert_one_line_error(done.stderr, "model error", "SHA-256")


# -- a busy address --------------------------------------------------------------------------------

@pytest.mark.parametrize("transport", ["tcp", "ipc"])
def test_address_in_use_is_a_one_line_error(tiny_model_int8: Path, tmp: Path, zmq_context: zmq.Context,
                                            transport: str):
    """Another process (another serd, say) already publishes there. For ipc://, ZeroMQ would
    unlink the live socket file and steal the endpoint without a word."""
    endpoint = f"tcp://127.0.0.1:{free_tcp_port()}" if transport == "tcp" else f"ipc://{tmp}/busy.ipc"
    other = zmq_context.socket(zmq.PUB)
    other.setsockopt(zmq.LINGER, 0)
    other.bind(endpoint)
    try:
        done = run_serd(["run", "--model", tiny_model_int8, "--source", DEMO_FLAC, "--bind", endpoint], cwd=tmp)
        # The first owner still has its endpoint: a subscriber there hears it, not serd.
        listener = zmq_context.socket(zmq.SUB)
        listener.setsockopt(zmq.LINGER, 0)
        listener.setsockopt(zmq.SUBSCRIBE, b"")
        listener.connect(endpoint)
        deadline = time.monotonic() + MESSAGE_S
        while not listener.poll(100):
            assert time.monotonic() < deadline, "the first owner lost its endpoint"
            other.send(b"still mine")
        assert listener.recv() == b"still mine"
        listener.close()
    finally:
        other.close()
    assert done.returncode == 1, done.stderr
    assert_one_line_error(done.stderr, endpoint, "in use")


def test_stale_ipc_socket_file_is_replaced(tiny_model_int8: Path, tmp: Path, zmq_context: zmq.Context):
    """A socket file left by a killed daemon (nobody listening) must not block the next start."""
    path = tmp / "stale.ipc"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays, as after kill -9
    assert path.exists()
    with ServeProcess(["run", "--model", tiny_model_int8, "--source", DEMO_FLAC, "--bind", f"ipc://{path}"],
                      cwd=tmp, log_dir=tmp) as daemon:
        sub = Collector(sub_socket(zmq_context, f"ipc://{path}"))
        sub.wait_for(emotions_at_least(1), process=daemon)
        assert daemon.stop() == 0


# -- SIGTERM at any moment -----------------------------------------------------------------------

SIGTERM_RUNS = 10
SIGTERM_SEED = 20240611
SIGTERM_MAX_DELAY_S = 3.0
HANDLERS_INSTALLED_LOG = "serd.run: serd: model"
"""Logged by `serd run` right after `install_signal_handlers()`."""


def test_sigterm_at_random_moments(tiny_model_int8: Path, tmp: Path):
    """10 runs, SIGTERM after a seeded random delay in [0, 3] s, plus one at 0 s: never a traceback.

    Once serd has installed its handlers (it logs "serd: model ..." right after) SIGTERM
    must give exit 0. Before that (interpreter start, imports, model load: ~0.5 s on an idle
    machine, longer under load) Python's default disposition applies: the process dies of
    the signal, returncode -15. systemd counts a SIGTERM death as a clean stop too
    (SuccessExitStatus covers SIGTERM), so this is allowed, but only then; see the report.
    """
    rng = random.Random(SIGTERM_SEED)
    # One more at 0 s: the signal lands while Python is still starting, every time.
    delays = [0.0] + [rng.uniform(0.0, SIGTERM_MAX_DELAY_S) for _ in range(SIGTERM_RUNS)]
    outcomes = []
    for run, delay in enumerate(delays):
        with ServeProcess(run_args(tiny_model_int8, tmp), cwd=tmp, log_dir=tmp) as daemon:
            time.sleep(delay)
            daemon.send_signal(signal.SIGTERM)
            code = daemon.wait()
            stderr = daemon.stderr_text()
        installed = HANDLERS_INSTALLED_LOG in stderr
        outcomes.append((round(delay, 2), code, installed))
        assert "Traceback" not in stderr and "Fatal Python error" not in stderr, f"run {run}:\n{stderr}"
        if installed:
            assert code == 0, f"run {run}: exit {code} after the handlers were installed\n{stderr}"
            assert "stopping after" in stderr, f"run {run}: no orderly stop\n{stderr}"
        else:
            assert code in (0, -signal.SIGTERM), f"run {run}: exit {code}\n{stderr}"
    print("SIGTERM outcomes (delay s, exit, handlers installed):", outcomes)
    assert any(installed for _, _, installed in outcomes), f"no run reached the worker loop: {outcomes}"


# -- the systemd watchdog ------------------------------------------------------------------------

def pings_between(notify: NotifySocket, start: float, end: float) -> int:
    return sum(1 for t, fields in notify.snapshot() if "WATCHDOG" in fields and start <= t < end)


def test_watchdog_pings_stop_when_the_process_stops(tiny_model_int8: Path, tmp: Path):
    """Subprocess, as under systemd: NOTIFY_SOCKET on a real datagram socket, WATCHDOG_USEC=400000.

    READY=1 arrives once; WATCHDOG=1 arrives repeatedly, about every WATCHDOG_USEC/2 (never
    faster: that is counted against the elapsed time, which only load can stretch); SIGSTOP
    freezes the process and the pings stop; SIGCONT and they resume. This shows the pings are
    tied to the process making progress, not sent by a timer systemd could not tell from a hung
    process. That they come from the worker loop itself (and stop when only the worker is
    stuck) is shown in-process by `test_watchdog_pings_stop_when_the_worker_stalls`.
    """
    with NotifySocket(tmp / "notify.sock") as notify, ServeProcess(
            run_args(tiny_model_int8, tmp), cwd=tmp, log_dir=tmp,
            env=serd_env(NOTIFY_SOCKET=str(tmp / "notify.sock"), WATCHDOG_USEC=str(WATCHDOG_USEC))) as daemon:
        notify.wait_for("READY", process=daemon)
        healthy_from = notify.wait_for("WATCHDOG", process=daemon)[0][0]
        notify.wait_for("WATCHDOG", count=12, process=daemon)
        healthy_to = time.monotonic()
        healthy = pings_between(notify, healthy_from, healthy_to)
        expected = (healthy_to - healthy_from) / PING_INTERVAL_S
        assert healthy <= expected + 2, f"{healthy} pings in {healthy_to - healthy_from:.2f} s: too often"
        assert healthy >= 0.3 * expected, f"{healthy} pings, about {expected:.0f} expected"

        daemon.send_signal(signal.SIGSTOP)
        try:
            stopped_at = time.monotonic()
            time.sleep(10 * PING_INTERVAL_S)
            frozen = pings_between(notify, stopped_at + PING_INTERVAL_S, time.monotonic())
        finally:
            daemon.send_signal(signal.SIGCONT)
        resumed_at = time.monotonic()
        assert frozen == 0, f"{frozen} pings while the process was stopped"
        notify.wait_for("WATCHDOG", count=3, since=resumed_at, process=daemon)
        assert daemon.stop() == 0, daemon.stderr_text()
        assert len(notify.with_key("READY")) == 1, notify.keys()
        assert notify.with_key("STOPPING"), notify.keys()


# -- in-process: the real Daemon with a live source that fails on command ---------------------------

class FlakyMic:
    """A test-only live source with the interface of `serd.sources.MicSource`.

    Delivers 48 kHz stereo noise (about -30 dBFS: above the level gate) in real time from its
    own thread through `BlockQueue.offer`, as the PortAudio callback does, and converts it
    with serd's `Converter`, as MicSource does. On command it is unplugged (the stream stops:
    `active` turns False and `start` raises SourceError until plugged back) or stalls (the
    stream stays active but delivers nothing, until it is reopened).
    """

    live = True
    CAPTURE_RATE = 48000
    CHANNELS = 2
    BLOCK_S = 0.05

    def __init__(self, model_rate: int, present: bool = True) -> None:
        self.model_rate = model_rate
        self.description = "mic:flaky-test-mic"
        self.overruns = 0
        self.attempts: list[tuple[float, bool]] = []  # (time.monotonic(), opened)
        self._present = threading.Event()
        if present:
            self._present.set()
        self._muted = threading.Event()
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None
        self._converter: Converter | None = None

    # -- the MicSource interface
    def start(self, blocks) -> None:
        opened = self._present.is_set()
        self.attempts.append((time.monotonic(), opened))
        if not opened:
            raise SourceError("flaky-test-mic: no such device")
        self._converter = Converter(self.CAPTURE_RATE, self.model_rate)
        self._muted.clear()  # reopening cures a stall
        self._halt.clear()
        self._thread = threading.Thread(target=self._stream, args=(blocks,), name="flaky-mic", daemon=True)
        self._thread.start()

    def _stream(self, blocks) -> None:
        rng = np.random.default_rng(3)
        frames = int(self.BLOCK_S * self.CAPTURE_RATE)
        started, sent = time.monotonic(), 0
        while not self._halt.wait(max(0.0, started + sent * self.BLOCK_S - time.monotonic())):
            sent += 1
            if not self._muted.is_set():
                samples = (rng.standard_normal((frames, self.CHANNELS)) * 0.03).astype(np.float32)
                blocks.offer(AudioBlock(samples, time.time()))

    @property
    def active(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def to_model_rate(self, samples: np.ndarray) -> np.ndarray:
        if self._converter is None:
            raise SourceError("not started")
        return self._converter(samples)

    def stop(self) -> None:
        self._halt.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # -- test controls
    def unplug(self) -> None:
        self._present.clear()
        self._halt.set()  # the stream dies, as PortAudio's does when the device goes

    def plug(self) -> None:
        self._present.set()

    def stall(self) -> None:
        self._muted.set()


class StallableModel:
    """The real model, whose `predict` can be made to block: a stuck worker (inference hung)."""

    def __init__(self, model: Model) -> None:
        self._model = model
        self.release = threading.Event()
        self.release.set()
        self.blocked = threading.Event()

    def predict(self, features: np.ndarray) -> np.ndarray:
        if not self.release.is_set():
            self.blocked.set()
            self.release.wait(timeout=MESSAGE_S)
        return self._model.predict(features)

    def __getattr__(self, name: str):
        return getattr(self._model, name)


class InProcessDaemon:
    """The real `Daemon.run()` in a thread, a real Publisher on ipc, a real SUB, a real notify socket."""

    def __init__(self, tmp: Path, model, source, context: zmq.Context, **source_settings) -> None:
        endpoint = f"ipc://{tmp}/daemon.ipc"
        self.settings = from_dict({
            "device_id": "flaky",
            "source": {"kind": "mic", "stall_timeout_s": 1.0, "reconnect_max_s": 4.0, **source_settings},
            # The level gate alone: the test mic plays noise, which the voice detector keeps from the
            # model, and these tests need every window to reach it (they are about the worker, not the gate).
            "analysis": {"vad": "energy"},
            "publisher": {"bind": endpoint, "status_interval_s": 0.5},
        })
        self.notify = NotifySocket(tmp / "notify.sock")
        self.notifier = SystemdNotifier({"NOTIFY_SOCKET": str(tmp / "notify.sock"),
                                         "WATCHDOG_USEC": str(WATCHDOG_USEC)})
        self.publisher = Publisher(self.settings.publisher, self.settings.device_id)
        self.sub = Collector(sub_socket(context, endpoint))
        self._wait_for_subscription(context, endpoint)
        self.daemon = Daemon(self.settings, model, source, self.publisher, self.notifier)
        self.exit_code: int | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="serd-worker", daemon=True)
        self._thread.start()

    def _wait_for_subscription(self, context: zmq.Context, endpoint: str) -> None:
        """Publish probes until the SUB hears one: from then on nothing is lost to a slow join."""
        probe = StatusMessage(device="probe", seq=0, time=time.time(), state="starting", uptime_s=0.0,
                              source="", model="")
        deadline = time.monotonic() + STARTUP_S
        while not self.sub.socket.poll(50):
            assert time.monotonic() < deadline, "the SUB never connected"
            self.publisher.send(probe)
        self.sub.socket.poll(200)  # probes still in flight
        self.sub.drain()
        assert {m.device for m in self.sub.messages} == {"probe"}
        self.sub.messages.clear()
        self.sub.bodies.clear()
        self.sub.received_at.clear()

    def _run(self) -> None:
        try:
            self.exit_code = self.daemon.run()
        except BaseException as exc:  # a crash of the worker is what these tests look for
            self.error = exc

    def wait_for(self, done, what: str, timeout_s: float = MESSAGE_S) -> None:
        deadline = time.monotonic() + timeout_s
        while not done(self.sub):
            assert self._thread.is_alive(), f"the worker ended ({self.error!r}) before {what}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}; got {self.sub.summary()}"
            if self.sub.socket.poll(100):
                self.sub.drain()

    def stop(self) -> int:
        self.daemon.request_stop()
        self._thread.join(timeout=EXIT_S)
        assert not self._thread.is_alive(), "the worker did not stop"
        assert self.error is None, f"the worker crashed: {self.error!r}"
        self.sub.socket.poll(1000)
        self.sub.drain()
        return self.exit_code

    def close(self) -> None:
        if self._thread.is_alive():
            self.daemon.request_stop()
            self._thread.join(timeout=EXIT_S)
        self.notifier.close()
        self.notify.close()
        self.sub.socket.close(linger=0)


@pytest.fixture
def model(tiny_model_int8: Path) -> Model:
    return Model(tiny_model_int8)


@pytest.fixture
def harness(tmp: Path, zmq_context: zmq.Context):
    made = []

    def make(model, source, **source_settings) -> InProcessDaemon:
        made.append(InProcessDaemon(tmp, model, source, zmq_context, **source_settings))
        return made[-1]

    yield make
    for item in made:
        item.close()


def statuses_after(c: Collector, index: int) -> list[StatusMessage]:
    return [m for m in c.messages[index:] if isinstance(m, StatusMessage)]


def detail_seen(fragment: str, after: int = 0):
    return lambda c: any(fragment in m.detail for m in statuses_after(c, after))


def assert_contiguous(c: Collector) -> None:
    emotions = c.emotions
    assert [m.seq for m in emotions] == list(range(len(emotions))), "emotion seq not contiguous"
    starts = [m.start_s for m in emotions]
    assert starts == sorted(starts) and len(set(starts)) == len(starts), "window times went backwards"


def test_mic_unplugged_mid_stream_retries_with_backoff_and_resumes(model: Model, harness):
    """Lost -> status source_lost with the reason -> reopen attempts 1 s, 2 s, 4 s apart (doubling,
    capped at source.reconnect_max_s) -> back: running, emotion messages resume, seq contiguous."""
    mic = FlakyMic(model.params.sample_rate)
    run = harness(model, mic)
    run.wait_for(emotions_at_least(4), "emotion messages")
    lost_from = len(run.sub.messages)
    mic.unplug()
    run.wait_for(detail_seen("the input stream stopped; retrying in 1 s", lost_from), "source_lost")
    run.wait_for(detail_seen("no such device; retrying in 2 s", lost_from), "the first failed retry")
    run.wait_for(detail_seen("no such device; retrying in 4 s", lost_from), "the second failed retry")
    mic.plug()
    back_from = len(run.sub.messages)
    run.wait_for(state_seen("running", back_from), "running again")
    emotions_before = len(run.sub.emotions)
    run.wait_for(emotions_at_least(emotions_before + 4), "emotion messages after the return")
    assert run.stop() == 0
    assert run.sub.statuses[-1].state == "stopping"

    lost = [m for m in statuses_after(run.sub, lost_from) if m.state == "source_lost"]
    assert all(m.detail for m in lost), "source_lost without a reason"
    assert lost[0].source == "mic:flaky-test-mic"
    # Attempts: the first open, two failures, the success; never sooner than the backoff allows
    # (a busy machine can only make them later).
    times = [t for t, _ in mic.attempts]
    assert [ok for _, ok in mic.attempts] == [True, False, False, True], mic.attempts
    gaps = np.diff(times[1:])
    assert gaps[0] >= 2 * FIRST_RETRY_S - 0.05 and gaps[1] >= 4 * FIRST_RETRY_S - 0.05, gaps
    assert_contiguous(run.sub)
    assert len(run.notify.with_key("READY")) == 1


def test_mic_that_stalls_is_reopened(model: Model, harness):
    """The stream stays 'active' but no audio comes: after source.stall_timeout_s it counts as lost."""
    mic = FlakyMic(model.params.sample_rate)
    run = harness(model, mic)
    run.wait_for(emotions_at_least(3), "emotion messages")
    lost_from = len(run.sub.messages)
    mic.stall()
    run.wait_for(detail_seen("no audio for", lost_from), "source_lost after the stall timeout")
    run.wait_for(state_seen("running", lost_from + 1), "running after the reopen")
    emotions_before = len(run.sub.emotions)
    run.wait_for(emotions_at_least(emotions_before + 3), "emotion messages after the reopen")
    assert run.stop() == 0
    assert [ok for _, ok in mic.attempts] == [True, True]
    assert_contiguous(run.sub)


def test_mic_missing_at_start_sends_ready_and_waits_for_it(model: Model, harness):
    """Device missing at boot: serd starts anyway (READY=1, so systemd neither times out nor restarts
    it), reports source_lost, retries with backoff, and runs as soon as the device appears."""
    mic = FlakyMic(model.params.sample_rate, present=False)
    run = harness(model, mic)
    run.wait_for(detail_seen("no such device; retrying in 1 s"), "source_lost at start")
    ready = run.notify.wait_for("READY")
    assert "source_lost" in ready[0][1].get("STATUS", ""), ready
    run.wait_for(detail_seen("no such device; retrying in 2 s"), "a failed retry")
    mic.plug()
    run.wait_for(state_seen("running"), "running once the device is there")
    run.wait_for(emotions_at_least(3), "emotion messages")
    assert run.stop() == 0
    assert len(run.notify.with_key("READY")) == 1, run.notify.keys()
    assert [ok for _, ok in mic.attempts] == [False, False, True], mic.attempts
    assert_contiguous(run.sub)


def test_watchdog_pings_stop_when_the_worker_stalls(model: Model, harness):
    """The watchdog contract: pings come from the worker loop, so a worker stuck inside one
    window (here: inference that hangs) stops them, although the process, its audio thread
    and its sockets are alive. systemd then kills and restarts it (WatchdogSec=). Released,
    the worker pings again; audio that arrived meanwhile beyond the queue is counted as dropped."""
    stallable = StallableModel(model)
    run = harness(stallable, FlakyMic(model.params.sample_rate), queue_blocks=10)
    run.notify.wait_for("READY")
    run.notify.wait_for("WATCHDOG", count=5)
    stallable.release.clear()
    assert stallable.blocked.wait(timeout=MESSAGE_S), "the worker never reached inference"
    stuck_at = time.monotonic()
    time.sleep(10 * PING_INTERVAL_S)
    stuck_pings = pings_between(run.notify, stuck_at + PING_INTERVAL_S, time.monotonic())
    stallable.release.set()
    released_at = time.monotonic()
    assert stuck_pings == 0, f"{stuck_pings} watchdog pings from a stuck worker"
    run.notify.wait_for("WATCHDOG", count=3, since=released_at)
    run.wait_for(lambda c: any(m.dropped > 0 for m in c.statuses), "a status counting the dropped blocks")
    assert run.stop() == 0


# -- subprocess: a real capture device that vanishes (PulseAudio null sink via ALSA's pulse PCM) -----

PULSE_SINK = "serdtest_sink"
PULSE_PCM = "serdtestmic"
ASOUNDRC = f"""# ALSA PCM for the tests: the monitor of a null sink on a private PulseAudio server.
pcm.{PULSE_PCM} {{
    type pulse
    device "{PULSE_SINK}.monitor"
}}
"""


class PulseServer:
    """A private PulseAudio server (own socket, HOME, runtime dir) with a null sink whose monitor is a mic."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.home = root / "home"
        self.runtime = root / "run"
        self.home.mkdir(parents=True)
        self.runtime.mkdir(mode=0o700)
        (self.home / ".asoundrc").write_text(ASOUNDRC)
        self.socket = self.runtime / "pulse.sock"
        self.process: subprocess.Popen | None = None
        self.sink_module: int | None = None
        self._log = open(root / "pulseaudio.log", "wb")

    @property
    def client_env(self) -> dict[str, str]:
        """For serd and pactl: the server's socket, and a HOME whose .asoundrc defines the mic PCM."""
        return {"PULSE_SERVER": f"unix:{self.socket}", "HOME": str(self.home), "XDG_RUNTIME_DIR": str(self.runtime)}

    def start(self, with_sink: bool = True) -> None:
        self.process = subprocess.Popen(
            ["pulseaudio", "--daemonize=no", "-n", "--exit-idle-time=-1", "--use-pid-file=no", "--disable-shm=yes",
             f"--load=module-native-protocol-unix socket={self.socket} auth-anonymous=1"],
            env={**os.environ, **self.client_env}, stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log)
        deadline = time.monotonic() + STARTUP_S
        while self.pactl("info", check=False).returncode != 0:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"pulseaudio did not start: {(self.root / 'pulseaudio.log').read_text()}")
            time.sleep(0.1)
        if with_sink:
            self.load_sink()

    def pactl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(["pactl", *args], env={**os.environ, **self.client_env}, capture_output=True,
                              text=True, timeout=EXIT_S)
        if check and done.returncode != 0:
            raise RuntimeError(f"pactl {' '.join(args)}: {done.stderr}")
        return done

    def load_sink(self) -> None:
        done = self.pactl("load-module", "module-null-sink", f"sink_name={PULSE_SINK}", "rate=16000", "channels=1")
        self.sink_module = int(done.stdout.strip())

    def unload_sink(self) -> None:
        self.pactl("unload-module", str(self.sink_module))
        self.sink_module = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=EXIT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()


_PULSE_PROBE: dict[str, str] = {}


def pulse_mic_unavailable(root: Path) -> str:
    """Why the fake PulseAudio microphone cannot work here ("" if it can); probed once."""
    if "reason" in _PULSE_PROBE:
        return _PULSE_PROBE["reason"]
    reason = ""
    if not (shutil.which("pulseaudio") and shutil.which("pactl")):
        reason = "needs pulseaudio and pactl (apt install pulseaudio pulseaudio-utils)"
    else:
        server = PulseServer(root / "probe")
        try:
            server.start()
            done = run_serd(["devices", "--json"], cwd=root, env=serd_env(**server.client_env))
            if done.returncode != 0:
                reason = f"serd devices failed (PortAudio?): {done.stderr.strip().splitlines()[-1:]}"
            elif PULSE_PCM not in done.stdout:
                reason = "ALSA's pulse PCM plugin is missing (apt install libasound2-plugins)"
        except (RuntimeError, OSError) as exc:
            reason = f"cannot run a private PulseAudio server: {exc}"
        finally:
            server.stop()
    _PULSE_PROBE["reason"] = reason
    return reason


@pytest.fixture
def pulse(tmp: Path):
    reason = pulse_mic_unavailable(tmp)
    if reason:
        pytest.skip(reason)
    server = PulseServer(tmp / "pulse")
    yield server
    server.stop()


def mic_config(tmp: Path, model: Path) -> Path:
    return write_config(tmp / "config.yaml", {
        "device_id": "pulsemic",
        "model": str(model),
        "source": {"kind": "mic", "input_device": PULSE_PCM, "stall_timeout_s": 1.0, "reconnect_max_s": 2.0},
        "publisher": {"bind": f"ipc://{tmp}/mic.ipc", "status_interval_s": 0.5},
    })


def test_real_capture_device_vanishes_and_returns(tiny_model_int8: Path, tmp: Path, pulse: PulseServer,
                                                  zmq_context: zmq.Context):
    pulse.start()
    with ServeProcess(["run", "--config", mic_config(tmp, tiny_model_int8)], cwd=tmp, log_dir=tmp,
                      env=serd_env(**pulse.client_env)) as daemon:
        sub = Collector(sub_socket(zmq_context, f"ipc://{tmp}/mic.ipc"))
        sub.wait_for(emotions_at_least(3), process=daemon, what="emotion messages from the device")
        lost_from = len(sub.messages)
        pulse.unload_sink()  # the capture device disappears under the open stream
        sub.wait_for(state_seen("source_lost", lost_from), process=daemon, what="source_lost")
        sub.wait_for(lambda c: any("retrying in 2 s" in m.detail for m in statuses_after(c, lost_from)),
                     process=daemon, what="a failed reopen with a longer backoff")
        pulse.load_sink()
        back_from = len(sub.messages)
        sub.wait_for(state_seen("running", back_from), process=daemon, what="running again")
        emotions_before = len(sub.emotions)
        sub.wait_for(emotions_at_least(emotions_before + 3), process=daemon, what="emotion messages after")
        assert daemon.stop() == 0, daemon.stderr_text()
        stderr = daemon.stderr_text()
    assert "Traceback" not in stderr
    lost = [m for m in statuses_after(sub, lost_from) if m.state == "source_lost"]
    assert lost and all(m.detail for m in lost)
    assert_contiguous(sub)


def test_real_capture_device_missing_at_boot(tiny_model_int8: Path, tmp: Path, pulse: PulseServer,
                                             zmq_context: zmq.Context):
    """No sound server at start, so PortAudio cannot list the device; it must find it once it
    exists (PortAudio only enumerates devices when initialised: serd re-scans on each retry)."""
    notify_path = tmp / "notify.sock"
    with NotifySocket(notify_path) as notify, ServeProcess(
            ["run", "--config", mic_config(tmp, tiny_model_int8)], cwd=tmp, log_dir=tmp,
            env=serd_env(**pulse.client_env, NOTIFY_SOCKET=str(notify_path))) as daemon:
        sub = Collector(sub_socket(zmq_context, f"ipc://{tmp}/mic.ipc"))
        sub.wait_for(lambda c: any("retrying in 2 s" in m.detail for m in c.statuses), process=daemon,
                     what="source_lost and a failed retry")
        notify.wait_for("READY", process=daemon)
        pulse.start()
        sub.wait_for(state_seen("running"), process=daemon, what="running once the device exists")
        sub.wait_for(emotions_at_least(3), process=daemon, what="emotion messages")
        assert daemon.stop() == 0, daemon.stderr_text()
        assert len(notify.with_key("READY")) == 1
    assert_contiguous(sub)
