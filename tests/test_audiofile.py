"""Reading audio files: real FLAC, resampling and downmixing, and refusing what is not audio."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import soundfile

from serd.audiofile import AudioFileError, file_duration_s, iter_blocks, read_audio

MODEL_RATE = 16_000
TONE_HZ = 440.0


def test_real_flac_is_float32_mono_16k_and_unchanged(sample_clip_paths):
    for path in sample_clip_paths:
        audio = read_audio(path, MODEL_RATE)
        reference, rate = soundfile.read(str(path), dtype="float32")
        assert rate == MODEL_RATE
        assert audio.dtype == np.float32 and audio.ndim == 1
        np.testing.assert_array_equal(audio, reference)  # same rate: no resampling, bit-exact
        assert file_duration_s(path) == pytest.approx(audio.shape[0] / MODEL_RATE)
        assert 2.9 < audio.shape[0] / MODEL_RATE < 5.3  # README: clips are 2.94-5.27 s


def test_blocks_are_one_second_and_join_up_to_the_file(sample_clip_paths):
    path = sample_clip_paths[0]
    blocks = list(iter_blocks(path, MODEL_RATE))
    assert all(b.dtype == np.float32 and b.ndim == 1 for b in blocks)
    assert [b.shape[0] for b in blocks[:-1]] == [MODEL_RATE] * (len(blocks) - 1)
    np.testing.assert_array_equal(np.concatenate(blocks), read_audio(path, MODEL_RATE))


def tone(seconds: float, rate: int, amplitude: float) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.float32)


def peak_hz(audio: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(audio.shape[0])))
    return float(np.fft.rfftfreq(audio.shape[0], 1.0 / rate)[np.argmax(spectrum)])


def test_44k1_stereo_wav_is_resampled_and_downmixed(tmp_path):
    rate, seconds = 44_100, 2.0
    left, right = tone(seconds, rate, 0.5), tone(seconds, rate, 0.3)
    path = tmp_path / "stereo.wav"
    soundfile.write(str(path), np.stack([left, right], axis=1), rate, subtype="PCM_16")
    audio = read_audio(path, MODEL_RATE)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(audio.shape[0] - seconds * MODEL_RATE) <= 2, audio.shape
    assert peak_hz(audio, MODEL_RATE) == pytest.approx(TONE_HZ, abs=1.0)  # bins are 0.5 Hz over 2 s
    # The mean of the channels: a 0.4 sine, RMS 0.4/sqrt(2) (away from the resampler's edges).
    middle = audio[MODEL_RATE // 4 : -MODEL_RATE // 4]
    assert float(np.sqrt(np.mean(middle**2))) == pytest.approx(0.4 / np.sqrt(2), rel=0.01)


def test_downmix_averages_rather_than_taking_one_channel(tmp_path):
    rate = 44_100
    left = tone(1.0, rate, 0.5)
    path = tmp_path / "opposite.wav"
    soundfile.write(str(path), np.stack([left, -left], axis=1), rate, subtype="FLOAT")
    audio = read_audio(path, MODEL_RATE)
    assert audio.shape[0] > 0.9 * MODEL_RATE
    assert np.abs(audio).max() < 1e-6, "opposite channels must cancel"


def test_long_resampled_file_in_blocks_matches_one_pass(tmp_path):
    """Block-wise resampling (a stream) gives the same signal as resampling the whole file at once."""
    import soxr

    rate = 22_050
    signal = np.random.default_rng(3).uniform(-0.5, 0.5, int(3.3 * rate)).astype(np.float32)
    path = tmp_path / "noise.wav"
    soundfile.write(str(path), signal, rate, subtype="FLOAT")
    streamed = read_audio(path, MODEL_RATE)
    whole = soxr.resample(signal, rate, MODEL_RATE, quality="HQ")
    assert streamed.shape == whole.shape
    np.testing.assert_allclose(streamed, whole, rtol=0, atol=1e-5)


def test_non_finite_float_samples_become_finite(tmp_path):
    samples = tone(0.5, MODEL_RATE, 0.5)
    samples[100], samples[200], samples[300], samples[400] = np.nan, np.inf, -np.inf, 3.0
    path = tmp_path / "broken.wav"
    soundfile.write(str(path), samples, MODEL_RATE, subtype="FLOAT")
    audio = read_audio(path, MODEL_RATE)
    assert np.all(np.isfinite(audio)) and np.abs(audio).max() <= 1.0
    assert (audio[100], audio[200], audio[300], audio[400]) == (0.0, 1.0, -1.0, 1.0)
    untouched = np.ones(samples.shape[0], dtype=bool)
    untouched[[100, 200, 300, 400]] = False
    np.testing.assert_array_equal(audio[untouched], samples[untouched])


def test_non_finite_samples_do_not_poison_the_resampler(tmp_path):
    rate = 48_000
    samples = np.tile(tone(1.0, rate, 0.5), (2, 1)).T.copy()
    samples[1000, 0], samples[2000, 1] = np.nan, np.inf
    path = tmp_path / "broken48k.wav"
    soundfile.write(str(path), samples, rate, subtype="FLOAT")
    audio = read_audio(path, MODEL_RATE)
    assert audio.shape[0] == pytest.approx(MODEL_RATE, abs=2)
    assert np.all(np.isfinite(audio)) and np.abs(audio).max() <= 1.5


def assert_one_line_error_naming(path, excinfo) -> str:
    text = str(excinfo.value)
    assert str(path) in text
    assert "\n" not in text
    return text


def test_missing_file(tmp_path):
    path = tmp_path / "nothing.wav"
    with pytest.raises(AudioFileError) as info:
        read_audio(path, MODEL_RATE)
    assert "no such file" in assert_one_line_error_naming(path, info)
    with pytest.raises(AudioFileError):
        file_duration_s(path)


def test_directory(tmp_path):
    with pytest.raises(AudioFileError) as info:
        read_audio(tmp_path, MODEL_RATE)
    assert "directory" in assert_one_line_error_naming(tmp_path, info)


@pytest.mark.parametrize(
    "name, content, reason",
    [
        ("empty.wav", b"", "empty file (0 bytes)"),
        ("notes.wav", b"this is a text file, not a RIFF header\n" * 20, "not a readable audio file"),
        ("header-only.wav", b"RIFF", "not a readable audio file"),
        ("zeros.flac", bytes(4096), "not a readable audio file"),
    ],
)
def test_files_that_are_not_audio(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(AudioFileError) as info:
        read_audio(path, MODEL_RATE)
    assert reason in assert_one_line_error_naming(path, info)
    with pytest.raises(AudioFileError):
        file_duration_s(path)


def test_truncated_flac_is_an_error_not_a_crash(sample_clip_paths, tmp_path):
    path = tmp_path / "truncated.flac"
    shutil.copyfile(sample_clip_paths[0], path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioFileError) as info:
        read_audio(path, MODEL_RATE)
    assert_one_line_error_naming(path, info)


def test_str_paths_work_like_paths(sample_clip_paths):
    path = sample_clip_paths[1]
    np.testing.assert_array_equal(read_audio(str(path), MODEL_RATE), read_audio(path, MODEL_RATE))
