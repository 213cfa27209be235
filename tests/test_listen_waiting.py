"""`serd listen` says where it waits, and says so when nothing came before --timeout."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import time
from pathlib import Path

import zmq

from helpers_daemon import assert_no_traceback, free_tcp_port, serd_cmd, serd_env
from serd.messages import StatusMessage, encode

WAIT_S = 60.0


def test_json_mode_says_where_it_waits_on_stderr_and_keeps_stdout_json(workdir: Path):
    endpoint = f"tcp://127.0.0.1:{free_tcp_port()}"
    pub = zmq.Context.instance().socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(endpoint)
    listen = subprocess.Popen(serd_cmd("listen", "--json", "--connect", endpoint, "--timeout", "30"), cwd=workdir,
                              env=serd_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert listen.stderr.readline() == f"waiting for messages on {endpoint} …\n"
        seq = 0
        deadline = time.monotonic() + WAIT_S
        while not select.select([listen.stdout], [], [], 0.1)[0]:  # until the subscription is in place
            assert time.monotonic() < deadline and listen.poll() is None, "serd listen printed nothing"
            pub.send_multipart(encode(StatusMessage(device="d", seq=seq, time=time.time(), state="running",
                                                    uptime_s=1.0, source="file:x", model="m")))
            seq += 1
        first = listen.stdout.readline()
        listen.terminate()
        out, err = listen.communicate(timeout=WAIT_S)
    finally:
        pub.close()
        if listen.poll() is None:
            listen.kill()
    assert_no_traceback(err)
    for line in [first, *out.splitlines()]:
        assert json.loads(line)["schema"] == "serd.status/1"


def test_timeout_with_nothing_received_says_so_and_fails(workdir: Path):
    endpoint = f"ipc://{workdir}/nobody.ipc"
    done = subprocess.run(serd_cmd("listen", "--json", "--connect", endpoint, "--timeout", "1"), cwd=workdir,
                          env=serd_env(), capture_output=True, text=True, timeout=WAIT_S)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"waiting for messages on {endpoint} …",
        f"serd: {endpoint}: nothing received within 1 s (is serd run publishing there? see --connect)",
    ]


def test_the_live_view_shows_the_endpoints_while_waiting(workdir: Path):
    endpoints = [f"ipc://{workdir}/a.ipc", f"ipc://{workdir}/b.ipc"]
    leader, follower = pty.openpty()
    try:
        listen = subprocess.Popen(serd_cmd("listen", "--connect", endpoints[0], "--connect", endpoints[1],
                                           "--timeout", "2"),
                                  cwd=workdir, env=serd_env(), stdin=subprocess.DEVNULL, stdout=follower,
                                  stderr=subprocess.PIPE)
        os.close(follower)
        screen = bytearray()
        while True:
            ready = select.select([leader], [], [], WAIT_S)[0]
            try:
                chunk = os.read(leader, 65536) if ready else b""
            except OSError:  # the terminal closed with the process
                chunk = b""
            if not chunk:
                break
            screen.extend(chunk)
        assert listen.wait(timeout=WAIT_S) == 1
        err = listen.stderr.read().decode()
    finally:
        os.close(leader)
    assert f"waiting for messages on {endpoints[0]}, {endpoints[1]} …" in screen.decode("utf-8", "replace")
    assert "nothing received within 2 s" in err
