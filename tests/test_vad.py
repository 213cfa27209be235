"""The voice detector (`serd.vad`) and the two-stage speech gate (`serd.gate`) on real speech and made noise.

Real weights (the shipped `models/silero_vad_16k.safetensors`), real RAVDESS clips,
the classroom noises of tests/sounds.py (the VAD benchmark's generators).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

import sounds
from helpers_daemon import load_clip
from serd.gate import BELOW_GATE, NO_VOICE, SpeechGate, make_speech_gate
from serd.vad import (
    DEFAULT_THRESHOLD,
    SileroVad,
    VadError,
    VoiceStream,
    default_weights_path,
    make_detector,
    read_safetensors,
)

WINDOW = 32_000
HOP = 8_000
UPSTREAM_SHA256 = "c59271c284ae9c8335d795d60e0bfdb71aaaceec578d9bd9ffc1b8153c319ea1"
"""silero_vad/data/silero_vad_16k.safetensors in the silero-vad 6.2.3 wheel on PyPI."""
SPEECH_CLIPS = (0, 2, 3, 4)
"""SAMPLE_CLIPS that are plain speech to Silero (1, Actor 6 shouting, strong angry, is not: see RESULTS.md)."""


@pytest.fixture(scope="module")
def vad() -> SileroVad:
    return make_detector("silero", 16000)


@pytest.fixture(scope="module")
def speech_windows(sample_clip_paths) -> list[np.ndarray]:
    return [sounds.speech_window(load_clip(sample_clip_paths[i]), WINDOW) for i in SPEECH_CLIPS]


def test_the_weights_are_the_unchanged_upstream_file():
    assert hashlib.sha256(default_weights_path().read_bytes()).hexdigest() == UPSTREAM_SHA256
    assert (default_weights_path().parent / "silero_vad.LICENSE").read_text().startswith("MIT License")


def test_speech_is_voice_at_any_level(vad, speech_windows):
    for window in speech_windows:
        for level in (-20.0, -45.0):
            share = vad.voiced_share(sounds.at_level(window, level))
            assert share >= 2 * DEFAULT_THRESHOLD, (level, share)


@pytest.mark.parametrize("kind", sorted(sounds.NOISES))
def test_classroom_noise_is_not_voice(vad, kind):
    rng = np.random.default_rng(11)
    shares = [vad.voiced_share(sounds.at_level(sounds.NOISES[kind](WINDOW, rng), -25.0)) for _ in range(3)]
    assert max(shares) < DEFAULT_THRESHOLD, shares


def test_speech_over_fan_noise_is_voice(vad, speech_windows):
    rng = np.random.default_rng(5)
    for window in speech_windows:
        mixed = sounds.mix_at_snr(sounds.at_level(window, -30.0), sounds.fan(WINDOW, rng), 10.0)
        assert vad.voiced_share(mixed) >= DEFAULT_THRESHOLD


def test_stream_judges_each_chunk_once_and_agrees_with_one_continuous_run(vad, sample_clip_paths):
    """Overlapping windows through `VoiceStream` = Silero run once over the whole recording."""
    audio = np.concatenate([load_clip(sample_clip_paths[i]) for i in SPEECH_CLIPS])
    n_chunks = audio.size // 512
    padded = np.pad(audio, (64, 0))
    chunks = np.stack([padded[k * 512 : k * 512 + 576] for k in range(n_chunks)])
    continuous, _ = vad.run(chunks, vad.initial_state())
    stream = VoiceStream(vad)
    for start in range(0, audio.size - WINDOW + 1, HOP):
        first, end = -(-start // 512), (start + WINDOW) // 512
        expected = float(np.mean(continuous[first:end] >= 0.5))
        assert stream.voiced_share(audio[start : start + WINDOW], start) == pytest.approx(expected, abs=1e-9)


def test_stream_starts_afresh_after_a_gap(vad, speech_windows):
    """A window after a gap is judged as if it were the first: what run and analyze both do after the level gate skips."""
    window = speech_windows[0]
    stream = VoiceStream(vad)
    stream.voiced_share(speech_windows[1], 0)
    after_gap = stream.voiced_share(window, 10 * WINDOW)
    fresh = VoiceStream(vad).voiced_share(window, 10 * WINDOW)
    assert after_gap == fresh


def test_gate_reasons_and_hangover(vad, speech_windows):
    gate = SpeechGate(-55.0, 1, VoiceStream(vad))
    rng = np.random.default_rng(3)
    quiet = sounds.at_level(sounds.white(WINDOW, rng), -70.0)
    loud_noise = sounds.at_level(sounds.music(WINDOW, rng), -25.0)
    speech = sounds.at_level(speech_windows[0], -25.0)
    from serd.features import level_dbfs

    def decide(window, start):
        return gate.update(level_dbfs(window), window, start)

    first = decide(loud_noise, 0)
    assert (first.speech, first.reason) == (False, NO_VOICE)
    assert decide(quiet, 10 * WINDOW).reason == BELOW_GATE
    assert decide(speech, 20 * WINDOW).speech
    kept = decide(loud_noise, 30 * WINDOW)  # one window of hangover after speech
    assert kept.speech and kept.reason is None
    assert decide(loud_noise, 40 * WINDOW).reason == NO_VOICE


def test_energy_gate_has_no_detector():
    gate = make_speech_gate(-55.0, 0, "energy", DEFAULT_THRESHOLD, 16000)
    assert gate.name == "energy" and gate.voice is None
    assert gate.update(-30.0).speech and gate.update(-60.0).reason == BELOW_GATE
    assert make_speech_gate(-55.0, 0, "silero", DEFAULT_THRESHOLD, 16000).name == "silero"


def test_bad_weights_and_kinds_are_refused(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}      ")
    with pytest.raises(VadError, match="safetensors"):
        read_safetensors(bad)
    with pytest.raises(VadError, match="not found"):
        SileroVad.load(tmp_path / "missing.safetensors")
    with pytest.raises(VadError, match="no 'conv1.weight'"):
        SileroVad({"stft_conv.weight": np.zeros((258, 1, 256), np.float32)})
    with pytest.raises(VadError, match="analysis.vad"):
        make_detector("webrtc", 16000)
    with pytest.raises(VadError, match="16000 Hz"):
        make_detector("silero", 8000)
