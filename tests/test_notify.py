"""SystemdNotifier against real unix datagram sockets, as systemd would listen."""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from serd.notify import SystemdNotifier

RECV_TIMEOUT_S = 2.0
MAX_DATAGRAM = 4096


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: a unix socket path must fit in 108 bytes."""
    with tempfile.TemporaryDirectory(prefix="serd-") as name:
        yield Path(name)


@pytest.fixture
def listener(short_dir: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket standing in for systemd, and its $NOTIFY_SOCKET value."""
    path = short_dir / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(RECV_TIMEOUT_S)
    yield sock, str(path)
    sock.close()


@pytest.fixture
def abstract_listener() -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket in the Linux abstract namespace, and its ``@name`` value."""
    name = f"serd-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(RECV_TIMEOUT_S)
    yield sock, "@" + name
    sock.close()


def receive(sock: socket.socket) -> str:
    return sock.recv(MAX_DATAGRAM).decode("utf-8")


def assert_nothing_pending(sock: socket.socket) -> None:
    sock.settimeout(0.05)
    with pytest.raises(TimeoutError):
        sock.recv(MAX_DATAGRAM)


def test_messages_arrive_exactly_as_sd_notify_sends_them(listener):
    sock, path = listener
    with SystemdNotifier({"NOTIFY_SOCKET": path}) as notifier:
        assert notifier.enabled
        assert notifier.ready()
        assert receive(sock) == "READY=1"
        assert notifier.ready("running: mic hw:1,0")
        assert receive(sock) == "READY=1\nSTATUS=running: mic hw:1,0"
        assert notifier.status("source lost, retrying in 2 s")
        assert receive(sock) == "STATUS=source lost, retrying in 2 s"
        assert notifier.watchdog()
        assert receive(sock) == "WATCHDOG=1"
        assert notifier.stopping()
        assert receive(sock) == "STOPPING=1"
        assert notifier.extend_timeout(2.5)
        assert receive(sock) == "EXTEND_TIMEOUT_USEC=2500000"
    assert_nothing_pending(sock)


def test_reloading_carries_the_monotonic_clock_in_microseconds(listener):
    sock, path = listener
    notifier = SystemdNotifier({"NOTIFY_SOCKET": path})
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert notifier.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    reloading, monotonic = receive(sock).split("\n")
    assert reloading == "RELOADING=1"
    key, value = monotonic.split("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= after
    notifier.close()


def test_status_text_stays_on_one_line(listener):
    sock, path = listener
    notifier = SystemdNotifier({"NOTIFY_SOCKET": path})
    notifier.status("line one\nREADY=1")
    assert receive(sock) == "STATUS=line one READY=1"
    notifier.close()


def test_abstract_socket(abstract_listener):
    sock, name = abstract_listener
    notifier = SystemdNotifier({"NOTIFY_SOCKET": name})
    assert notifier.enabled
    assert notifier.ready("ok")
    assert receive(sock) == "READY=1\nSTATUS=ok"
    notifier.close()


def test_reads_os_environ_once(listener, monkeypatch):
    sock, path = listener
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    notifier = SystemdNotifier()
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert notifier.watchdog()
    assert receive(sock) == "WATCHDOG=1"
    notifier.close()


def test_without_notify_socket_everything_is_a_no_op(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    for notifier in (SystemdNotifier(), SystemdNotifier({})):
        assert not notifier.enabled
        assert notifier.ready("x") is False
        assert notifier.status("x") is False
        assert notifier.watchdog() is False
        assert notifier.stopping() is False
        assert notifier.reloading() is False
        assert notifier.watchdog_interval_s() is None
        notifier.close()


@pytest.mark.parametrize("value", ["relative/path.sock", "@", "vsock:2:1234"])
def test_unsupported_socket_value_is_a_no_op(value):
    notifier = SystemdNotifier({"NOTIFY_SOCKET": value})
    assert not notifier.enabled
    assert notifier.ready() is False


def test_missing_socket_path_does_not_raise(short_dir, caplog):
    notifier = SystemdNotifier({"NOTIFY_SOCKET": str(short_dir / "absent.sock")})
    assert notifier.enabled
    with caplog.at_level(logging.DEBUG, logger="serd.notify"):
        assert notifier.ready() is False
        assert notifier.watchdog() is False
    assert any("not sent" in record.getMessage() for record in caplog.records)
    assert all(record.levelno == logging.DEBUG for record in caplog.records)
    notifier.close()


def test_dead_socket_does_not_raise(short_dir):
    """The socket file exists but nobody listens (systemd went away): ECONNREFUSED."""
    path = short_dir / "dead.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dead.bind(str(path))
    dead.close()
    assert path.exists()
    notifier = SystemdNotifier({"NOTIFY_SOCKET": str(path)})
    assert notifier.status("still here") is False
    assert notifier.stopping() is False
    notifier.close()


def test_send_after_close_is_a_no_op(listener):
    sock, path = listener
    notifier = SystemdNotifier({"NOTIFY_SOCKET": path})
    notifier.close()
    notifier.close()
    assert not notifier.enabled
    assert notifier.watchdog() is False
    assert_nothing_pending(sock)


def test_a_full_receiver_never_blocks_the_sender(listener):
    """systemd not reading (busy or hung) must not stall the worker loop."""
    sock, path = listener
    notifier = SystemdNotifier({"NOTIFY_SOCKET": path})
    results: list[bool] = []

    def ping_many() -> None:
        for _ in range(5000):  # far more than a unix datagram queue holds
            results.append(notifier.watchdog())

    worker = threading.Thread(target=ping_many, daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive(), "watchdog() blocked on a full socket"
    assert results[0] is True
    assert results.count(False) > 0, "the queue never filled: test proves nothing"
    notifier.close()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid())}, 0.5),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "nope"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_is_half_the_timeout_for_our_pid(listener, env, expected):
    _, path = listener
    notifier = SystemdNotifier({"NOTIFY_SOCKET": path, **env})
    assert notifier.watchdog_interval_s() == expected
    notifier.close()
