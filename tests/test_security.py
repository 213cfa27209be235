"""Who can read serd's stream, where it may listen, and what it leaves behind.

Real `python -m serd` processes, real ZeroMQ sockets on 127.0.0.1 (or ipc in a tmp dir),
real CURVE keys made by `serd keys`. Nothing in serd is replaced.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest
import zmq

from helpers_service import (
    DEMO_FLAC, EXIT_S, MESSAGE_S, REPO_ROOT, STARTUP_S, Collector, CurveKeys, ServeProcess, assert_one_line_error,
    emotions_at_least, free_tcp_port, run_serd, serd_cmd, serd_env, short_tmpdir, state_seen, sub_socket, write_config,
)

LISTEN_COUNT = 6
"""Emotion messages the allowed `serd listen` must get (3 s of audio at the 0.5 s hop)."""
MAX_BODY_BYTES = 2048
"""An emotion or status body is a few hundred bytes; 2 s of 16 kHz audio would be 64 KB as int16."""
HANDSHAKE_FAILED_EVENTS = (zmq.EVENT_HANDSHAKE_FAILED_AUTH, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
                           zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)


@pytest.fixture
def tmp():
    with short_tmpdir("serd-sec-") as path:
        yield path


@pytest.fixture
def zmq_context():
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


def make_keys(directory: Path, cwd: Path) -> Path:
    done = run_serd(["keys", directory], cwd=cwd)
    assert done.returncode == 0, done.stderr
    return directory


def file_config(model: Path, bind: str, **publisher) -> dict:
    return {
        "device_id": "sec",
        "model": str(model),
        "source": {"kind": "file", "path": str(DEMO_FLAC), "realtime": True},
        "publisher": {"bind": bind, "status_interval_s": 1.0, **publisher},
    }


def curve_section(keys: Path) -> dict:
    return {"enabled": True, "server_secret_key": str(keys / "server.key_secret"),
            "authorized_clients": str(keys / "authorized")}


class HandshakeMonitor:
    """The ZMTP handshake events of one client socket (did CURVE/ZAP let it in?)."""

    def __init__(self, sock: zmq.Socket) -> None:
        self._monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH
                                                | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                                                | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
        self.events: list[int] = []

    def drain(self) -> None:
        from zmq.utils.monitor import recv_monitor_message

        while self._monitor.poll(0):
            self.events.append(recv_monitor_message(self._monitor)["event"])

    @property
    def succeeded(self) -> int:
        return self.events.count(zmq.EVENT_HANDSHAKE_SUCCEEDED)

    @property
    def failed(self) -> int:
        return sum(self.events.count(e) for e in HANDSHAKE_FAILED_EVENTS)

    def close(self) -> None:
        self._monitor.close(linger=0)


# -- CURVE ---------------------------------------------------------------------------------------

def test_curve_lets_in_only_authorized_clients(tiny_model_int8: Path, tmp: Path, zmq_context: zmq.Context):
    """One real-time daemon run, five concurrent subscribers over the same period:

    allowed `serd listen` (a subprocess) and an allowed in-process SUB receive messages;
    an unknown key pair, a client expecting another server key, and a plain SUB receive
    nothing, and their handshakes fail (ZAP/CURVE refused them, rather than "not yet").
    """
    keys = make_keys(tmp / "keys", tmp)
    stranger = make_keys(tmp / "stranger", tmp)  # a valid key pair, not in keys/authorized
    endpoint = f"tcp://127.0.0.1:{free_tcp_port()}"
    config = write_config(tmp / "config.yaml", file_config(tiny_model_int8, endpoint, curve=curve_section(keys)))

    with ServeProcess(["run", "--config", config], cwd=tmp, log_dir=tmp) as daemon:
        daemon.wait_for_stderr("publishing on")
        clients = {
            "allowed": CurveKeys(keys / "server.key", keys / "client.key_secret"),
            "unknown": CurveKeys(keys / "server.key", stranger / "client.key_secret"),
            "wrong_server": CurveKeys(stranger / "server.key", keys / "client.key_secret"),
            "plain": None,
        }
        clients = {name: sub_socket(zmq_context, endpoint, curve, connect=False) for name, curve in clients.items()}
        monitors = {name: HandshakeMonitor(sock) for name, sock in clients.items()}
        for sock in clients.values():
            sock.connect(endpoint)
        collectors = {name: Collector(sock) for name, sock in clients.items()}
        listen = subprocess.Popen(
            serd_cmd("listen", "--connect", endpoint, "--server-key", keys / "server.key",
                     "--client-key", keys / "client.key_secret", "--json", "--count", LISTEN_COUNT,
                     "--timeout", MESSAGE_S),
            cwd=tmp, env=serd_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            poller = zmq.Poller()
            for sock in clients.values():
                poller.register(sock, zmq.POLLIN)
            deadline = time.monotonic() + STARTUP_S + MESSAGE_S
            while listen.poll() is None and time.monotonic() < deadline:
                poller.poll(100)
                for collector in collectors.values():
                    collector.drain()
            stdout, stderr = listen.communicate(timeout=EXIT_S)
            # The same period once more for the refused clients: anything in flight arrives now.
            collectors["allowed"].wait_for(emotions_at_least(len(collectors["allowed"].emotions) + 2),
                                           process=daemon, what="two more messages for the allowed client")
            for name in ("unknown", "wrong_server", "plain"):
                collectors[name].drain()
            for monitor in monitors.values():
                monitor.drain()
        finally:
            if listen.poll() is None:
                listen.kill()
                listen.wait(timeout=10)
            for monitor in monitors.values():
                monitor.close()
        assert daemon.stop() == 0, daemon.stderr_text()

    assert listen.returncode == 0, stderr
    listened = [json.loads(line) for line in stdout.splitlines()]
    emotions = [m for m in listened if m["schema"] == "serd.emotion/1"]
    assert len(emotions) == LISTEN_COUNT, f"serd listen (allowed) got {len(emotions)} emotion messages"
    assert len(collectors["allowed"].emotions) >= LISTEN_COUNT, collectors["allowed"].summary()
    assert monitors["allowed"].succeeded >= 1

    for name in ("unknown", "wrong_server", "plain"):
        assert collectors[name].messages == [], f"{name} client received {collectors[name].summary()}"
        assert monitors[name].succeeded == 0, f"{name} client completed a handshake"
    # Positive evidence of refusal: ZAP denied the unknown key (the handshake ran and failed).
    assert zmq.EVENT_HANDSHAKE_FAILED_AUTH in monitors["unknown"].events, monitors["unknown"].events
    assert monitors["plain"].failed >= 1, monitors["plain"].events


@pytest.mark.slow
def test_sighup_revokes_a_removed_client_key(tiny_model_int8: Path, tmp: Path, zmq_context: zmq.Context):
    """Issue 13, finding 8: a key removed from `authorized/` + SIGHUP -> that client stops receiving.

    ZeroMQ checks a key only at the handshake, so serd re-reads the list and closes the
    connections of keys no longer in it; the client's reconnection is then refused.
    """
    keys = make_keys(tmp / "keys", tmp)
    second = make_keys(tmp / "second", tmp)
    shutil.copy(second / "client.key", keys / "authorized" / "second.key")
    endpoint = f"tcp://127.0.0.1:{free_tcp_port()}"
    config = write_config(tmp / "config.yaml", file_config(tiny_model_int8, endpoint, curve=curve_section(keys)))
    with ServeProcess(["run", "--config", config], cwd=tmp, log_dir=tmp) as daemon:
        daemon.wait_for_stderr("publishing on")
        kept = Collector(sub_socket(zmq_context, endpoint, CurveKeys(keys / "server.key", keys / "client.key_secret")))
        revoked = Collector(sub_socket(zmq_context, endpoint,
                                       CurveKeys(keys / "server.key", second / "client.key_secret")))
        for collector in (kept, revoked):
            collector.wait_for(emotions_at_least(2), process=daemon, what="messages before the revocation")
        (keys / "authorized" / "second.key").unlink()
        daemon.send_signal(signal.SIGHUP)
        daemon.wait_for_stderr("1 connection(s) of removed keys closed")
        revoked.socket.poll(500)
        revoked.drain()  # what was in flight before the cut
        before = len(revoked.messages)
        kept.wait_for(emotions_at_least(len(kept.emotions) + 6), process=daemon, what="messages after the revocation")
        revoked.drain()
        assert len(revoked.messages) == before, f"the revoked client still received {revoked.summary()}"
        assert daemon.stop() == 0, daemon.stderr_text()
        assert "Traceback" not in daemon.stderr_text()


@pytest.mark.slow
def test_sighup_with_the_authorized_directory_deleted_authorizes_nobody(tiny_model_int8: Path, tmp: Path,
                                                                         zmq_context: zmq.Context):
    """Issue 19, item 8: `authorized/` deleted + SIGHUP kept the old list while serd logged
    "configuration reloaded". Now the reload is refused in one log line and the list is empty (the
    safe side for authentication): every client is cut and refused until the directory is back."""
    keys = make_keys(tmp / "keys", tmp)
    endpoint = f"tcp://127.0.0.1:{free_tcp_port()}"
    config = write_config(tmp / "config.yaml", file_config(tiny_model_int8, endpoint, curve=curve_section(keys)))
    with ServeProcess(["run", "--config", config], cwd=tmp, log_dir=tmp) as daemon:
        daemon.wait_for_stderr("publishing on")
        client = Collector(sub_socket(zmq_context, endpoint, CurveKeys(keys / "server.key", keys / "client.key_secret")))
        client.wait_for(emotions_at_least(2), process=daemon, what="messages before the deletion")
        saved = tmp / "authorized.saved"
        shutil.copytree(keys / "authorized", saved)
        shutil.rmtree(keys / "authorized")
        daemon.send_signal(signal.SIGHUP)
        stderr = daemon.wait_for_stderr("reload refused")
        assert "authorized_clients" in stderr and "not a directory" in stderr and "1 connection(s) closed" in stderr
        assert "configuration reloaded" not in stderr
        client.socket.poll(500)
        client.drain()  # what was in flight before the cut
        before = len(client.messages)
        time.sleep(3.0)  # six hops: the client reconnects at once and must be refused each time
        client.drain()
        assert len(client.messages) == before, f"a client still received {client.summary()} with no list"
        shutil.copytree(saved, keys / "authorized")
        daemon.send_signal(signal.SIGHUP)
        daemon.wait_for_stderr("configuration reloaded")
        # A new connection: the refused client did not reconnect in our runs (libzmq after a ZAP refusal).
        again = Collector(sub_socket(zmq_context, endpoint, CurveKeys(keys / "server.key", keys / "client.key_secret")))
        again.wait_for(emotions_at_least(2), process=daemon, what="messages once the directory is back")
        assert daemon.stop() == 0, daemon.stderr_text()
        assert "Traceback" not in daemon.stderr_text()


@pytest.mark.parametrize("broken, key", [
    ("secret_missing", "publisher.curve.server_secret_key"),
    ("public_as_secret", "publisher.curve.server_secret_key"),
    ("clients_missing", "publisher.curve.authorized_clients"),
])
def test_curve_key_problems_are_one_line_errors(tiny_model_int8: Path, tmp: Path, broken: str, key: str):
    keys = make_keys(tmp / "keys", tmp)
    curve = curve_section(keys)
    if broken == "secret_missing":
        curve["server_secret_key"] = str(keys / "nope.key_secret")
    elif broken == "public_as_secret":
        curve["server_secret_key"] = str(keys / "server.key")
    else:
        curve["authorized_clients"] = str(keys / "nobody")
    endpoint = f"tcp://127.0.0.1:{free_tcp_port()}"
    config = write_config(tmp / "config.yaml", file_config(tiny_model_int8, endpoint, curve=curve))
    done = run_serd(["run", "--config", config], cwd=tmp)
    assert done.returncode == 78  # a key-file problem is a config error: systemd must not retry
    assert_one_line_error(done.stderr, key)


def test_keys_refuse_to_overwrite(tmp: Path):
    keys = make_keys(tmp / "keys", tmp)
    made = sorted(p.relative_to(keys) for p in keys.rglob("*"))
    assert made == sorted(map(Path, ["authorized", "authorized/client.key", "client.key", "client.key_secret",
                                     "server.key", "server.key_secret"]))
    for secret in ("server.key_secret", "client.key_secret"):
        assert stat.S_IMODE((keys / secret).stat().st_mode) == 0o600, f"{secret} is readable by others"
    before = {p: p.read_bytes() for p in keys.rglob("*") if p.is_file()}

    again = run_serd(["keys", keys], cwd=tmp)
    assert again.returncode != 0
    assert_one_line_error(again.stderr, "already exists")
    assert {p: p.read_bytes() for p in keys.rglob("*") if p.is_file()} == before

    # Only the client's pair left (e.g. the server's was removed to rotate it): still refused,
    # and no new server key may appear beside the old client key.
    (keys / "server.key").unlink()
    (keys / "server.key_secret").unlink()
    partial = run_serd(["keys", keys], cwd=tmp)
    assert partial.returncode != 0
    assert_one_line_error(partial.stderr, "client.key", "already exists")
    assert not (keys / "server.key").exists() and not (keys / "server.key_secret").exists()


# -- where serd may listen -------------------------------------------------------------------------

@pytest.mark.parametrize("host", ["0.0.0.0", "*", "[::]", "192.0.2.7", "example.org"])
@pytest.mark.parametrize("how", ["config", "flag"])
def test_network_bind_without_curve_is_refused(tiny_model_int8: Path, tmp: Path, host: str, how: str):
    bind = f"tcp://{host}:{free_tcp_port()}"
    if how == "config":
        config = write_config(tmp / "config.yaml", file_config(tiny_model_int8, bind))
        done = run_serd(["run", "--config", config], cwd=tmp)
    else:
        done = run_serd(["run", "--model", tiny_model_int8, "--source", DEMO_FLAC, "--bind", bind], cwd=tmp)
    assert done.returncode == 78, done.stderr
    assert_one_line_error(done.stderr, "publisher.bind", "allow_insecure")


def test_network_bind_with_allow_insecure_starts_and_warns(tiny_model_int8: Path, tmp: Path,
                                                           zmq_context: zmq.Context):
    port = free_tcp_port()
    config = write_config(tmp / "config.yaml",
                          file_config(tiny_model_int8, f"tcp://0.0.0.0:{port}", allow_insecure=True))
    with ServeProcess(["run", "--config", config], cwd=tmp, log_dir=tmp) as daemon:
        sub = Collector(sub_socket(zmq_context, f"tcp://127.0.0.1:{port}"))
        sub.wait_for(emotions_at_least(2), process=daemon, what="messages over 127.0.0.1")
        assert daemon.stop() == 0
        stderr = daemon.stderr_text()
    warnings = [line for line in stderr.splitlines() if "UNENCRYPTED" in line]
    assert len(warnings) == 1 and warnings[0].startswith("WARNING") and "0.0.0.0" in warnings[0], stderr


def test_network_bind_with_curve_starts_without_warning(tiny_model_int8: Path, tmp: Path,
                                                        zmq_context: zmq.Context):
    keys = make_keys(tmp / "keys", tmp)
    port = free_tcp_port()
    config = write_config(tmp / "config.yaml",
                          file_config(tiny_model_int8, f"tcp://0.0.0.0:{port}", curve=curve_section(keys)))
    with ServeProcess(["run", "--config", config], cwd=tmp, log_dir=tmp) as daemon:
        sub = Collector(sub_socket(zmq_context, f"tcp://127.0.0.1:{port}",
                                   CurveKeys(keys / "server.key", keys / "client.key_secret")))
        sub.wait_for(emotions_at_least(2), process=daemon, what="CURVE messages over 127.0.0.1")
        assert daemon.stop() == 0
        stderr = daemon.stderr_text()
    assert "UNENCRYPTED" not in stderr
    assert "(CURVE)" in stderr, stderr


# -- privacy ---------------------------------------------------------------------------------------

def documented_fields(schema: str) -> set[str]:
    """The keys of the README's example message of `schema`: the documented wire format."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    for block in re.findall(r"```json\n(.*?)```", readme, flags=re.S):
        if f'"{schema}"' in block:
            return set(json.loads(block))
    raise AssertionError(f"README.md has no example of {schema}")


