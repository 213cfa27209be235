"""Audio in: file replay, raw PCM on stdin, and the microphone against a fake capture device.

The microphone tests need a capture device with a real clock inside a container that has no
sound card. What works (Debian bookworm, alsa-lib 1.2.8, PortAudio 19.6):

    apt-get install -y libportaudio2 alsa-utils pulseaudio pulseaudio-utils libasound2-plugins

- a PulseAudio server started by the test (no system config, its own socket, a null sink);
- an `.asoundrc` in a temporary HOME defining `fakemic`, an ALSA `file` plugin device whose
  `infile` is the test audio (raw float32, 16 kHz, mono: the format serd asks PortAudio for)
  and whose slave is the null sink's monitor through the ALSA `pulse` plugin. The slave is the
  clock; the `file` plugin overwrites what it captures with the infile's samples, so serd hears
  exactly the test audio, in real time, through PortAudio's ALSA host API.

What does not work: the `file` plugin over the ALSA `null` PCM alone. `null` has no clock:
`arecord -D fakemic -d 3` returns in milliseconds and PortAudio's callback delivers thousands of
seconds of audio per second. A `plug` in front of the `file` plugin (to capture s16 raw data) is
listed by PortAudio but delivers no frames, and an `lfloat` one is not listed at all.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from helpers_daemon import (
    MODEL_RATE,
    DaemonProcess,
    Labels,
    Subscriber,
    analyze_json,
    assert_emotion_stream,
    assert_no_traceback,
    assert_windows_match,
    clip_then_quiet,
    emotion_count_at_least,
    load_clip,
    run_serd,
    serd_env,
    serd_lines,
    short_tmpdir,
    stopped,
    write_pcm16_wav,
)
from serd.audiofile import read_audio
from serd.config import SourceSettings
from serd.sources import (
    SourceError,
    PCM16_SCALE,
    AudioBlock,
    BlockQueue,
    Converter,
    EndOfStream,
    FileSource,
    MicSource,
    StdinSource,
    make_source,
)

DEVICE = "test-dev"
TIMEOUT_S = 60.0


def drain(queue: BlockQueue, timeout_s: float = TIMEOUT_S) -> tuple[list[AudioBlock], EndOfStream]:
    """Blocks until the end of the stream (fail on timeout)."""
    blocks = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        item = queue.get(timeout=0.5)
        if isinstance(item, AudioBlock):
            blocks.append(item)
        elif isinstance(item, EndOfStream):
            return blocks, item
    raise AssertionError(f"no end of stream within {timeout_s} s ({len(blocks)} blocks)")


@pytest.fixture(scope="module")
def clip_wav(sample_clip_paths):
    with short_tmpdir("serd-src-") as d:
        path = d / "clip.wav"
        # 44.1 kHz stereo: the file source has to resample and downmix.
        samples = load_clip(sample_clip_paths[0], 44100)
        soundfile.write(str(path), np.stack([samples, 0.25 * samples], axis=1), 44100, subtype="FLOAT")
        yield path


# -- the bounded queue ---------------------------------------------------------------------------

def test_block_queue_drops_and_counts_for_live_sources_but_waits_for_files():
    queue = BlockQueue(3)
    for i in range(5):
        queue.offer(i)  # a live callback must never wait
    assert queue.dropped == 2 and queue.qsize() == 3
    stop = threading.Event()
    stop.set()
    assert queue.put("late", stop) is False  # full and asked to stop: gives up instead of hanging
    assert [queue.get(0.1) for _ in range(3)] == [0, 1, 2]
    assert queue.get(0.05) is None
    assert queue.put("x", threading.Event()) is True and queue.get(0.1) == "x"


# -- file ----------------------------------------------------------------------------------------

def test_file_source_fast_delivers_exactly_what_analyze_reads(clip_wav):
    source = FileSource(str(clip_wav), MODEL_RATE, realtime=False, block_s=0.1)
    queue = BlockQueue(10)  # smaller than the file: the reader must wait for room, not drop
    source.start(queue)
    blocks, end = drain(queue)
    source.stop()
    assert end.reason == f"end of {clip_wav}" and not end.failed
    assert queue.dropped == 0
    assert all(b.samples.ndim == 2 and b.samples.shape[1] == 1 for b in blocks)
    assert all(b.samples.shape[0] <= 1600 for b in blocks)
    received = np.concatenate([source.to_model_rate(b.samples) for b in blocks])
    np.testing.assert_array_equal(received, read_audio(clip_wav, MODEL_RATE))


def test_file_source_paces_in_real_time(clip_wav):
    seconds = 1.5
    with short_tmpdir() as d:
        path = d / "short.wav"
        write_pcm16_wav(path, read_audio(clip_wav, MODEL_RATE)[: int(seconds * MODEL_RATE)])
        source = FileSource(str(path), MODEL_RATE, realtime=True, block_s=0.1)
        queue = BlockQueue(100)
        started = time.monotonic()
        source.start(queue)
        blocks, end = drain(queue)
        elapsed = time.monotonic() - started
        source.stop()
    # A lower bound only (a busy machine is slower, never faster): the audio cannot come early.
    assert elapsed >= seconds - 0.1 - 0.02
    times = [b.captured_at for b in blocks]
    assert times == sorted(times) and times[-1] - times[0] >= seconds - 0.2 - 0.02


def test_file_source_stops_promptly_when_asked(clip_wav):
    source = FileSource(str(clip_wav), MODEL_RATE, realtime=True, block_s=0.1)
    queue = BlockQueue(100)
    source.start(queue)
    assert isinstance(queue.get(timeout=10), AudioBlock)
    source.stop()
    assert not source._thread.is_alive()


def test_file_source_refuses_an_unreadable_file_at_start():
    """The header is read in start(), so a bad file fails there, before any thread runs."""
    with short_tmpdir() as d:
        bad = d / "bad.wav"
        bad.write_text("not audio")
        source = FileSource(str(bad), MODEL_RATE, realtime=False, block_s=0.1)
        queue = BlockQueue(10)
        with pytest.raises(SourceError, match="not a readable audio file") as raised:
            source.start(queue)
    assert "bad.wav" in str(raised.value)
    assert queue.get(timeout=0.2) is None  # nothing was queued


# -- stdin ---------------------------------------------------------------------------------------

def feed_pipe(data: bytes, chunk_sizes: list[int], buffered: bool = True):
    """A real pipe, written in awkward pieces (frames split across writes) by a thread.

    `buffered=False` reads it unbuffered, where a read returns whatever has arrived: frames then
    really are split across reads (`sys.stdin.buffer` waits for full reads until the end).
    """
    read_fd, write_fd = os.pipe()

    def writer() -> None:
        with os.fdopen(write_fd, "wb", buffering=0) as out:
            offset, i = 0, 0
            while offset < len(data):
                size = chunk_sizes[i % len(chunk_sizes)]
                out.write(data[offset : offset + size])
                offset += size
                i += 1
                if not buffered:
                    time.sleep(0.0005)  # let the reader catch up, so that reads return odd pieces

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    return os.fdopen(read_fd, "rb", buffering=-1 if buffered else 0), thread


@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "raw"])
@pytest.mark.parametrize("channels", [1, 2])
def test_stdin_source_reassembles_frames_split_across_reads(channels, buffered):
    rng = np.random.default_rng(3)
    pcm = rng.integers(-32768, 32767, size=(48_017, channels), dtype=np.int16)
    stream, thread = feed_pipe(pcm.astype("<i2").tobytes(), [1, 3, 777, 5, 4096], buffered)
    source = StdinSource(MODEL_RATE, channels, MODEL_RATE, block_s=0.1, stream=stream)
    queue = BlockQueue(1000)
    source.start(queue)
    blocks, end = drain(queue)
    thread.join(timeout=10)
    source.stop()
    assert end.reason == "end of stdin" and not end.failed
    received = np.concatenate([b.samples for b in blocks])
    assert received.shape == pcm.shape and received.dtype == np.float32
    np.testing.assert_array_equal(received, pcm.astype(np.float32) * PCM16_SCALE)
    mono = np.concatenate([source.to_model_rate(b.samples) for b in blocks])
    np.testing.assert_allclose(mono, pcm.astype(np.float32).mean(axis=1) * PCM16_SCALE, atol=1e-7)


def test_stdin_source_at_48k_stereo_is_resampled_to_the_model_rate():
    seconds, tone_hz = 2.0, 440.0
    t = np.arange(int(seconds * 48000)) / 48000
    tone = 0.5 * np.sin(2 * np.pi * tone_hz * t)
    pcm = np.round(np.stack([tone, -0.5 * tone], axis=1) * 32767).astype("<i2")
    stream, thread = feed_pipe(pcm.tobytes(), [9600])
    source = StdinSource(48000, 2, MODEL_RATE, block_s=0.1, stream=stream)
    queue = BlockQueue(1000)
    source.start(queue)
    blocks, _ = drain(queue)
    thread.join(timeout=10)
    mono = np.concatenate([source.to_model_rate(b.samples) for b in blocks])
    # A streaming resampler holds back its filter delay; the rest arrives at a third of the rate.
    assert int(seconds * MODEL_RATE) - 600 <= mono.size <= int(seconds * MODEL_RATE)
    spectrum = np.abs(np.fft.rfft(mono[2000:18000] if mono.size >= 18000 else mono[2000:]))
    peak_hz = np.argmax(spectrum) * MODEL_RATE / (min(mono.size, 18000) - 2000)
    assert abs(peak_hz - tone_hz) < 2.0
    rms = np.sqrt(np.mean(mono[2000:-2000] ** 2))
    assert abs(rms - 0.25 * 0.5 / np.sqrt(2)) < 0.01  # mean of +1/2 and -1/4 of the tone: a quarter of it


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # numpy, averaging the NaN
def test_converter_downmixes_and_cleans():
    converter = Converter(MODEL_RATE, MODEL_RATE)
    samples = np.array([[0.5, -0.5], [np.nan, 0.2], [np.inf, -np.inf]], dtype=np.float32)
    np.testing.assert_array_equal(converter(samples), [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(converter(np.array([[0.25], [0.5]], dtype=np.float32)), [0.25, 0.5])


def test_make_source_picks_the_kind():
    assert isinstance(make_source(SourceSettings(kind="file", path="x.wav"), MODEL_RATE), FileSource)
    stdin = make_source(SourceSettings(kind="stdin", stdin_rate=48000, channels=2), MODEL_RATE)
    assert isinstance(stdin, StdinSource) and stdin.description == "stdin:s16le/48000Hz/2ch"
    mic = make_source(SourceSettings(kind="mic", input_device="USB"), MODEL_RATE)
    assert isinstance(mic, MicSource) and mic.live  # made without touching PortAudio


# -- PortAudio missing: one line ---------------------------------------------------------------------

def _hide_portaudio_prefix() -> list[str]:
    """A private mount namespace in which the dynamic linker's cache is empty, so
    `ctypes.util.find_library("portaudio")` (what sounddevice uses) finds nothing, exactly as on a
    machine without libportaudio2. Needs root (or CAP_SYS_ADMIN) and `unshare`."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1) to hide PortAudio in a private mount namespace")
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                            "mount --bind /dev/null /etc/ld.so.cache"], capture_output=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a private mount namespace here: {probe.stderr.decode().strip()}")
    return ["unshare", "-m", "--propagation", "private", "sh", "-c",
            'mount --bind /dev/null /etc/ld.so.cache && exec "$@"', "sh"]


