"""The numpy log-mel frontend against librosa (its reference), on real RAVDESS clips."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from serd.audiofile import read_audio
from serd.features import FeatureParams, LogMel, level_dbfs, mel_filterbank


PARAMS = FeatureParams()
DB_TOLERANCE = 1e-3
"""dB: both sides compute in float32; measured differences are below 1e-4 dB."""
GAIN_DB = -12.0


@pytest.fixture(scope="module")
def librosa():
    return pytest.importorskip("librosa", reason="librosa is the reference for the frontend (train extra)")


def librosa_db(librosa, samples: np.ndarray, p: FeatureParams) -> np.ndarray:
    mel = librosa.feature.melspectrogram(
        y=samples,
        sr=p.sample_rate,
        n_fft=p.n_fft,
        hop_length=p.hop_length,
        win_length=p.win_length,
        window="hann",
        center=False,
        power=2.0,
        n_mels=p.n_mels,
        fmin=p.fmin,
        fmax=p.fmax,
        norm="slaney",
        htk=False,
    )
    return librosa.power_to_db(mel, ref=1.0, amin=p.amin, top_db=p.top_db)


def middle_window(samples: np.ndarray, p: FeatureParams = PARAMS) -> np.ndarray:
    """The window in the middle of a clip (RAVDESS clips are 2.9-5.3 s, speech in the middle)."""
    start = (samples.shape[0] - p.window_samples) // 2
    assert start >= 0, "clip shorter than one window"
    return samples[start : start + p.window_samples]


@pytest.fixture(scope="module")
def clips(sample_clip_paths) -> dict[str, np.ndarray]:
    return {path.name: read_audio(path, PARAMS.sample_rate) for path in sample_clip_paths}


def test_sample_clips_come_from_different_actors(sample_clip_paths):
    actors = {path.stem.split("-")[-1] for path in sample_clip_paths}
    assert len(actors) == len(sample_clip_paths) >= 4


def test_whole_clip_db_matches_librosa(librosa, clips):
    logmel = LogMel(PARAMS)
    for name, samples in clips.items():
        ours = logmel.power_to_db(logmel.mel_power(samples))
        reference = librosa_db(librosa, samples, PARAMS)
        assert ours.shape == reference.shape, name
        np.testing.assert_allclose(ours, reference, rtol=0, atol=DB_TOLERANCE, err_msg=name)


def test_window_db_matches_librosa_and_the_longer_signal(librosa, clips):
    """No centring: a window's frames are exactly the frames of the clip it was cut from."""
    logmel = LogMel(PARAMS)
    samples = next(iter(clips.values()))
    offset_frames = 37
    start = offset_frames * PARAMS.hop_length
    window = samples[start : start + PARAMS.window_samples]
    window_power = logmel.mel_power(window)
    clip_power = logmel.mel_power(samples)[:, offset_frames : offset_frames + PARAMS.n_frames]
    np.testing.assert_allclose(window_power, clip_power, rtol=1e-5, atol=1e-12)
    np.testing.assert_allclose(logmel.power_to_db(window_power), librosa_db(librosa, window, PARAMS), rtol=0, atol=DB_TOLERANCE)


