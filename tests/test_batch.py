"""Batched analysis (`serd analyze`, `serd evaluate`, the dashboard's upload) against the daemon's per-window path.

Real RAVDESS fixture clips and recordings made of them (speech, pauses below the level gate,
loud noise without a voice), the real Silero weights, the tiny real model; `serd analyze
--jobs` as a real subprocess, Ctrl-C included.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import sounds
from conftest import subprocess_env
from helpers_daemon import (
    MODEL_RATE,
    assert_no_traceback,
    clip_then_quiet,
    ignore_sigint,
    load_clip,
    run_serd,
    serd_cmd,
    serd_env,
    short_tmpdir,
    write_pcm16_wav,
)
from serd.analysis import GROUP_FILES, GateSettings, analyze_files, file_groups, iter_file_windows
from serd.audiofile import AudioFileError, iter_blocks
from serd.config import EX_INTERRUPTED, AnalysisSettings
from serd.gate import BELOW_GATE, NO_VOICE
from serd.model import BATCH_WINDOWS, Model
from serd.pipeline import WindowPipeline
from serd.vad import VoiceStream, make_detector, voiced_shares

SIGINT_EXIT_S = 15.0
CHILD_TIMEOUT_S = 120
RAVDESS_FIXTURES = Path(__file__).parent / "fixtures" / "audio" / "ravdess"


@pytest.fixture(scope="module")
def model(tiny_model_int8) -> Model:
    return Model(tiny_model_int8)


@pytest.fixture(scope="module")
def recordings(sample_clip_paths):
    """The fixture clips, and two longer recordings that take every branch of the gate and the detector."""
    rng = np.random.default_rng(4)
    clips = [load_clip(p) for p in sample_clip_paths]
    music = sounds.at_level(sounds.music(4 * MODEL_RATE, rng), -25.0)
    mixed = np.concatenate([clip_then_quiet(clips[2], 3.5, 4.0), music, clips[3], clip_then_quiet(clips[0], 3.0, 2.2),
                            clips[4]])
    with short_tmpdir("serd-batch-") as d:
        write_pcm16_wav(d / "mixed.wav", mixed)
        write_pcm16_wav(d / "short.wav", clips[0][MODEL_RATE : MODEL_RATE + MODEL_RATE // 2])
        yield [*sorted(RAVDESS_FIXTURES.glob("Actor_*/*.flac")), d / "mixed.wav", d / "short.wav"]


def per_window(model: Model, path: Path, settings: AnalysisSettings):
    """The daemon's path: one window a call through `WindowPipeline` (the smoothing aside)."""
    pipeline = WindowPipeline(model, settings)
    windows = iter_file_windows(iter_blocks(path, MODEL_RATE), model.params, settings.hop_s)
    return [pipeline.process(w) for w in windows]


@pytest.mark.parametrize("batch_windows", [1, 7, 128])
def test_analyze_gives_what_run_gives_window_by_window(model, recordings, batch_windows):
    """Same windows, gate decisions and reasons, levels; probabilities to float rounding.

    batch 7 cuts files into stretches and puts the ends of some and the starts of others in one step.
    """
    settings = AnalysisSettings()
    results = list(analyze_files(recordings, model, settings.hop_s, GateSettings.from_analysis(settings),
                                 batch_windows=batch_windows))
    reasons = set()
    for path, result in zip(recordings, results, strict=True):
        expected = per_window(model, path, settings)
        assert [(w.start_s, w.end_s, w.speech, w.reason, w.level_dbfs) for w in result.windows] == [
            (o.start_s, o.end_s, o.speech, o.reason, o.level_dbfs) for o in expected], path.name
        for analysed, outcome in zip(result.windows, expected):
            assert (analysed.probs is None) == (outcome.probs is None)
            if analysed.probs is not None:
                np.testing.assert_allclose(analysed.probs, outcome.probs, rtol=1e-6, atol=1e-7)
        reasons |= {w.reason for w in result.windows} | ({"speech"} if result.probs is not None else set())
    assert {BELOW_GATE, NO_VOICE, "speech"} <= reasons, "the audio must exercise every gate decision"