def run_without_portaudio(args: list, cwd: Path) -> subprocess.CompletedProcess:
    from helpers_daemon import serd_cmd

    done = subprocess.run([*_hide_portaudio_prefix(), *serd_cmd(*args)], cwd=cwd, env=serd_env(),
                          capture_output=True, text=True, timeout=120)
    assert_no_traceback(done.stderr)
    return done


def test_devices_without_portaudio_is_one_line():
    with short_tmpdir() as d:
        done = run_without_portaudio(["devices"], d)
    assert done.returncode == 1
    lines = serd_lines(done.stderr)
    assert len(lines) == 1 and "PortAudio" in lines[0] and "apt install libportaudio2" in lines[0], done.stderr


def test_mic_without_portaudio_is_one_line_and_exit_1(tiny_model_int8):
    with short_tmpdir() as d:
        done = run_without_portaudio(["run", "--source", "mic", "--bind", f"ipc://{d}/pub.ipc",
                                      "--model", tiny_model_int8], d)
    assert done.returncode == 1, done.stderr
    errors = [line for line in serd_lines(done.stderr) if not line.startswith("INFO ")]
    assert len(errors) == 1 and "libportaudio2" in errors[0], done.stderr


# -- the microphone, against a fake capture device ------------------------------------------------------

FAKE_MIC = "fakemic"
ASOUNDRC = """\
# The test microphone: the file plugin replaces what it captures with `infile`
# (raw float32 LE, 16 kHz, mono); its slave, the null sink's monitor, is the clock.
pcm.{name} {{
    type file
    slave.pcm "serdclock"
    file "/dev/null"
    infile "{infile}"
    format "raw"
}}
pcm.serdclock {{
    type pulse
    device "serd_null.monitor"
}}
"""