def strace_works() -> bool:
    if shutil.which("strace") is None:
        return False
    probe = subprocess.run(["strace", "-f", "-qq", "-o", "/dev/null", "true"], capture_output=True, timeout=30)
    return probe.returncode == 0  # ptrace may be forbidden in a container


TRACED_CALLS = "open,openat,openat2,creat,mkdir,mkdirat,rename,renameat,renameat2,link,linkat,symlink,symlinkat," \
               "mknod,mknodat,truncate,bind"
WRITE_FLAGS = ("O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC", "O_APPEND")
OPEN_CALL = re.compile(r'^\d+\s+(open|openat|openat2|creat)\((?:AT_FDCWD|\d+<[^>]*>|\d+), "([^"]*)", ([^,)]*)')
ALLOWED_WRITES = ("/dev/null", "/dev/tty")


def filesystem_writes(trace: Path) -> list[str]:
    """Every traced call that could put something on a disk: opens for writing, new names, socket files.

    Allowed: /dev/null, and Python's own bytecode cache (compiled source, not data).
    """
    found = []
    for line in trace.read_text(encoding="utf-8", errors="replace").splitlines():
        if "__pycache__" in line:
            continue
        match = OPEN_CALL.match(line)
        if match:
            call, path, flags = match.groups()
            if (call == "creat" or any(f in flags for f in WRITE_FLAGS)) and path not in ALLOWED_WRITES:
                found.append(line)
            continue
        call = re.match(r"^\d+\s+(\w+)\(", line)
        if call is None or call.group(1) in ("open", "openat", "openat2"):
            continue  # "<... resumed>" lines and signals; opens were handled above
        if call.group(1) == "bind":
            if 'sun_path="' in line:  # a unix socket file (abstract names print as sun_path=@"...")
                found.append(line)
            continue
        found.append(line)  # mkdir, rename, link, symlink, mknod, truncate
    return found


