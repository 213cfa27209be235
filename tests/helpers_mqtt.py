"""A real Mosquitto broker for the `serd mqtt` tests, and a real MQTT client (paho) watching it.

The broker runs as `mosquitto -c CONF` on a free loopback port, anonymous, without persistence
(a restart loses retained messages: what a bridge must refill). Every wait has a timeout.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from helpers_daemon import free_tcp_port

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
needs_mosquitto = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed (apt-get install "
                                     "mosquitto); CI installs it")
BROKER_START_S = 20.0
WAIT_S = 30.0


class Broker:
    """`mosquitto` on 127.0.0.1:PORT; `restart()` keeps the port (a broker that went away and came back)."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.port = port or free_tcp_port()
        self.conf = workdir / f"mosquitto-{self.port}.conf"
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n",
                             encoding="utf-8")
        self.log = workdir / f"mosquitto-{self.port}.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> "Broker":
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=log, stderr=log)
        deadline = time.monotonic() + BROKER_START_S
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1.0):
                    return self
            except OSError:
                assert self.process.poll() is None, f"mosquitto exited:\n{self.log.read_text()}"
                assert time.monotonic() < deadline, f"mosquitto did not listen:\n{self.log.read_text()}"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


@contextmanager
def broker(workdir: Path) -> Iterator[Broker]:
    b = Broker(workdir).start()
    try:
        yield b
    finally:
        b.stop()


class Watcher:
    """A paho client subscribed to `#`: the latest payload per topic, whether it came retained, and all of them."""

    def __init__(self, port: int, topics: tuple[str, ...] = ("#",)) -> None:
        import paho.mqtt.client as mqtt

        self._lock = threading.RLock()  # wait_for's conditions call json() under it
        self.latest: dict[str, bytes] = {}
        self.retained: dict[str, bool] = {}
        self.history: list[tuple[str, bytes, bool]] = []
        self._connected = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"serd-test-watcher-{time.monotonic_ns()}")
        self.client.on_connect = lambda c, _u, _f, rc, _p: (
            [c.subscribe(t, qos=1) for t in topics], self._connected.set())
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        assert self._connected.wait(WAIT_S), "the watcher could not connect to mosquitto"

    def _on_message(self, _client, _userdata, message) -> None:
        with self._lock:
            self.latest[message.topic] = message.payload
            self.retained[message.topic] = bool(message.retain)
            self.history.append((message.topic, message.payload, bool(message.retain)))

    def json(self, topic: str) -> dict:
        with self._lock:
            return json.loads(self.latest[topic])

    def wait_for(self, what: str, done: Callable[["Watcher"], bool], timeout_s: float = WAIT_S,
                 process=None) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                ok = done(self)
            if ok:
                return
            if process is not None and process.poll() is not None:
                raise AssertionError(f"serd exited ({process.returncode}) waiting for {what}:\n{process.stderr_text()}")
            if time.monotonic() > deadline:
                with self._lock:
                    shown = {t: p[:120] for t, p in self.latest.items()}
                raise AssertionError(f"timed out waiting for {what}; topics: {shown}"
                                     + (f"\nstderr:\n{process.stderr_text()}" if process else ""))
            time.sleep(0.05)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
