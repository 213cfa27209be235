"""The phone set of augmentations (a call's band and codec, automatic gain, a place's background) and the arousal loss."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from serd.audiofile import read_audio
from serd.train.augment import AugmentSettings, augment_wave, rms
from serd.train.data import speech_bounds
from serd.train.channel import Channel
from serd.train.phone import ambient, ambient_pool, auto_gain, call_channel, mu_law, phone_band
from test_corpora import band_db

RATE = 16_000


def tone(freq_hz: float, seconds: float = 1.0, amplitude: float = 0.1) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def tone_snr_db(y: np.ndarray, freq_hz: float) -> float:
    """The tone's power against everything else in `y` (least-squares fit of the tone)."""
    t = np.arange(y.shape[0]) / RATE
    basis = np.stack([np.sin(2 * np.pi * freq_hz * t), np.cos(2 * np.pi * freq_hz * t)], axis=1)
    fitted = basis @ np.linalg.lstsq(basis, y.astype(np.float64), rcond=None)[0]
    return 10 * np.log10(np.sum(fitted**2) / np.sum((y - fitted) ** 2))


def test_a_call_is_narrowband_or_wideband_and_cuts_where_it_says():
    white = (0.1 * np.random.default_rng(3).standard_normal(32000)).astype(np.float32)
    channels = [call_channel(np.random.default_rng(seed)) for seed in range(40)]
    narrow = [c for c in channels if c.lowpass_hz < 4000]
    assert 8 <= len(narrow) <= 32  # both kinds occur
    assert all(3100 <= c.lowpass_hz <= 3600 and 200 <= c.highpass_hz <= 350 for c in narrow)
    assert all(6500 <= c.lowpass_hz <= 7500 and 50 <= c.highpass_hz <= 150 for c in channels if c not in narrow)
    for c in narrow[:3]:
        y = c.apply(white, RATE)
        assert band_db(y, 1000, 3000) - band_db(y, 4800, 6000) > 25
        assert band_db(y, 1000, 3000) - band_db(y, 50, 120) > 25
    y = phone_band(white, RATE, np.random.default_rng(0))
    assert y.shape == white.shape and y.dtype == np.float32 and np.isfinite(y).all()


def test_mu_law_noise_follows_the_level_as_a_telephone_codec():
    # 8-bit mu-law: the tone comes back with noise 35-50 dB under it, loud or 39 dB softer (linear
    # 8-bit would lose those 39 dB on the soft one); a band-pass alone leaves it clean.
    loud = tone_snr_db(mu_law(tone(1000.0, amplitude=0.9), full_scale=1.0), 1000.0)
    soft = tone_snr_db(mu_law(tone(1000.0, amplitude=0.01), full_scale=1.0), 1000.0)
    assert 40 < loud < 55 and 30 < soft < 45 and loud - soft < 15
    assert tone_snr_db(Channel(lowpass_hz=3400.0, highpass_hz=300.0).apply(tone(1000.0), RATE), 1000.0) > 80
    assert np.abs(mu_law(tone(1000.0, amplitude=2.0), full_scale=1.0)).max() <= 1.0  # over full scale: clipped


