"""How serd ends: Ctrl-C exits 130 (run, listen), SIGTERM and the end of a file exit 0, and an
ipc:// socket file never outlives the daemon. Real subprocesses, real signals, real sockets."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from conftest import RAVDESS_FIXTURES, SAMPLE_CLIPS
from helpers_daemon import (
    DEMO_FLAC,
    DaemonProcess,
    Subscriber,
    assert_no_traceback,
    ignore_sigint,
    run_serd,
    serd_cmd,
    serd_env,
    stopped,
)
from serd.config import EX_INTERRUPTED

CLIP = RAVDESS_FIXTURES / SAMPLE_CLIPS[0]
WAIT_S = 60.0
"""Generous: start-up loads a TFLite model on a machine that may be busy."""


def test_the_ipc_file_is_removed_at_the_end_of_a_file(workdir: Path):
    socket_file = workdir / "pub.ipc"
    done = run_serd(["run", "--fast", "--source", CLIP, "--bind", f"ipc://{socket_file}"], cwd=workdir)
    assert done.returncode == 0, done.stderr
    assert_no_traceback(done.stderr)
    assert not socket_file.exists(), "the ipc:// socket file was left behind"


@pytest.mark.parametrize("signum, exit_code", [(signal.SIGTERM, 0), (signal.SIGINT, EX_INTERRUPTED)],
                         ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_daemon_with_its_exit_code_and_no_ipc_file_left(workdir: Path, signum, exit_code):
    socket_file = workdir / "pub.ipc"
    endpoint = f"ipc://{socket_file}"
    with Subscriber(endpoint) as sub, DaemonProcess(["run", "--source", DEMO_FLAC, "--bind", endpoint],
                                                    cwd=workdir) as daemon:
        sub.collect_until(lambda messages: len(messages) >= 2, timeout_s=WAIT_S, process=daemon)
        assert socket_file.exists()
        daemon.send_signal(signum)
        sub.collect_until(stopped, timeout_s=WAIT_S, process=daemon)
        assert daemon.wait(timeout_s=WAIT_S) == exit_code, daemon.stderr_text()
        assert_no_traceback(daemon.stderr_text())
    assert not socket_file.exists(), "the ipc:// socket file was left behind"


def test_a_second_daemon_refused_on_a_live_ipc_endpoint_leaves_the_first_one_s_file(workdir: Path):
    """The clean-up removes only our own socket file, never one another daemon is serving on."""
    socket_file = workdir / "pub.ipc"
    endpoint = f"ipc://{socket_file}"
    with Subscriber(endpoint) as sub, DaemonProcess(["run", "--source", DEMO_FLAC, "--bind", endpoint],
                                                    cwd=workdir) as first:
        sub.collect_until(lambda messages: len(messages) >= 1, timeout_s=WAIT_S, process=first)
        second = run_serd(["run", "--source", CLIP, "--bind", endpoint], cwd=workdir)
        assert second.returncode == 1 and "cannot bind" in second.stderr, second.stderr
        assert socket_file.exists() and first.poll() is None
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout_s=WAIT_S) == 0, first.stderr_text()
    assert not socket_file.exists()


def test_ctrl_c_ends_listen_with_130(workdir: Path):
    listen = subprocess.Popen(serd_cmd("listen", "--json", "--connect", f"ipc://{workdir}/nobody.ipc"), cwd=workdir,
                              env=serd_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              preexec_fn=ignore_sigint)  # noqa: PLW1509
    try:
        first = listen.stderr.readline()  # listen is in its loop once it says where it waits
        assert first.startswith("waiting for messages on "), first
        listen.send_signal(signal.SIGINT)
        out, err = listen.communicate(timeout=WAIT_S)
    finally:
        if listen.poll() is None:
            listen.kill()
            listen.communicate(timeout=10)
    assert listen.returncode == EX_INTERRUPTED, err
    assert_no_traceback(err)
    assert out == ""


def test_ctrl_c_ends_the_dashboard_with_130(workdir: Path):
    dashboard = subprocess.Popen(serd_cmd("dashboard", "--listen", "127.0.0.1:0", "--connect", f"ipc://{workdir}/x.ipc"),
                                 cwd=workdir, env=serd_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                 text=True, preexec_fn=ignore_sigint)  # noqa: PLW1509
    try:
        for line in dashboard.stderr:  # serving once it says so
            if "serving on" in line:
                break
        dashboard.send_signal(signal.SIGINT)
        assert dashboard.wait(timeout=WAIT_S) == EX_INTERRUPTED
    finally:
        if dashboard.poll() is None:
            dashboard.kill()
            dashboard.wait(timeout=10)
    assert_no_traceback(dashboard.stderr.read())