def test_many_streams_at_once_equal_one_window_a_call(sample_clip_paths):
    """The detector's batch over streams: each stream's shares as if it ran alone, one window at a time."""
    vad = make_detector("silero", MODEL_RATE)
    audios = [load_clip(p) for p in sample_clip_paths[:6]]
    starts = [list(range(0, a.size - 32_000 + 1, 8_000)) for a in audios]
    # Some windows skipped (as the level gate would), so that streams restart at different points.
    kept = [[s for i, s in enumerate(st) if i % 5 != 2] for st in starts]
    alone = []
    for audio, st in zip(audios, kept):
        stream = VoiceStream(vad)
        alone.append([stream.voiced_share(audio[s : s + 32_000], s) for s in st])
    streams = [VoiceStream(vad) for _ in audios]
    together = [[] for _ in audios]
    for step in range(0, max(map(len, kept)), 3):  # three windows of every stream per call
        requests = [(stream, [(a[s : s + 32_000], s) for s in st[step : step + 3]])
                    for stream, a, st in zip(streams, audios, kept)]
        for out, shares in zip(together, voiced_shares(requests)):
            out.extend(shares)
    assert together == alone
    assert any(0 < share < 1 for shares in alone for share in shares)


def test_sequences_of_different_lengths_end_in_their_own_state(sample_clip_paths):
    """run_many steps the sequences still running: one that has ended must not take another step.

    (It once took one with zero input, which changed the state a file carried into its next stretch.)
    """
    vad = make_detector("silero", MODEL_RATE)
    audio = load_clip(sample_clip_paths[2])
    chunks = np.stack([np.pad(audio, (64, 0))[k * 512 : k * 512 + 576] for k in range(audio.size // 512)])
    sequences = [chunks[:5], chunks[3:40], chunks[10:40], chunks[:1]]
    states = [vad.initial_state(), vad.initial_state(), vad.run(chunks[:10], vad.initial_state())[1], vad.initial_state()]
    probs, finals = vad.run_many(sequences, states)
    for sequence, state, p, (hidden, cell) in zip(sequences, states, probs, finals):
        alone_p, (alone_h, alone_c) = vad.run(sequence, state)
        np.testing.assert_allclose(p, alone_p, atol=1e-5)
        np.testing.assert_allclose(hidden, alone_h, atol=1e-5)
        np.testing.assert_allclose(cell, alone_c, atol=1e-5)


# In a child process per backend: the two interpreters' native libraries must never share one
# process (loaded together, tflite-runtime once failed to read the tiny model: "vector::reserve").
CHILD_BATCHED = """
import sys
import numpy as np
from serd.model import BATCH_WINDOWS, Model
model = Model(sys.argv[1])  # backend from SERD_TFLITE_BACKEND
others = {"ai-edge-litert": "tflite_runtime", "tflite-runtime": "ai_edge_litert"}
assert others[model.backend] not in sys.modules, "both interpreters in one process"
rng = np.random.default_rng(2)
features = rng.normal(0.0, 1.0, (2 * BATCH_WINDOWS + 5, *model.params.shape)).astype(np.float32)
one_a_call = np.stack([model.logits(f) for f in features])
assert model._batched() is not None, "the tiny model's graph must open to a batch (its Flatten, as shipped ones)"
np.testing.assert_array_equal(model.logits_many(features), one_a_call)
np.testing.assert_array_equal(model.predict_many(features[:1]), model.predict(features[0])[None])
assert model.predict_many(features[:0]).shape == (0, len(model.labels))
try:
    model.predict_many(features[0])
except ValueError as exc:
    assert "expected features of shape" in str(exc), exc
else:
    raise AssertionError("one window without its batch axis was accepted")
print(model.backend, len(features))
"""


@pytest.mark.parametrize("backend", ["ai-edge-litert", "tflite-runtime"])
def test_batched_int8_inference_is_identical_to_one_window_a_call(tiny_model_int8, backend):
    if importlib.util.find_spec(backend.replace("-", "_")) is None:  # find, not import: it must not load here
        pytest.skip(f"{backend} not installed")
    done = subprocess.run([sys.executable, "-c", CHILD_BATCHED, str(tiny_model_int8)],
                          env=subprocess_env(SERD_TFLITE_BACKEND=backend), capture_output=True, text=True,
                          timeout=CHILD_TIMEOUT_S)
    assert done.returncode == 0, f"{backend} child failed ({done.returncode}):\n{done.stderr[-3000:]}"
    assert done.stdout.split() == [backend, str(2 * BATCH_WINDOWS + 5)]


def test_a_bad_file_is_one_error_in_its_place(model, recordings, tmp_path):
    bad = tmp_path / "text.wav"
    bad.write_text("not audio\n" * 50)
    outcomes = list(analyze_files([recordings[0], bad, recordings[1]], model, 0.5, GateSettings(vad="silero"),
                                  batch_windows=3))
    assert [type(o).__name__ for o in outcomes] == ["AnalysisResult", "AudioFileError", "AnalysisResult"]
    assert isinstance(outcomes[1], AudioFileError) and str(bad) in str(outcomes[1])


def test_jobs_give_the_output_of_one_process_in_order(tiny_model_int8, recordings, tmp_path):
    bad = tmp_path / "text.wav"
    bad.write_text("not audio\n" * 50)
    files = [*recordings[:5], bad, *recordings[5:]]
    one = run_serd(["analyze", "--json", "--jobs", "1", "--model", tiny_model_int8, *files], cwd=tmp_path, timeout=180)
    two = run_serd(["analyze", "--json", "--jobs", "2", "--model", tiny_model_int8, *files], cwd=tmp_path, timeout=180)
    for done in (one, two):
        assert done.returncode == 1, done.stderr
        assert_no_traceback(done.stderr)
    assert two.stdout == one.stdout
    objects = [json.loads(line) for line in two.stdout.splitlines()]
    assert [o["file"] for o in objects] == [str(f) for f in files]
    assert "error" in objects[5] and all("error" not in o for i, o in enumerate(objects) if i != 5)


def test_bad_jobs_is_refused(tiny_model_int8, recordings, tmp_path):
    done = run_serd(["analyze", "--jobs", "0", "--model", tiny_model_int8, recordings[0]], cwd=tmp_path)
    assert done.returncode == 2 and "--jobs must be >= 1" in done.stderr


def _children(pid: int) -> set[int]:
    tasks = Path(f"/proc/{pid}/task")
    return {int(c) for t in tasks.iterdir() for c in (t / "children").read_text().split()} if tasks.is_dir() else set()


def test_ctrl_c_stops_analyze_and_its_workers(tiny_model_int8, recordings, tmp_path):
    # Short clips first (the first group answers within seconds), then 20 minutes of audio each for 40 files:
    # far more work than the test waits for, however fast the machine (60 copies of the clips took 3 s).
    long_recording = tmp_path / "long.wav"
    clip = load_clip(recordings[0])
    write_pcm16_wav(long_recording, np.tile(clip, int(1200 * MODEL_RATE / clip.shape[0]) + 1))
    files = [str(p) for p in recordings[:-2]] + [str(long_recording)] * 40
    proc = subprocess.Popen(serd_cmd("analyze", "--json", "--jobs", "2", "--model", tiny_model_int8, *files),
                            cwd=tmp_path, env=serd_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=ignore_sigint)  # noqa: PLW1509
    try:
        first = proc.stdout.readline()
        assert json.loads(first)["file"] == files[0]
        workers = _children(proc.pid)
        assert len(workers) == 2, workers
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=SIGINT_EXIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == EX_INTERRUPTED, stderr
    assert_no_traceback(stderr)
    deadline = time.monotonic() + 5.0
    while any(Path(f"/proc/{w}").exists() and "zombie" not in _state(w) for w in workers):
        assert time.monotonic() < deadline, f"workers left running: {workers}"
        time.sleep(0.05)


def test_workers_end_when_analyze_is_killed_outright(tiny_model_int8, recordings, tmp_path):
    """SIGKILL (the OOM killer, systemd's last resort) gives the main process no chance to stop its workers:
    they must not work on for nobody, nor hang for good in a send to it (they did, holding the pipe's other end)."""
    long_recording = tmp_path / "long.wav"
    clip = load_clip(recordings[0])
    write_pcm16_wav(long_recording, np.tile(clip, int(1200 * MODEL_RATE / clip.shape[0]) + 1))
    files = [str(p) for p in recordings[:-2]] + [str(long_recording)] * 40
    proc = subprocess.Popen(serd_cmd("analyze", "--json", "--jobs", "2", "--model", tiny_model_int8, *files),
                            cwd=tmp_path, env=serd_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert json.loads(proc.stdout.readline())["file"] == files[0]
        workers = _children(proc.pid)
        assert len(workers) == 2, workers
        proc.kill()
        proc.wait(timeout=SIGINT_EXIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    deadline = time.monotonic() + 5.0
    while any(Path(f"/proc/{w}").exists() and "zombie" not in _state(w) for w in workers):
        if time.monotonic() > deadline:
            for w in workers:  # not left behind for the rest of the suite
                with contextlib.suppress(ProcessLookupError):
                    os.kill(w, signal.SIGKILL)
            pytest.fail(f"workers left running after their parent was killed: {workers}")
        time.sleep(0.05)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].splitlines()[0].lower()
    except (OSError, IndexError):
        return "zombie"


def test_the_jobs_default_is_every_core():
    from serd.analysis import default_jobs

    assert default_jobs() == len(os.sched_getaffinity(0))


def test_jobs_need_no_dev_shm(tiny_model_int8, recordings, tmp_path):
    """No /dev/shm (a chroot, a container: the arm64 check's chroot, where a multiprocessing.Pool could not
    make its semaphores): the workers need none, and give the output of one process."""
    import shutil

    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) to hide /dev/shm in a mount namespace")
    files = [str(p) for p in recordings]
    one = run_serd(["analyze", "--json", "--jobs", "1", "--model", tiny_model_int8, *files], cwd=tmp_path, timeout=180)
    # A read-only, empty /dev/shm in a mount namespace of its own: no POSIX semaphore can be made there.
    script = 'mount -t tmpfs -o ro none /dev/shm && exec "$@"'
    hidden = subprocess.run(["unshare", "--mount", "sh", "-c", script, "sh",
                             *serd_cmd("analyze", "--json", "--jobs", "2", "--model", tiny_model_int8, *files)],
                            cwd=tmp_path, env=serd_env(), capture_output=True, text=True, timeout=180)
    assert hidden.returncode == 0, hidden.stderr
    assert "cannot start" not in hidden.stderr, hidden.stderr
    assert hidden.stdout == one.stdout


def test_file_groups_keep_the_order_and_shrink_towards_the_end():
    # Big groups batch well; the last ones are small so that no worker finishes alone at the end.
    for n, jobs in ((240, 2), (1000, 4), (3, 4), (1, 2)):
        groups = file_groups(list(range(n)), jobs)
        assert [p for g in groups for p in g] == list(range(n))
        sizes = [len(g) for g in groups]
        assert max(sizes) <= GROUP_FILES and sizes == sorted(sizes, reverse=True) and sizes[-1] == 1
    assert len(file_groups(list(range(3)), 4)) == 3  # three files, three workers busy