def test_auto_gain_narrows_the_gap_between_loud_and_soft_speech_but_not_into_silence():
    rng = np.random.default_rng(1)
    loud, soft = tone(300.0, 1.0, 0.3), tone(300.0, 1.0, 0.03)  # 20 dB apart
    silence = np.zeros(RATE // 2, dtype=np.float32) + 1e-5 * rng.standard_normal(RATE // 2).astype(np.float32)
    x = np.concatenate([loud, soft, silence])
    for seed in range(5):
        y = auto_gain(x, RATE, np.random.default_rng(seed))
        gap = 20 * np.log10(rms(y[RATE // 4 : RATE]) / rms(y[RATE + RATE // 4 : 2 * RATE]))
        assert 1.0 < gap < 14.0  # strength 0.4..0.9 of the 20 dB taken out
        assert rms(y[: RATE]) == pytest.approx(rms(loud), rel=0.3)  # the loud part stays where it was
        assert 20 * np.log10(rms(y[2 * RATE + RATE // 8 :]) / rms(silence[RATE // 8 :])) <= 20.5  # at most +20 dB


def test_the_ambient_pool_holds_a_places_sound_and_not_studio_silence(ravdess_root: Path):
    speech = read_audio(sorted(ravdess_root.glob("Actor_01/*.flac"))[0], RATE)
    bounds = speech_bounds(speech, RATE)
    voice = speech[bounds[0] : bounds[1]]
    street = 0.01 * np.random.default_rng(2).standard_normal(RATE).astype(np.float32)  # -40 dBFS
    studio = np.zeros(RATE, dtype=np.float32)
    clips = [np.concatenate([street, voice, street]), np.concatenate([studio, voice, studio])]
    pool = ambient_pool(clips, RATE)
    assert len(pool) == 2  # before and after the words of the first clip; nothing of the second
    assert all(0.7 * RATE < p.shape[0] < 1.3 * RATE for p in pool)  # the street, give or take a word's edge
    assert all(20 * np.log10(rms(p)) == pytest.approx(-40.0, abs=1.0) for p in pool)
    # Looped to a longer window with cross-fades: the same level all through, no gap where it repeats.
    looped = ambient([pool[0][: RATE // 2]], 3 * RATE, np.random.default_rng(0))
    assert looped.shape == (3 * RATE,)
    levels = 20 * np.log10([rms(looped[i : i + 800]) for i in range(0, looped.shape[0], 800)])
    assert levels.max() - levels.min() < 6.0


def test_the_phone_set_is_off_by_default_and_switched_on_by_name():
    assert not {"phone", "agc", "ambient"} & set(AugmentSettings().enabled())
    on = AugmentSettings.none().with_(["phone", "agc", "ambient"])
    assert on.enabled() == ["phone", "agc", "ambient"]
    x = tone(440.0, 2.0)
    pool = [0.01 * np.random.default_rng(4).standard_normal(RATE).astype(np.float32)]
    outs = [augment_wave(x, on, np.random.default_rng(seed), None, RATE, pool) for seed in range(30)]
    assert all(o.shape == x.shape and np.isfinite(o).all() for o in outs)
    changed = [not np.allclose(o, x, atol=1e-6) for o in outs]
    assert 10 <= sum(changed) < 30  # each part fires on about 30 % of windows
    np.testing.assert_array_equal(augment_wave(x, AugmentSettings.none(), np.random.default_rng(0), None, RATE, pool), x)


needs_tensorflow = pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None,
                                      reason="the losses need TensorFlow (pip install -e '.[train]')")
LABELS = ("neutral", "happy", "sad", "angry", "fearful", "disgust")


@needs_tensorflow
def test_the_arousal_term_pulls_every_activated_class_up_for_an_angry_clip():
    import tensorflow as tf

    from serd.train.fit import emotion_loss, masked_cross_entropy

    assert emotion_loss(LABELS, 0.0) is masked_cross_entropy
    loss = emotion_loss(LABELS, 1.0)
    logits = tf.Variable([[0.5, 0.1, 2.0, 0.3, 0.0, 0.2]])  # the network leans to sad
    angry = tf.constant([[3.0, 1, 1, 1, 1, 1, 1]])
    with tf.GradientTape() as tape:
        total = loss(angry, logits)
    grad = tape.gradient(total, logits).numpy()[0]
    with tf.GradientTape() as tape:
        plain = masked_cross_entropy(angry, logits)
    plain_grad = tape.gradient(plain, logits).numpy()[0]
    assert float(total[0]) > float(plain[0])
    # Descent moves against the gradient: the arousal term lowers the calm classes more,
    # and raises happy and fearful (activated) against what the category loss alone does.
    assert grad[2] - plain_grad[2] > 0.05 and grad[0] - plain_grad[0] > 0.0
    assert grad[1] - plain_grad[1] < 0.0 and grad[4] - plain_grad[4] < 0.0
    # Disgust has no side: the term adds nothing for a disgust clip.
    disgust = tf.constant([[5.0, 1, 1, 1, 1, 1, 1]])
    assert float(loss(disgust, logits)[0]) == pytest.approx(float(masked_cross_entropy(disgust, logits)[0]), rel=1e-6)


@needs_tensorflow
def test_train_runs_with_the_phone_set_and_the_arousal_term(ravdess_root: Path, tmp_path: Path):
    from test_train import serd

    done = serd("train", "--data", ravdess_root, "--actors", "1,2,3", "--folds", "3", "--only-folds", "1",
                "--epochs", "1", "--no-export", "--augment-on", "phone,agc,ambient", "--arousal-weight", "1",
                "--out", tmp_path, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ambient pool:" in done.stderr and "epoch 1/1" in done.stderr
    settings = json.loads((tmp_path / "results.json").read_text())["fold1"]["settings"]
    assert settings["arousal_weight"] == 1.0 and {"phone", "agc", "ambient"} <= set(settings["augment"])
    refused = serd("train", "--arousal-weight", "-1", "--out", tmp_path, cwd=tmp_path)
    assert refused.returncode == 2 and refused.stderr.strip() == "serd: --arousal-weight: expected 0 or more, got -1.0"
