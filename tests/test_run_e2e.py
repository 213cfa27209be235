"""`serd run` end to end: a real subprocess, a real SUB socket, real audio, the tiny real model.

The slow-joiner problem of ZeroMQ PUB/SUB (messages published before a subscription
reaches the publisher are dropped) is handled honestly, never by tolerating gaps:

- file sources are paced in real time (the default), the SUB socket is connected before
  the daemon starts, and the first window completes only 2 s after the source starts,
  so "contiguous seq from 0" is a real check;
- stdin runs feed audio only after a status heartbeat has arrived, which proves the
  subscription is in place;
- the `--fast` run of a long file checks contiguity from the first message received.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile
import soxr

from helpers_daemon import (
    DEMO_FLAC,
    HOP_S,
    MODEL_RATE,
    WINDOW_S,
    DaemonProcess,
    Labels,
    Subscriber,
    analyze_json,
    assert_emotion_stream,
    assert_no_traceback,
    assert_windows_match,
    clip_then_quiet,
    emotion_count_at_least,
    free_tcp_port,
    run_serd,
    serd_cmd,
    serd_env,
    serd_lines,
    load_clip,
    short_tmpdir,
    stopped,
    write_config,
    write_pcm16_wav,
)
from serd.config import EX_INTERRUPTED

DEVICE = "test-dev"
CLIP_S = 3.5
QUIET_S = 3.0
"""3.5 s of a loud RAVDESS clip, then 3 s of a -70 dBFS floor: speech windows, then non-speech ones."""


@pytest.fixture
def workdir():
    with short_tmpdir() as path:
        yield path


@pytest.fixture(scope="module")
def audio_dir():
    with short_tmpdir("serd-audio-") as path:
        yield path


@pytest.fixture(scope="module")
def speech_then_quiet(sample_clip_paths, audio_dir) -> np.ndarray:
    """float32 samples exactly as a 16-bit file holds them."""
    # Not clip 1: Actor 6 shouting (strong angry) is no voice to Silero (benchmarks/RESULTS.md).
    samples = clip_then_quiet(load_clip(sample_clip_paths[3]), CLIP_S, QUIET_S)
    return write_pcm16_wav(audio_dir / "speech.wav", samples).astype(np.float32) / 32768.0


@pytest.fixture(scope="module")
def speech_wav(speech_then_quiet, audio_dir) -> Path:
    return audio_dir / "speech.wav"


@pytest.fixture(scope="module")
def speech_analysis(tiny_model_int8, speech_wav, audio_dir) -> dict:
    (result,) = analyze_json(tiny_model_int8, [speech_wav], audio_dir)
    windows = result["windows"]
    # The premise of the comparisons below: this file yields both kinds of window.
    assert any(w["speech"] for w in windows) and not all(w["speech"] for w in windows), windows
    return result


def expected_window_count(n_samples: int) -> int:
    window, hop = int(WINDOW_S * MODEL_RATE), int(HOP_S * MODEL_RATE)
    return (n_samples - window) // hop + 1


def final_status(sub: Subscriber):
    finals = [s for s in sub.statuses if s.state == "stopping"]
    assert len(finals) == 1, [s.state for s in sub.statuses]
    assert sub.statuses[-1] is finals[0], "a message arrived after the final status"
    return finals[0]


# -- a file in real time ---------------------------------------------------------------------------

@pytest.mark.slow
def test_file_run_publishes_every_window_like_analyze(tiny_model_int8, speech_wav, speech_then_quiet,
                                                      speech_analysis, workdir):
    endpoint = f"ipc://{workdir}/pub.ipc"
    config = write_config(workdir / "serd.yaml", "device_id: from-config\npublisher:\n  status_interval_s: 1.0\n")
    with Subscriber(endpoint) as sub:  # connected before the daemon binds
        with DaemonProcess(["run", "--config", config, "--source", speech_wav, "--bind", endpoint,
                            "--model", tiny_model_int8, "--device-id", DEVICE], cwd=workdir) as daemon:
            sub.collect_until(stopped, process=daemon)
            assert daemon.wait() == 0, daemon.stderr_text()
            stderr = daemon.stderr_text()
    assert_no_traceback(stderr)

    labels = Labels.of(tiny_model_int8).names
    emotions = sub.emotions
    assert len(emotions) == expected_window_count(speech_then_quiet.size)
    assert_emotion_stream(emotions, labels, DEVICE)  # --device-id overrides the config file's device_id
    assert any(m.speech for m in emotions) and not all(m.speech for m in emotions)
    assert {m.model for m in emotions} == {"tiny-emotion6-int8"}

    statuses = sub.statuses
    assert all(s.schema == "serd.status/1" and s.device == DEVICE for s in statuses)
    assert [s.seq for s in statuses] == list(range(statuses[0].seq, statuses[0].seq + len(statuses)))
    assert "running" in [s.state for s in statuses]
    final = final_status(sub)
    assert final.windows == final.published == len(emotions)
    assert final.dropped == 0 and final.overruns == 0
    assert final.source == f"file:{speech_wav}"

    # The same audio gives the same probabilities in `run` and `analyze`.
    assert_windows_match(emotions, speech_analysis["windows"])


@pytest.mark.slow
@pytest.mark.parametrize("signum, exit_code", [(signal.SIGTERM, 0), (signal.SIGINT, EX_INTERRUPTED)],
                         ids=["SIGTERM", "SIGINT"])
def test_signal_mid_stream_stops_cleanly(tiny_model_int8, workdir, signum, exit_code):
    """Both stop cleanly (final status, every window published); Ctrl-C's exit code says it was interrupted."""
    endpoint = f"ipc://{workdir}/pub.ipc"
    total_windows = expected_window_count(soundfile.info(str(DEMO_FLAC)).frames)
    with Subscriber(endpoint) as sub:
        with DaemonProcess(["run", "--source", DEMO_FLAC, "--bind", endpoint, "--model", tiny_model_int8,
                            "--device-id", DEVICE], cwd=workdir) as daemon:
            sub.collect_until(emotion_count_at_least(3), process=daemon)
            daemon.send_signal(signum)
            sub.collect_until(stopped, process=daemon)
            assert daemon.wait(timeout_s=30) == exit_code, daemon.stderr_text()
            stderr = daemon.stderr_text()
    assert_no_traceback(stderr)
    assert_emotion_stream(sub.emotions, Labels.of(tiny_model_int8).names, DEVICE)
    final = final_status(sub)
    assert final.windows == final.published == len(sub.emotions)
    assert final.windows < total_windows, "the daemon ran to the end of the file instead of stopping"


