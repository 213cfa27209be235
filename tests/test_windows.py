"""Fixed windows at a fixed hop whatever the block sizes, down to the model's probabilities."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serd.analysis import GateSettings, analyze_windows, file_windows, hop_samples
from serd.audiofile import iter_blocks, read_audio
from serd.features import FeatureParams
from serd.model import Model
from serd.windows import WindowBuffer

BLOCK_SIZES = (1, 7, 160, 1000, None)  # None: the whole signal in one block
WINDOW_HOPS = (
    (400, 160),
    (1000, 1000),  # hop = window: back to back
    (300, 500),  # hop > window: gaps between windows
    (32_000, 8_000),  # the daemon's 2 s / 0.5 s at 16 kHz
    (5, 1),
)
N_SAMPLES = 40_123


@pytest.fixture(scope="module")
def signal() -> np.ndarray:
    return np.random.default_rng(0).standard_normal(N_SAMPLES).astype(np.float32)


def enough_of(signal: np.ndarray, window: int, hop: int) -> np.ndarray:
    """About 60 windows' worth (and a ragged tail): thousands of 5-sample windows prove nothing more."""
    return signal[: window + 60 * hop + 123]


def blocks_of(signal: np.ndarray, size: int | None) -> list[np.ndarray]:
    if size is None:
        return [signal]
    return [signal[i : i + size] for i in range(0, signal.shape[0], size)]


def push_all(buffer: WindowBuffer, blocks) -> list:
    return [w for block in blocks for w in buffer.push(block)]


def expected_starts(n: int, window: int, hop: int) -> list[int]:
    return list(range(0, n - window + 1, hop))


@pytest.mark.parametrize("window, hop", WINDOW_HOPS)
@pytest.mark.parametrize("block_size", BLOCK_SIZES)
def test_windows_are_the_slices_of_the_signal(signal, window, hop, block_size):
    signal = enough_of(signal, window, hop)
    windows = push_all(WindowBuffer(window, hop), blocks_of(signal, block_size))
    starts = expected_starts(signal.shape[0], window, hop)
    assert [w.start_sample for w in windows] == starts
    for w in windows:
        assert w.samples.dtype == np.float32
        np.testing.assert_array_equal(w.samples, signal[w.start_sample : w.start_sample + window])


@pytest.mark.parametrize("window, hop", WINDOW_HOPS)
def test_block_size_does_not_change_the_windows(signal, window, hop):
    signal = enough_of(signal, window, hop)
    reference = push_all(WindowBuffer(window, hop), [signal])
    for block_size in BLOCK_SIZES[:-1]:
        windows = push_all(WindowBuffer(window, hop), blocks_of(signal, block_size))
        assert len(windows) == len(reference)
        for a, b in zip(windows, reference):
            assert a.start_sample == b.start_sample
            assert np.array_equal(a.samples, b.samples)


@settings(max_examples=40, deadline=None)
@given(
    window=st.integers(1, 600),
    hop=st.integers(1, 700),
    cuts=st.lists(st.integers(0, 3000), max_size=25),
)
def test_any_cut_gives_the_slices(window, hop, cuts):
    signal = np.arange(3000, dtype=np.float32)  # each sample is its own index: slices are easy to check
    edges = [0, *sorted(cuts), signal.shape[0]]
    blocks = [signal[a:b] for a, b in zip(edges, edges[1:])]  # empty blocks included
    windows = push_all(WindowBuffer(window, hop), blocks)
    assert [w.start_sample for w in windows] == expected_starts(signal.shape[0], window, hop)
    for w in windows:
        np.testing.assert_array_equal(w.samples, signal[w.start_sample : w.start_sample + window])


def test_returned_windows_are_copies(signal):
    buffer = WindowBuffer(400, 160)
    first = buffer.push(signal[:1000])
    kept = [w.samples.copy() for w in first]
    buffer.push(signal[1000:5000])
    assert all(np.array_equal(w.samples, k) for w, k in zip(first, kept))