def listing(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


def snapshot(directory: Path) -> dict[str, tuple[int, int, int]]:
    return {str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns, p.stat().st_mode)
            for p in directory.rglob("*")}


@pytest.fixture
def sandbox(tiny_model_int8: Path, tmp: Path):
    """Empty cwd, HOME and TMPDIR; config and model in a separate read-only directory."""
    dirs = {name: tmp / name for name in ("cwd", "home", "tmpdir", "readonly", "logs")}
    for path in dirs.values():
        path.mkdir()
    for suffix in (".tflite", ".json"):
        shutil.copy(tiny_model_int8.with_suffix(suffix), dirs["readonly"] / f"model{suffix}")
    shutil.copy(DEMO_FLAC, dirs["readonly"] / "demo.flac")
    port = free_tcp_port()
    config = {**file_config(dirs["readonly"] / "model.tflite", f"tcp://127.0.0.1:{port}")}
    config["source"] = {**config["source"], "path": str(dirs["readonly"] / "demo.flac")}
    write_config(dirs["readonly"] / "config.yaml", config)
    for path in dirs["readonly"].iterdir():
        path.chmod(0o444)
    dirs["readonly"].chmod(0o555)
    env = serd_env(HOME=str(dirs["home"]), TMPDIR=str(dirs["tmpdir"]), PYTHONDONTWRITEBYTECODE="1")
    before = snapshot(dirs["readonly"])
    yield {**dirs, "env": env, "endpoint": f"tcp://127.0.0.1:{port}", "config": dirs["readonly"] / "config.yaml"}
    dirs["readonly"].chmod(0o755)
    assert snapshot(dirs["readonly"]) == before, "the config/model directory changed"
    for name in ("cwd", "home", "tmpdir"):
        assert listing(dirs[name]) == [], f"serd left files in its {name}: {listing(dirs[name])}"


