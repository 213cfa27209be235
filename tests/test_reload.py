"""SIGHUP reloads the config file (what `systemctl reload serd` sends).

A real `python -m serd run --config FILE` on the demo file in real time, a real SUB socket,
and a real unix datagram socket as $NOTIFY_SOCKET to see RELOADING=1 / READY=1 as systemd
would. The file is edited on disk between signals, as an admin would.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import zmq

from helpers_service import (
    DEMO_FLAC, Collector, NotifySocket, ServeProcess, emotions_at_least, serd_env, short_tmpdir, sub_socket,
    write_config,
)

START_GATE_DBFS = -55.0
"""The default gate: the demo's words (-50 to -24 dBFS) pass it, its -65 dBFS pauses do not."""
STRICT_GATE_DBFS = -20.0
"""Louder than anything in the demo: every window is `speech: false`."""
WINDOWS_AFTER = 8
"""Emotion messages to watch after a reload (4 s of audio: more than the demo's longest pause)."""


@pytest.fixture
def tmp():
    with short_tmpdir("serd-rld-") as path:
        yield path


@pytest.fixture
def zmq_context():
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


def settings(model: Path, tmp: Path, gate_dbfs: float = START_GATE_DBFS, bind: str | None = None) -> dict:
    return {
        "device_id": "reload",
        "model": str(model),
        "source": {"kind": "file", "path": str(DEMO_FLAC), "realtime": True},
        "analysis": {"gate_dbfs": gate_dbfs},
        "publisher": {"bind": bind or f"ipc://{tmp}/serd.ipc", "status_interval_s": 1.0},
    }


class Reloadable:
    """serd run --config FILE with a notify socket and a subscriber."""

    def __init__(self, tmp: Path, model: Path, context: zmq.Context) -> None:
        self.config = write_config(tmp / "config.yaml", settings(model, tmp))
        self.notify = NotifySocket(tmp / "notify.sock")
        self.daemon = ServeProcess(["run", "--config", self.config], cwd=tmp, log_dir=tmp,
                                   env=serd_env(NOTIFY_SOCKET=str(tmp / "notify.sock")))
        self.sub = Collector(sub_socket(context, f"ipc://{tmp}/serd.ipc"))

    def reload(self) -> float:
        """SIGHUP; wait for RELOADING=1 then READY=1; the wall-clock time the reload was over."""
        readies = len(self.notify.with_key("READY"))
        sent = time.monotonic()
        self.daemon.send_signal(signal.SIGHUP)
        reloading = self.notify.wait_for("RELOADING", since=sent, process=self.daemon)
        ready = self.notify.wait_for("READY", count=readies + 1, process=self.daemon)[-1]
        assert reloading[0][0] <= ready[0], "READY=1 came before RELOADING=1"
        assert int(reloading[0][1]["MONOTONIC_USEC"]) > 0, "RELOADING=1 without MONOTONIC_USEC"
        return time.time()

    def emotions_after(self, wall_time: float):
        return [m for m in self.sub.emotions if m.time > wall_time]

    def close(self) -> None:
        self.daemon.close()
        self.notify.close()


@pytest.fixture
def serd(tiny_model_int8: Path, tmp: Path, zmq_context: zmq.Context):
    running = Reloadable(tmp, tiny_model_int8, zmq_context)
    yield running
    running.close()


def assert_contiguous(c: Collector) -> None:
    assert [m.seq for m in c.emotions] == list(range(len(c.emotions))), "emotion seq not contiguous"


def test_sighup_applies_a_new_gate(serd: Reloadable, tiny_model_int8: Path, tmp: Path):
    serd.sub.wait_for(lambda c: any(m.speech for m in c.emotions), process=serd.daemon, what="a speech window")
    write_config(serd.config, settings(tiny_model_int8, tmp, gate_dbfs=STRICT_GATE_DBFS))
    reloaded_at = serd.reload()
    serd.sub.wait_for(lambda c: len(serd.emotions_after(reloaded_at)) >= WINDOWS_AFTER, process=serd.daemon,
                      what="windows after the reload")
    after = serd.emotions_after(reloaded_at)
    assert not any(m.speech for m in after), [(m.start_s, m.level_dbfs, m.speech) for m in after]
    # The old gate would have let some of them through: the change, not the audio, silenced them.
    assert any(m.level_dbfs > START_GATE_DBFS for m in after), [(m.start_s, m.level_dbfs) for m in after]
    assert serd.daemon.stop() == 0
    stderr = serd.daemon.stderr_text()
    assert "configuration reloaded" in stderr and "Traceback" not in stderr
    assert "restart serd" not in stderr, "an analysis change needs no restart"
    assert_contiguous(serd.sub)