@pytest.mark.parametrize(
    "sample_rate, n_fft, n_mels, fmin, fmax",
    [
        (16_000, 512, 64, 50.0, 8000.0),  # the default
        (16_000, 512, 40, 0.0, 7600.0),
        (22_050, 1024, 128, 20.0, 11_025.0),
    ],
)
def test_filterbank_matches_librosa_slaney(librosa, sample_rate, n_fft, n_mels, fmin, fmax):
    ours = mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax)
    reference = librosa.filters.mel(
        sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, norm="slaney", htk=False, dtype=np.float64
    )
    assert ours.shape == (n_mels, 1 + n_fft // 2)
    np.testing.assert_allclose(ours, reference, rtol=1e-9, atol=1e-12)
    assert np.all((ours > 0).sum(axis=1) >= 1), "a mel band with no FFT bin in it"


def test_features_have_the_declared_shape_and_dtype(clips):
    logmel = LogMel(PARAMS)
    features = logmel(middle_window(next(iter(clips.values()))))
    assert features.shape == PARAMS.shape == (PARAMS.n_mels, PARAMS.n_frames) == (64, 197)
    assert features.dtype == np.float32
    assert np.all(np.isfinite(features))


def test_standardisation_gives_mean_0_std_1(clips):
    logmel = LogMel(PARAMS)
    for name, samples in clips.items():
        features = logmel(middle_window(samples))
        assert abs(float(features.mean())) < 1e-5, name
        # The +1e-3 guard in the denominator shrinks std by 1e-3 / std(dB), ~1e-4 for speech.
        assert abs(float(features.std()) - 1.0) < 1e-3, name


def test_silence_gives_zeros_not_nan():
    features = LogMel(PARAMS)(np.zeros(PARAMS.window_samples, dtype=np.float32))
    assert np.array_equal(features, np.zeros(PARAMS.shape, dtype=np.float32))


def test_gain_shifts_db_by_exactly_the_gain_down_to_the_floor(clips):
    """In dB, -12 dB of gain is -12 dB in every band, except that the amin floor is absolute.

    expected = max(db - 12, floor) with floor = max(10 log10(amin), peak - 12 - top_db).
    """
    logmel = LogMel(PARAMS)
    gain = np.float32(10.0 ** (GAIN_DB / 20.0))
    floor_db = 10.0 * np.log10(PARAMS.amin)
    for name, samples in clips.items():
        window = middle_window(samples)
        db = logmel.power_to_db(logmel.mel_power(window))
        quieter = logmel.power_to_db(logmel.mel_power(window * gain))
        expected = np.maximum(db + GAIN_DB, max(floor_db, db.max() + GAIN_DB - PARAMS.top_db))
        np.testing.assert_allclose(quieter, expected, rtol=0, atol=DB_TOLERANCE, err_msg=name)


def test_default_features_are_gain_invariant(clips):
    """A clip at -12 dB (and at -30 dB) gives the same features to float32 rounding (atol 1e-4).

    The clamp is relative to the window's loudest cell and standardisation removes a
    constant dB offset; amin (-140 dB) is far below any of these clips' clamp level,
    so nothing in the default frontend depends on the recording level.
    """
    logmel = LogMel(PARAMS)
    for gain_db in (GAIN_DB, -30.0):
        gain = np.float32(10.0 ** (gain_db / 20.0))
        for name, samples in clips.items():
            window = middle_window(samples)
            np.testing.assert_allclose(logmel(window * gain), logmel(window), rtol=0, atol=1e-4, err_msg=f"{name} {gain_db}")


def test_an_absolute_floor_would_break_gain_invariance(clips):
    """The reason for the relative clamp: with an absolute floor at -60 dB (amin 1e-6, the
    frontend's first version), a quieter clip loses cells to the floor and its features change.
    What must still hold exactly: on every cell the floor touches in neither version, the
    quieter clip's features are the same affine map (new mean and std) of the original ones.
    """
    params = dataclasses.replace(PARAMS, amin=1e-6, top_db=80.0)
    logmel = LogMel(params)
    gain = np.float32(10.0 ** (GAIN_DB / 20.0))
    floor_db = 10.0 * np.log10(params.amin)
    changed = 0
    for name, samples in clips.items():
        window = middle_window(samples, params)
        db = logmel.power_to_db(logmel.mel_power(window))
        free = db > floor_db - GAIN_DB + 0.01
        assert free.sum() > 1000, f"{name}: too few cells above the floor to test"
        original, quieter = logmel(window)[free], logmel(window * gain)[free]
        slope, intercept = np.polyfit(original, quieter, 1)
        np.testing.assert_allclose(quieter, slope * original + intercept, rtol=0, atol=1e-4, err_msg=name)
        changed += int(np.abs(logmel(window * gain) - logmel(window)).mean() > 0.05)
    assert changed >= 1, "expected the absolute floor to change some clip's features"


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((2, PARAMS.window_samples), dtype=np.float32), "1-D"),
        (np.zeros(PARAMS.n_fft - 1, dtype=np.float32), "at least"),
        (np.zeros(0, dtype=np.float32), "at least"),
    ],
)
def test_mel_power_rejects_bad_input(bad, message):
    with pytest.raises(ValueError, match=message):
        LogMel(PARAMS).mel_power(bad)