def strace_prefix(sandbox: dict, use_strace: bool) -> tuple[str, ...]:
    if not use_strace:
        return ()
    return ("strace", "-f", "-qq", "-e", f"trace={TRACED_CALLS}", "-e", "status=successful",
            "-o", str(sandbox["logs"] / "trace.txt"))


def daemon_pid(process: ServeProcess, use_strace: bool) -> int:
    """The serd process (under strace, strace's child)."""
    if not use_strace:
        return process.pid
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
    deadline = time.monotonic() + STARTUP_S
    while not (text := children.read_text().split()):
        assert time.monotonic() < deadline, "strace never started serd"
        time.sleep(0.05)
    return int(text[0])


USE_STRACE = strace_works()


@pytest.mark.parametrize("mode", ["realtime_sigterm", "fast_to_the_end"])
def test_daemon_writes_nothing_and_publishes_no_audio(sandbox: dict, zmq_context: zmq.Context, mode: str,
                                                      tiny_model_int8: Path):
    """Privacy: no file appears anywhere serd could write (cwd, HOME, TMPDIR, next to its config);
    under strace, no file is opened for writing at all. The messages carry results, not audio:
    exactly the documented fields, no arrays, small bodies."""
    args = ["run", "--config", sandbox["config"]] + (["--fast"] if mode == "fast_to_the_end" else [])
    with ServeProcess(args, cwd=sandbox["cwd"], log_dir=sandbox["logs"], env=sandbox["env"],
                      prefix=strace_prefix(sandbox, USE_STRACE)) as daemon:
        sub = Collector(sub_socket(zmq_context, sandbox["endpoint"]))
        if mode == "realtime_sigterm":
            # Past the first speech (the demo's first words start at 2 s): results with probabilities.
            sub.wait_for(lambda c: sum(m.speech for m in c.emotions) >= 3, process=daemon, what="speech windows")
            os.kill(daemon_pid(daemon, USE_STRACE), signal.SIGTERM)
            sub.wait_for(state_seen("stopping"), process=daemon, what="the stopping status")
        assert daemon.wait(STARTUP_S + MESSAGE_S) == 0, daemon.stderr_text()
        sub.drain()
        stderr = daemon.stderr_text()
    assert "Traceback" not in stderr

    if USE_STRACE:
        writes = filesystem_writes(sandbox["logs"] / "trace.txt")
        assert writes == [], "serd wrote to the filesystem:\n" + "\n".join(writes[:20])

    if mode == "realtime_sigterm":
        emotion_fields, status_fields = documented_fields("serd.emotion/1"), documented_fields("serd.status/1")
        labels = set(json.loads(tiny_model_int8.with_suffix(".json").read_text())["labels"])
        assert sub.bodies, "no messages"
        for body, message in zip(sub.bodies, sub.messages):
            assert len(body) < MAX_BODY_BYTES, f"a {len(body)}-byte message"
            data = json.loads(body)
            expected = emotion_fields if data["schema"] == "serd.emotion/1" else status_fields
            assert set(data) == expected, f"undocumented or missing fields: {set(data) ^ expected}"
            assert not any(isinstance(v, list) for v in data.values()), f"an array in {data}"
            for field in ("probs", "smoothed"):
                if isinstance(data.get(field), dict):
                    assert set(data[field]) == labels
                    assert all(isinstance(v, float | int) for v in data[field].values())


def test_analyze_writes_nothing(sandbox: dict):
    """`serd analyze` leaves no file in cwd, HOME, TMPDIR (the fixture checks), nor anywhere (strace)."""
    command = [*strace_prefix(sandbox, USE_STRACE), *serd_cmd("analyze", "--json", "--model",
                                                              sandbox["readonly"] / "model.tflite",
                                                              sandbox["readonly"] / "demo.flac")]
    done = subprocess.run(command, cwd=sandbox["cwd"], env=sandbox["env"], capture_output=True, text=True,
                          timeout=STARTUP_S + MESSAGE_S)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["windows"], "analyze produced no windows"
    if USE_STRACE:
        writes = filesystem_writes(sandbox["logs"] / "trace.txt")
        assert writes == [], "serd analyze wrote to the filesystem:\n" + "\n".join(writes[:20])