def _pulse_plugin_present() -> bool:
    return bool(glob.glob("/usr/lib/*/alsa-lib/libasound_module_pcm_pulse.so")
                or glob.glob("/usr/lib*/alsa-lib/libasound_module_pcm_pulse.so"))


@pytest.fixture(scope="module")
def mic_audio(sample_clip_paths) -> np.ndarray:
    """What the fake microphone plays: a clip and a quiet tail, as 16-bit-exact float32."""
    # Not clip 1: Actor 6 shouting (strong angry) is no voice to Silero (benchmarks/RESULTS.md).
    samples = clip_then_quiet(load_clip(sample_clip_paths[3]), 3.5, 1.0)
    return (np.round(samples * 32768.0) / 32768.0).astype(np.float32)


@pytest.fixture(scope="module")
def fake_mic(mic_audio):
    """A PulseAudio server with a null sink, and an ALSA `fakemic` playing `mic_audio` in real time.

    Yields the environment a child process needs to see it (HOME with the .asoundrc, PULSE_SERVER).
    """
    from serd.sources import SourceError, import_sounddevice

    try:
        import_sounddevice()
    except SourceError as exc:
        pytest.skip(f"no PortAudio: {exc}")
    if shutil.which("pulseaudio") is None or not _pulse_plugin_present():
        pytest.skip("the fake microphone needs PulseAudio and the ALSA pulse plugin: "
                    "apt-get install -y pulseaudio pulseaudio-utils libasound2-plugins alsa-utils")
    with short_tmpdir("serd-mic-") as home:
        runtime = home / "run"
        runtime.mkdir(mode=0o700)
        sock = runtime / "pulse.sock"
        infile = home / "mic.f32"
        mic_audio.astype("<f4").tofile(infile)
        (home / ".asoundrc").write_text(ASOUNDRC.format(name=FAKE_MIC, infile=infile))
        env = serd_env(HOME=str(home), XDG_RUNTIME_DIR=str(runtime), XDG_CONFIG_HOME=str(home / ".config"),
                       PULSE_SERVER=f"unix:{sock}")
        log = open(home / "pulseaudio.log", "wb")
        server = subprocess.Popen(
            ["pulseaudio", "--daemonize=no", "-n", "--exit-idle-time=-1", "--use-pid-file=no",
             "--disable-shm=yes", "--log-target=stderr",
             f"--load=module-native-protocol-unix socket={sock} auth-anonymous=1",
             "--load=module-null-sink sink_name=serd_null rate=16000 channels=1"],
            env=env, stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + 30
            while not sock.exists() and server.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            if not sock.exists():
                log.flush()
                pytest.fail(f"PulseAudio did not start: {(home / 'pulseaudio.log').read_text()[-2000:]}")
            if shutil.which("pactl"):
                sources = subprocess.run(["pactl", "list", "short", "sources"], env=env, capture_output=True,
                                         text=True, timeout=30)
                assert "serd_null.monitor" in sources.stdout, sources
            yield env
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=10)
            log.close()