ALIAS_BOMB = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{name}: &{name} [{','.join([f'*{prev}'] * 9)}]\n" for prev, name in zip("abcdefgh", "bcdefghi"))
"""Issue 13, finding 9: nested aliases that expand to 9**9 strings (GBs) from a few hundred bytes."""


@pytest.mark.parametrize("bad_text, names", [
    ("analysis: {gate_dbfs: 5}\n", "analysis.gate_dbfs"),
    ("analysis: {gate_dbz: -20}\n", "analysis.gate_dbz"),
    ("analysis: {gate_dbfs: -20\n", "not valid YAML"),
    (ALIAS_BOMB, "aliases"),
], ids=["out_of_range", "unknown_key", "broken_yaml", "alias_bomb"])
def test_invalid_edit_keeps_the_running_config(serd: Reloadable, tiny_model_int8: Path, tmp: Path,
                                               bad_text: str, names: str):
    serd.sub.wait_for(emotions_at_least(2), process=serd.daemon, what="emotion messages")
    others = {key: value for key, value in settings(tiny_model_int8, tmp).items() if key != "analysis"}
    write_config(serd.config, others)
    with open(serd.config, "a", encoding="utf-8") as config:
        config.write(bad_text)
    reloaded_at = serd.reload()
    # Still publishing, still on the old gate: loud windows are speech.
    serd.sub.wait_for(lambda c: len(serd.emotions_after(reloaded_at)) >= WINDOWS_AFTER, process=serd.daemon,
                      what="windows after the refused reload")
    after = serd.emotions_after(reloaded_at)
    loud = [m for m in after if m.level_dbfs > START_GATE_DBFS + 1]
    assert loud and all(m.speech for m in loud), [(m.start_s, m.level_dbfs, m.speech) for m in after]
    assert serd.daemon.poll() is None
    assert serd.daemon.stop() == 0
    stderr = serd.daemon.stderr_text()
    errors = [line for line in stderr.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1 and names in errors[0] and "keeping the running config" in errors[0], stderr
    assert "Traceback" not in stderr
    assert_contiguous(serd.sub)


def test_changed_bind_needs_a_restart(serd: Reloadable, tiny_model_int8: Path, tmp: Path):
    serd.sub.wait_for(emotions_at_least(2), process=serd.daemon, what="emotion messages")
    write_config(serd.config, settings(tiny_model_int8, tmp, bind=f"ipc://{tmp}/elsewhere.ipc"))
    reloaded_at = serd.reload()
    # Still on the old endpoint.
    serd.sub.wait_for(lambda c: len(serd.emotions_after(reloaded_at)) >= 2, process=serd.daemon,
                      what="messages on the old endpoint")
    assert not (tmp / "elsewhere.ipc").exists()
    assert serd.daemon.stop() == 0
    stderr = serd.daemon.stderr_text()
    warnings = [line for line in stderr.splitlines() if "restart serd" in line]
    assert len(warnings) == 1 and warnings[0].startswith("WARNING") and "publisher" in warnings[0], stderr
    assert_contiguous(serd.sub)


def test_sighup_without_a_config_file_is_harmless(tiny_model_int8: Path, tmp: Path, zmq_context: zmq.Context):
    """Nothing to reload, but SIGHUP's default action (terminate) must not apply either."""
    with ServeProcess(["run", "--model", tiny_model_int8, "--source", DEMO_FLAC, "--bind", f"ipc://{tmp}/s.ipc"],
                      cwd=tmp, log_dir=tmp) as daemon:
        sub = Collector(sub_socket(zmq_context, f"ipc://{tmp}/s.ipc"))
        sub.wait_for(emotions_at_least(2), process=daemon)
        daemon.send_signal(signal.SIGHUP)
        sub.wait_for(emotions_at_least(len(sub.emotions) + 4), process=daemon, what="messages after SIGHUP")
        assert daemon.stop() == 0
        assert "Traceback" not in daemon.stderr_text()