@pytest.mark.parametrize(
    "shape",
    [(PARAMS.window_samples - 1,), (PARAMS.window_samples + 1,), (1, PARAMS.window_samples), (PARAMS.n_fft,)],
)
def test_features_reject_anything_but_one_window(shape):
    with pytest.raises(ValueError, match=f"{PARAMS.window_samples} samples"):
        LogMel(PARAMS)(np.zeros(shape, dtype=np.float32))


@pytest.mark.parametrize("amplitude", [1.0, 0.5, 0.01])
def test_level_dbfs_of_a_sine(amplitude):
    """A sine of amplitude A has RMS A/sqrt(2): 20 log10(A) - 3.01 dBFS (whole periods, so exact)."""
    sample_rate, freq = 16_000, 1000.0
    t = np.arange(sample_rate) / sample_rate
    sine = (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    expected = 20.0 * np.log10(amplitude) - 10.0 * np.log10(2.0)
    assert level_dbfs(sine) == pytest.approx(expected, abs=1e-3)


def test_level_dbfs_of_full_scale_square_and_silence():
    square = np.where(np.arange(1600) % 32 < 16, 1.0, -1.0).astype(np.float32)
    assert level_dbfs(square) == pytest.approx(0.0, abs=1e-6)
    assert level_dbfs(np.zeros(1600, dtype=np.float32)) == pytest.approx(-120.0)
    assert level_dbfs(np.zeros(0, dtype=np.float32)) == pytest.approx(-120.0)


def test_feature_params_round_trip_through_the_sidecar_dict():
    params = FeatureParams(window_s=3.0, n_mels=40, fmin=20.0)
    assert FeatureParams.from_dict(params.to_dict()) == params
    incomplete = params.to_dict()
    del incomplete["hop_length"]
    with pytest.raises(ValueError, match="hop_length"):
        FeatureParams.from_dict(incomplete)


def test_band_mean_round_trips_and_older_sidecars_default_to_off():
    params = FeatureParams(band_mean=True)
    assert FeatureParams.from_dict(params.to_dict()) == params
    assert "per-band mean removed" in params.to_dict()["normalisation"]
    older = FeatureParams().to_dict()
    del older["band_mean"]  # a v1 sidecar
    assert FeatureParams.from_dict(older).band_mean is False


def test_band_mean_removes_a_microphone_colouring_that_plain_standardisation_keeps(clips):
    """A fixed filter is a fixed dB offset per band: with band_mean it (nearly) vanishes from the features."""
    from serd.train.channel import Channel

    # Resonances of a cheap capsule: a colouring inside the dynamic range. (A steep low-pass or
    # tilt pushes bands under the top_db clamp: that loses content, which no normalisation restores.)
    muffled = Channel(resonances=((2500.0, 8.0, 1.0), (600.0, -6.0, 0.7)))
    plain, banded = LogMel(PARAMS), LogMel(dataclasses.replace(PARAMS, band_mean=True))
    ratios = []
    for name, samples in clips.items():
        window = middle_window(samples)
        coloured = muffled.apply(window, PARAMS.sample_rate)
        by_band = banded(window)
        assert np.abs(by_band.mean(axis=1)).max() < 1e-4, name  # every band centred
        change_plain = np.abs(plain(coloured) - plain(window)).mean()
        change_banded = np.abs(banded(coloured) - by_band).mean()
        ratios.append(change_banded / change_plain)
        assert change_banded < change_plain, (name, change_banded, change_plain)
    # Not zero: quiet cells sit at the top_db clamp, which the filter moves (measured: 0.29-0.85, mean 0.53).
    assert np.mean(ratios) < 0.75, ratios