def test_devices_lists_the_fake_microphone(fake_mic):
    with short_tmpdir() as d:
        done = run_serd(["devices", "--json"], cwd=d, env=fake_mic, timeout=120)
        human = run_serd(["devices"], cwd=d, env=fake_mic, timeout=120)
    assert done.returncode == 0, done.stderr
    assert_no_traceback(done.stderr)
    devices = json.loads(done.stdout)
    (mic,) = [d for d in devices if d["name"] == FAKE_MIC]
    assert mic["channels"] >= 1 and MODEL_RATE in mic["rates"]
    assert human.returncode == 0 and FAKE_MIC in human.stdout


@pytest.mark.slow
def test_mic_run_publishes_what_the_microphone_hears(fake_mic, mic_audio, tiny_model_int8):
    with short_tmpdir() as d:
        # What serd should conclude: analyze the same samples, then the silence the sink delivers after them.
        reference_path = d / "heard.wav"
        soundfile.write(str(reference_path), np.concatenate([mic_audio, np.zeros(MODEL_RATE, np.float32)]),
                        MODEL_RATE, subtype="FLOAT")
        (reference,) = analyze_json(tiny_model_int8, [reference_path], d)
        windows = reference["windows"]
        assert any(w["speech"] for w in windows)

        endpoint = f"ipc://{d}/pub.ipc"
        with Subscriber(endpoint) as sub:
            with DaemonProcess(["run", "--source", "mic", "--input-device", FAKE_MIC, "--bind", endpoint,
                                "--model", tiny_model_int8, "--device-id", DEVICE], cwd=d, env=fake_mic) as daemon:
                sub.collect_until(emotion_count_at_least(len(windows)), timeout_s=120, process=daemon)
                daemon.send_signal(signal.SIGTERM)
                sub.collect_until(stopped, process=daemon)
                assert daemon.wait(timeout_s=30) == 0, daemon.stderr_text()
                stderr = daemon.stderr_text()
    assert_no_traceback(stderr)
    emotions = sub.emotions
    assert_emotion_stream(emotions, Labels.of(tiny_model_int8).names, DEVICE)
    final = [s for s in sub.statuses if s.state == "stopping"][-1]
    assert final.windows == final.published == len(emotions)
    assert final.source == f"mic:{FAKE_MIC}@{MODEL_RATE}Hz"
    assert final.dropped == 0, "the worker fell behind a 16 kHz microphone"
    # Sample for sample what the device played, so the very same windows and probabilities as analyze.
    assert_windows_match(emotions[: len(windows)], windows)