@pytest.mark.slow
def test_status_heartbeat_during_a_run(tiny_model_int8, speech_wav, workdir):
    endpoint = f"ipc://{workdir}/pub.ipc"
    config = write_config(workdir / "serd.yaml", "publisher:\n  status_interval_s: 0.5\n")
    with Subscriber(endpoint) as sub:
        with DaemonProcess(["run", "--config", config, "--source", speech_wav, "--bind", endpoint,
                            "--model", tiny_model_int8, "--device-id", DEVICE], cwd=workdir) as daemon:
            sub.collect_until(stopped, process=daemon)
            assert daemon.wait() == 0, daemon.stderr_text()
    statuses = sub.statuses
    running = [s for s in statuses if s.state == "running"]
    # The file plays for 6.5 s of real time: about a dozen heartbeats; a few are enough to prove them.
    assert len(running) >= 4, [s.state for s in statuses]
    assert [s.seq for s in statuses] == list(range(statuses[0].seq, statuses[0].seq + len(statuses)))
    uptimes = [s.uptime_s for s in statuses]
    assert uptimes == sorted(uptimes)
    windows = [s.windows for s in statuses]
    assert windows == sorted(windows) and windows[-1] == len(sub.emotions)
    for s in running:
        assert s.model == "tiny-emotion6-int8" and s.source == f"file:{speech_wav}"
        assert s.rss_mb > 0 and s.cpu_percent >= 0 and s.version
        assert s.published <= s.windows


@pytest.mark.parametrize("name, content, reason", [
    ("nope.wav", None, "no such file"),
    # Named like the daemon's own "end of <file>" message: still a failure, not a clean end.
    ("end of take.wav", b"RIFF, but not really", "not a readable audio file"),
], ids=["missing", "unreadable"])
def test_unusable_source_file_is_one_line_and_exit_1(tiny_model_int8, workdir, name, content, reason):
    if content is not None:
        (workdir / name).write_bytes(content)
    endpoint = f"ipc://{workdir}/pub.ipc"
    with Subscriber(endpoint) as sub:
        with DaemonProcess(["run", "--source", name, "--fast", "--bind", endpoint,
                            "--model", tiny_model_int8], cwd=workdir) as daemon:
            assert daemon.wait() == 1
            stderr = daemon.stderr_text()
    assert_no_traceback(stderr)
    # Refused before anything starts, in the same words as `serd analyze`: one line, nothing else.
    (line,) = stderr.splitlines()
    assert line.startswith(f"serd: {name}: {reason}"), stderr
    assert not sub.emotions