def test_reset_starts_a_new_stream(signal):
    buffer = WindowBuffer(1000, 400)
    push_all(buffer, blocks_of(signal[:2_777], 160))
    assert buffer.received == 2_777
    buffer.reset()
    assert buffer.received == 0
    after_reset = push_all(buffer, blocks_of(signal[5_000:9_000], 7))
    fresh = push_all(WindowBuffer(1000, 400), [signal[5_000:9_000]])
    assert [w.start_sample for w in after_reset] == [w.start_sample for w in fresh] == [0, 400, 800, 1200, 1600, 2000, 2400, 2800]
    assert all(np.array_equal(a.samples, b.samples) for a, b in zip(after_reset, fresh))


def test_window_times():
    buffer = WindowBuffer(32_000, 8_000)
    windows = buffer.push(np.zeros(48_000, dtype=np.float32))
    assert [(w.start_s(16_000), w.end_s(16_000)) for w in windows] == [(0.0, 2.0), (0.5, 2.5), (1.0, 3.0)]


def test_multichannel_shaped_block_is_flattened_not_refused():
    buffer = WindowBuffer(4, 2)
    windows = buffer.push(np.arange(6, dtype=np.float32).reshape(6, 1))  # (frames, 1) as sounddevice gives
    assert [w.samples.tolist() for w in windows] == [[0, 1, 2, 3], [2, 3, 4, 5]]


@pytest.mark.parametrize("window, hop", [(0, 1), (1, 0), (-5, 2)])
def test_non_positive_sizes_are_refused(window, hop):
    with pytest.raises(ValueError, match="positive"):
        WindowBuffer(window, hop)


# --- the same through analysis and a real model --------------------------------------------------

HOP_S = 0.25
CLIP = "Actor_02/03-01-05-02-01-01-02.flac"  # strong angry: plenty of speech windows


def test_analysis_gives_identical_probabilities_whatever_the_blocks(ravdess_fixtures, tiny_model_int8):
    model = Model(tiny_model_int8)
    params = model.params
    audio = read_audio(ravdess_fixtures / CLIP, params.sample_rate)
    predict_many = model.predict_many

    def analyse(blocks):
        windows = file_windows(blocks, params, HOP_S)
        return analyze_windows(windows, params, model.labels, predict_many, GateSettings())

    reference = analyse([audio])
    n_windows = 1 + (audio.shape[0] - params.window_samples) // hop_samples(params, HOP_S)
    assert len(reference.windows) == n_windows
    assert reference.speech_probs.shape[0] >= 3, "too few speech windows for the comparison to mean much"
    assert len({r.tobytes() for r in reference.speech_probs}) > 1, "every window gave the same answer"
    for blocks in (
        blocks_of(audio, 160),
        blocks_of(audio, 1000),
        blocks_of(audio, 4_801),
        list(iter_blocks(ravdess_fixtures / CLIP, params.sample_rate)),  # as the file reader delivers it
        list(iter_blocks(ravdess_fixtures / CLIP, params.sample_rate, block_s=0.013)),
    ):
        result = analyse(blocks)
        assert [(w.start_s, w.end_s, w.speech, w.level_dbfs) for w in result.windows] == [
            (w.start_s, w.end_s, w.speech, w.level_dbfs) for w in reference.windows
        ]
        np.testing.assert_array_equal(result.speech_probs, reference.speech_probs)
        np.testing.assert_array_equal(result.probs, reference.probs)


def test_a_recording_shorter_than_a_window_is_padded_whatever_the_blocks():
    params = FeatureParams()
    short = np.random.default_rng(1).uniform(-0.5, 0.5, 8_000).astype(np.float32)
    for blocks in (blocks_of(short, 7), blocks_of(short, 1000), [short]):
        windows = file_windows(blocks, params, HOP_S)
        assert len(windows) == 1 and windows[0].start_sample == 0
        assert windows[0].samples.shape == (params.window_samples,)
        np.testing.assert_array_equal(windows[0].samples[:8_000], short)
        assert not windows[0].samples[8_000:].any()
    assert file_windows([], params, HOP_S) == []
    assert file_windows([np.zeros(0, dtype=np.float32)], params, HOP_S) == []
