"""The daemon's per-window step (`serd.pipeline.WindowPipeline`) on real audio and the tiny real model.

Block-size invariance through the daemon's own path (ring buffer -> pipeline), and the promise
that `run` and `analyze` agree: the pipeline gives what `serd.analysis.analyze_windows` gives.
"""

from __future__ import annotations

import numpy as np
import pytest

from helpers_daemon import MODEL_RATE, clip_then_quiet, load_clip, noise
from serd.analysis import GateSettings, analyze_windows, file_windows
from serd.config import AnalysisSettings
from serd.model import Model
from serd.pipeline import WindowOutcome, WindowPipeline
from serd.windows import WindowBuffer

BLOCK_SIZES = (1, 333, 1600, 16000)
HOP_SAMPLES = MODEL_RATE // 2


@pytest.fixture(scope="module")
def model(tiny_model_int8) -> Model:
    return Model(tiny_model_int8)


@pytest.fixture(scope="module")
def audio(sample_clip_paths) -> np.ndarray:
    """Speech, a pause long enough to reset the smoothing, speech again, and a quiet tail.

    Not clip 1 (Actor 6 shouting, strong angry): the voice detector hears a voice in only 5 % of it
    (a limit of Silero on shouting, benchmarks/RESULTS.md, Speech gate), so it would not be speech here.
    """
    first = clip_then_quiet(load_clip(sample_clip_paths[2]), 3.5, 8.0)
    second = clip_then_quiet(load_clip(sample_clip_paths[3]), 3.5, 3.0)
    return np.concatenate([first, second])


def run_pipeline(model: Model, audio: np.ndarray, block: int, settings: AnalysisSettings = AnalysisSettings()):
    buffer = WindowBuffer(model.params.window_samples, HOP_SAMPLES)
    pipeline = WindowPipeline(model, settings)
    outcomes: list[WindowOutcome] = []
    for offset in range(0, audio.size, block):
        for window in buffer.push(audio[offset : offset + block]):
            outcomes.append(pipeline.process(window))
    return outcomes


def assert_same_outcomes(a: list[WindowOutcome], b: list[WindowOutcome]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert (x.start_s, x.end_s, x.speech, x.level_dbfs) == (y.start_s, y.end_s, y.speech, y.level_dbfs)
        for left, right in ((x.probs, y.probs), (x.smoothed, y.smoothed)):
            assert (left is None) == (right is None)
            if left is not None:
                np.testing.assert_array_equal(left, right)


@pytest.fixture(scope="module")
def reference(model, audio) -> list[WindowOutcome]:
    return run_pipeline(model, audio, 1600)


def test_the_audio_exercises_every_path(model, audio, reference):
    speech = [o.speech for o in reference]
    assert any(speech) and not all(speech)
    assert len(reference) == (audio.size - model.params.window_samples) // HOP_SAMPLES + 1
    assert [o.start_s for o in reference] == [0.5 * i for i in range(len(reference))]


@pytest.mark.parametrize("block", [b for b in BLOCK_SIZES if b != 1600])
def test_outcomes_do_not_depend_on_block_size(model, audio, reference, block):
    assert_same_outcomes(run_pipeline(model, audio, block), reference)


def test_irregular_blocks_give_the_same_outcomes(model, audio, reference):
    rng = np.random.default_rng(7)
    sizes = rng.integers(1, 5000, size=audio.size // 100)
    buffer = WindowBuffer(model.params.window_samples, HOP_SAMPLES)
    pipeline = WindowPipeline(model, AnalysisSettings())
    outcomes, offset = [], 0
    for size in sizes:
        if offset >= audio.size:
            break
        outcomes += [pipeline.process(w) for w in buffer.push(audio[offset : offset + size])]
        offset += size
    outcomes += [pipeline.process(w) for w in buffer.push(audio[offset:])]
    assert_same_outcomes(outcomes, reference)


def test_pipeline_equals_analyze_windows(model, audio, reference):
    settings = AnalysisSettings()
    windows = file_windows([audio], model.params, settings.hop_s)
    result = analyze_windows(windows, model.params, model.labels, model.predict_many,
                             GateSettings.from_analysis(settings))
    assert len(result.windows) == len(reference)
    for analysed, outcome in zip(result.windows, reference):
        assert (analysed.start_s, analysed.end_s, analysed.speech) == (outcome.start_s, outcome.end_s, outcome.speech)
        assert analysed.reason == outcome.reason
        assert analysed.level_dbfs == outcome.level_dbfs
        if analysed.probs is None:
            assert outcome.probs is None
        else:
            np.testing.assert_array_equal(analysed.probs, outcome.probs)


def test_smoothing_is_an_ema_over_speech_windows_reset_after_silence(reference):
    settings = AnalysisSettings()
    state, last_speech_end, resets = None, None, 0
    for outcome in reference:
        if outcome.probs is None:
            assert outcome.smoothed is None
            if last_speech_end is not None and state is not None and outcome.end_s - last_speech_end >= settings.smoothing_reset_s:
                state, resets = None, resets + 1
            continue
        state = outcome.probs if state is None else settings.smoothing_alpha * outcome.probs + (1 - settings.smoothing_alpha) * state
        last_speech_end = outcome.end_s
        np.testing.assert_allclose(outcome.smoothed, state, rtol=0, atol=1e-6)
        assert abs(outcome.probs.sum() - 1) < 1e-5 and abs(outcome.smoothed.sum() - 1) < 1e-5
    assert resets == 1, "the 8 s pause should reset the moving average exactly once"


def test_alpha_one_means_no_smoothing(model, audio):
    for outcome in run_pipeline(model, audio[: 5 * MODEL_RATE], 1600, AnalysisSettings(smoothing_alpha=1.0)):
        if outcome.probs is not None:
            np.testing.assert_array_equal(outcome.smoothed, outcome.probs)


def test_gate_threshold_and_hangover(model):
    """The level stage alone (`vad: energy`): loud noise passes it, as it did before the voice detector."""
    loud, quiet = noise(2.0, -30.0, seed=1), noise(3.0, -80.0, seed=2)
    audio = np.concatenate([quiet, loud, quiet, quiet])
    level_only = AnalysisSettings(hangover_windows=0, vad="energy")
    levels_speech = [(o.level_dbfs, o.speech) for o in run_pipeline(model, audio, 1600, level_only)]
    assert all(speech == (level >= -55.0) for level, speech in levels_speech), levels_speech
    assert any(speech for _, speech in levels_speech)
    with_hangover = run_pipeline(model, audio, 1600, AnalysisSettings(hangover_windows=2, vad="energy"))
    speech = [o.speech for o in with_hangover]
    loud_flags = [s for _, s in levels_speech]
    last_loud = max(i for i, s in enumerate(loud_flags) if s)
    assert speech[last_loud + 1] and speech[last_loud + 2] and not speech[last_loud + 3]
    for o in with_hangover:
        assert (o.probs is None) == (not o.speech)


def test_reset_forgets_gate_and_smoothing(model, audio, reference):
    """After `reset` (a lost microphone came back) the pipeline behaves like a new one."""
    buffer = WindowBuffer(model.params.window_samples, HOP_SAMPLES)
    pipeline = WindowPipeline(model, AnalysisSettings())
    for window in buffer.push(audio[: 4 * MODEL_RATE]):
        pipeline.process(window)
    pipeline.reset()
    buffer.reset()
    assert_same_outcomes([pipeline.process(w) for w in buffer.push(audio)], reference)