def test_a_fifo_source_is_refused_without_waiting_for_a_writer(tiny_model_int8, workdir):
    """Issue 13, finding 10: open() on a FIFO blocks until a writer comes; serd refuses non-regular files."""
    os.mkfifo(workdir / "audio.fifo")
    done = run_serd(["run", "--source", "audio.fifo", "--bind", f"ipc://{workdir}/pub.ipc",
                     "--model", tiny_model_int8], workdir, timeout=60)
    assert done.returncode == 1, done.stderr
    assert_no_traceback(done.stderr)
    # checked before anything loads (issue 14): one line in serd's error format, nothing else
    assert serd_lines(done.stderr) == [done.stderr.strip()], done.stderr
    assert done.stderr.startswith("serd: audio.fifo: not a regular file"), done.stderr


def test_stdin_source_with_stdin_closed_stops_cleanly(tiny_model_int8, workdir):
    """Issue 13, finding 10: `serd run --source - <&-` raised AttributeError and sent no final status."""
    done = subprocess.run(serd_cmd("run", "--source", "-", "--bind", f"ipc://{workdir}/pub.ipc",
                                   "--model", tiny_model_int8), cwd=workdir, env=serd_env(),
                          stdin=subprocess.DEVNULL, preexec_fn=lambda: os.close(0),  # noqa: PLW1509
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert_no_traceback(done.stderr)
    errors = [line for line in serd_lines(done.stderr) if line.startswith("ERROR")]
    assert len(errors) == 1 and "stdin is closed" in errors[0], done.stderr
    assert "stopping after 0 windows" in done.stderr


# -- stdin -----------------------------------------------------------------------------------------

def run_stdin(model: Path, workdir: Path, pcm: bytes, *flags: str) -> tuple[Subscriber, int, str]:
    """`serd run --source -`: feed `pcm` only once a heartbeat proves the subscription is in place."""
    endpoint = f"tcp://127.0.0.1:{free_tcp_port()}"
    config = write_config(workdir / "serd.yaml", "publisher:\n  status_interval_s: 0.2\n")
    sub = Subscriber(endpoint)
    try:
        with DaemonProcess(["run", "--config", config, "--source", "-", *flags, "--bind", endpoint,
                            "--model", model, "--device-id", DEVICE], cwd=workdir, stdin=subprocess.PIPE) as daemon:
            sub.collect_until(lambda messages: len(messages) > 0, process=daemon)
            assert not sub.emotions
            writer = threading.Thread(target=_write_and_close, args=(daemon.process.stdin, pcm), daemon=True)
            writer.start()
            sub.collect_until(stopped, process=daemon)
            writer.join(timeout=30)
            code = daemon.wait()
            return sub, code, daemon.stderr_text()
    finally:
        sub.close()


def _write_and_close(pipe, data: bytes) -> None:
    try:
        pipe.write(data)
    finally:
        pipe.close()


def test_stdin_16k_mono_matches_analyze(tiny_model_int8, speech_then_quiet, speech_analysis, workdir):
    pcm = np.round(speech_then_quiet * 32768.0).astype("<i2")  # the very samples of speech.wav
    sub, code, stderr = run_stdin(tiny_model_int8, workdir, pcm.tobytes(), "--rate", "16000")
    assert code == 0, stderr
    assert_no_traceback(stderr)
    emotions = sub.emotions
    assert_emotion_stream(emotions, Labels.of(tiny_model_int8).names, DEVICE)
    final = final_status(sub)
    assert final.windows == final.published == len(emotions) and final.source == "stdin:s16le/16000Hz/1ch"
    assert_windows_match(emotions, speech_analysis["windows"])


def test_stdin_48k_stereo_resampled(tiny_model_int8, speech_then_quiet, workdir):
    mono48 = soxr.resample(speech_then_quiet, MODEL_RATE, 48000)
    stereo = np.stack([mono48, 0.5 * mono48], axis=1)  # different channels: the downmix is their mean
    pcm = np.clip(np.round(stereo * 32768.0), -32768, 32767).astype("<i2")
    soundfile.write(str(workdir / "stereo48.wav"), pcm, 48000, subtype="PCM_16")
    sub, code, stderr = run_stdin(tiny_model_int8, workdir, pcm.tobytes(), "--rate", "48000", "--channels", "2")
    assert code == 0, stderr
    assert_no_traceback(stderr)
    emotions = sub.emotions
    assert_emotion_stream(emotions, Labels.of(tiny_model_int8).names, DEVICE)
    final = final_status(sub)
    assert final.windows == final.published == len(emotions) and final.source == "stdin:s16le/48000Hz/2ch"

    # Against `analyze` of the same 48 kHz stereo samples: both downmix and resample with a streaming
    # soxr at the same quality, so the samples are identical; the file reader flushes the resampler at
    # the end while a live stream holds its last ~16 ms back, which may cost the stream its last window.
    (reference,) = analyze_json(tiny_model_int8, [workdir / "stereo48.wav"], workdir)
    windows = reference["windows"]
    assert len(windows) - 1 <= len(emotions) <= len(windows)
    assert_windows_match(emotions, windows[: len(emotions)])


# -- a subscriber that never reads -----------------------------------------------------------------

LONG_INPUT_S = 2400.0
"""40 minutes of the demo: a stream several times what a never-reading subscriber's path can buffer."""
SNDHWM = 1000
"""The shipped default (config.yaml): the headroom a reading subscriber has when it is briefly starved."""


@pytest.mark.slow
def test_slow_subscriber_never_stalls_the_daemon(tiny_model_int8, workdir):
    demo, rate = soundfile.read(str(DEMO_FLAC), dtype="int16")
    long_path = workdir / "long.flac"
    looped = np.tile(demo, int(np.ceil(LONG_INPUT_S * rate / demo.size)))
    soundfile.write(str(long_path), looped, rate, subtype="PCM_16")
    expected = expected_window_count(looped.size)
    del looped

    endpoint = f"ipc://{workdir}/pub.ipc"
    with Subscriber(endpoint, rcvhwm=1, rcvbuf=1024) as lazy, Subscriber(endpoint) as reader:
        with DaemonProcess(["run", "--source", long_path, "--fast", "--bind", endpoint,
                            "--model", tiny_model_int8, "--device-id", DEVICE], cwd=workdir) as daemon:
            reader.collect_until(stopped, timeout_s=300, process=daemon)
            assert daemon.wait(timeout_s=60) == 0, daemon.stderr_text()
            stderr = daemon.stderr_text()
        assert lazy.socket.poll(0), "the lazy subscriber never got a message: it was not connected"
    assert_no_traceback(stderr)
    final = final_status(reader)
    assert final.windows == final.published == expected, "publishing was held up or dropped at the daemon"

    # --fast may outrun the subscription (slow joiner), so contiguity is checked from the first message
    # received; from there on the reading subscriber must lose nothing, to the very last window.
    emotions = reader.emotions
    assert emotions and emotions[-1].seq == expected - 1
    assert_emotion_stream(emotions, Labels.of(tiny_model_int8).names, DEVICE, first_seq=emotions[0].seq)
    assert len(emotions) > expected // 2

    # The premise: the stream was far larger than what the lazy subscriber's path can buffer (kernel
    # socket buffers, ZeroMQ's batches, the high-water mark), so its queue really filled up and ZeroMQ
    # had to drop its share while the daemon carried on.
    wmem = int(Path("/proc/sys/net/core/wmem_default").read_text())
    rmem = int(Path("/proc/sys/net/core/rmem_default").read_text())
    biggest = max(len(json.dumps(m.to_dict())) for m in emotions) + 64
    capacity = wmem + rmem + 4 * 8192 + (SNDHWM + 1) * biggest
    published_bytes = reader.frame_bytes * expected / len(emotions)
    assert published_bytes > 1.2 * capacity, (published_bytes, capacity)


def test_file_shorter_than_a_window_gets_one_padded_window_like_analyze(tiny_model_int8, speech_then_quiet, workdir):
    """A 1.2 s file: `run` zero-pads it to one window at the end of the file, as `analyze` does."""
    short = workdir / "short.wav"
    write_pcm16_wav(short, speech_then_quiet[: int(1.2 * MODEL_RATE)])
    endpoint = f"ipc://{workdir}/short.ipc"
    with Subscriber(endpoint) as sub:
        with DaemonProcess(["run", "--source", short, "--bind", endpoint, "--model", tiny_model_int8,
                            "--device-id", DEVICE], cwd=workdir) as daemon:
            sub.collect_until(stopped, process=daemon)
            assert daemon.wait() == 0, daemon.stderr_text()
    analysis = analyze_json(tiny_model_int8, [short], workdir)[0]
    assert len(sub.emotions) == len(analysis["windows"]) == 1
    assert_windows_match(sub.emotions, analysis["windows"])
