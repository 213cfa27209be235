"""The log-mel frontend: one implementation for training, the daemon and analysis.

Numpy only (no librosa at run time: importing it costs seconds and pulls in
numba). `tests/test_features.py` checks it against librosa on real clips.

A window of `window_s` seconds becomes a `(n_mels, n_frames)` float32 array:
power STFT (Hann, no centring, so a window's frames are exactly the frames of the
longer signal it was cut from) -> Slaney mel filterbank -> dB, clamped at
`top_db` below the window's loudest cell -> per-window standardisation.

The clamp is relative and the floor `amin` is far below any real signal, so
the features do not depend on the recording level at all (a quiet speaker far
from the microphone looks like a loud one near it), and exact digital silence
(a RAVDESS artefact: 0-17 % of a clip, depending on the actor) and a quiet
room both sit at the same clamp. Per-window standardisation removes the rest of
the level. A model fed absolute levels learns the actor instead of the emotion.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

SAMPLE_RATE = 16_000


@dataclass(frozen=True)
class FeatureParams:
    """Everything needed to reproduce the features; written into each model sidecar."""

    sample_rate: int = SAMPLE_RATE
    """Model sample rate in Hz; sources resample to it."""
    window_s: float = 2.0
    """Seconds of audio the model sees at once."""
    n_fft: int = 512
    """FFT size in samples (32 ms at 16 kHz)."""
    win_length: int = 400
    """Hann window length in samples (25 ms), zero-padded to n_fft."""
    hop_length: int = 160
    """Samples between STFT frames (10 ms)."""
    n_mels: int = 64
    """Mel bands (Slaney scale and area normalisation, as librosa's default)."""
    fmin: float = 50.0
    """Lowest mel edge in Hz: below it is mostly hum and handling noise."""
    fmax: float = 8000.0
    """Highest mel edge in Hz (Nyquist at 16 kHz)."""
    amin: float = 1e-14
    """Power floor before the log (-140 dB): only keeps log10 finite; the relative clamp does the work."""
    top_db: float = 60.0
    """Values more than this below the window's loudest cell are clamped (librosa's top_db)."""
    band_mean: bool = False
    """Subtract each mel band's mean over the window's frames before standardising.

    A microphone, a room and a voice's long-term timbre are (nearly) fixed filters: a
    constant dB offset per band. Removing the per-band mean removes them; what is left is
    how each band moves within the window. Older sidecars lack the key (False).
    """

    @property
    def window_samples(self) -> int:
        return int(round(self.window_s * self.sample_rate))

    @property
    def n_frames(self) -> int:
        return 1 + (self.window_samples - self.n_fft) // self.hop_length

    @property
    def shape(self) -> tuple[int, int]:
        """Shape of one window's features: (n_mels, n_frames)."""
        return (self.n_mels, self.n_frames)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["normalisation"] = ("per-band mean removed, then " if self.band_mean else "") + "per-window standardisation (mean 0, std 1)"
        d["stft"] = "power, hann(win_length) centred in n_fft, center=False"
        d["mel"] = "slaney scale, slaney norm"
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FeatureParams":
        names = {f.name for f in dataclasses.fields(cls)}
        d = {"band_mean": False, **d}  # added in serd 0.2
        missing = names - set(d)
        if missing:
            raise ValueError(f"feature parameters lack {sorted(missing)}")
        return cls(**{k: d[k] for k in names})


def hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz, logarithmic above (librosa htk=False)."""
    hz = np.asarray(hz, dtype=np.float64)
    f_sp = 200.0 / 3
    mels = hz / f_sp
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    log_region = hz >= min_log_hz
    mels = np.where(log_region, min_log_mel + np.log(np.maximum(hz, 1e-10) / min_log_hz) / logstep, mels)
    return mels


def mel_to_hz(mels: np.ndarray) -> np.ndarray:
    mels = np.asarray(mels, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(mels >= min_log_mel, min_log_hz * np.exp(logstep * (mels - min_log_mel)), f_sp * mels)


def mel_edges_hz(n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """The n_mels + 2 edge frequencies of the mel bands; band k spans edges k..k+2, centred on k+1."""
    return mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))


@lru_cache(maxsize=8)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """(n_mels, 1 + n_fft // 2) triangular filters with Slaney area normalisation."""
    fft_freqs = np.linspace(0.0, sample_rate / 2.0, 1 + n_fft // 2)
    mel_edges = mel_edges_hz(n_mels, fmin, fmax)
    widths = np.diff(mel_edges)
    ramps = mel_edges[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_edges[2:] - mel_edges[:-2]))[:, None]
    weights.setflags(write=False)
    return weights


@lru_cache(maxsize=8)
def _fft_window(win_length: int, n_fft: int) -> np.ndarray:
    # Periodic Hann (as scipy.signal.get_window('hann', N, fftbins=True)), centred in n_fft.
    n = np.arange(win_length)
    hann = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / win_length)
    window = np.zeros(n_fft)
    start = (n_fft - win_length) // 2
    window[start : start + win_length] = hann
    window.setflags(write=False)
    return window


class LogMel:
    """Turns audio windows into model features, with its constants computed once."""

    def __init__(self, params: FeatureParams) -> None:
        self.params = params
        p = params
        self._window = _fft_window(p.win_length, p.n_fft).astype(np.float32)
        self._mel = mel_filterbank(p.sample_rate, p.n_fft, p.n_mels, p.fmin, p.fmax).astype(np.float32)
        self._amin_db = 10.0 * np.log10(p.amin)

    def mel_power(self, samples: np.ndarray) -> np.ndarray:
        """(n_mels, n_frames) mel power of a float signal in [-1, 1]; no centring."""
        p = self.params
        x = np.asarray(samples, dtype=np.float32)
        if x.ndim != 1:
            raise ValueError(f"expected mono samples (1-D), got shape {x.shape}")
        if x.shape[0] < p.n_fft:
            raise ValueError(f"need at least {p.n_fft} samples, got {x.shape[0]}")
        n_frames = 1 + (x.shape[0] - p.n_fft) // p.hop_length
        frames = np.lib.stride_tricks.sliding_window_view(x, p.n_fft)[:: p.hop_length][:n_frames]
        spectrum = np.fft.rfft(frames * self._window, axis=1)
        power = (spectrum.real**2 + spectrum.imag**2).astype(np.float32)
        return self._mel @ power.T

    def power_to_db(self, mel_power: np.ndarray) -> np.ndarray:
        """dB with the floor and top_db clamp (librosa.power_to_db with ref=1)."""
        return self.clamp_db(self.frame_db(mel_power))

    def frame_db(self, mel_power: np.ndarray) -> np.ndarray:
        """dB with the floor: frame by frame, so shared frames keep theirs (`StreamingLogMel`)."""
        return 10.0 * np.log10(np.maximum(mel_power, self.params.amin))

    def clamp_db(self, db: np.ndarray) -> np.ndarray:
        """The top_db clamp: at most `top_db` below the window's loudest bin."""
        return np.maximum(db, db.max() - self.params.top_db)

    def standardise(self, db: np.ndarray) -> np.ndarray:
        # Per-window: removes recording level and gain, which say nothing about emotion;
        # with band_mean, per band too (the channel's and the voice's fixed colouring).
        centred = db - (db.mean(axis=1, keepdims=True) if self.params.band_mean else db.mean())
        return (centred / (centred.std() + 1e-3)).astype(np.float32)

    def __call__(self, window: np.ndarray) -> np.ndarray:
        """Features of one window of exactly `window_samples` samples."""
        if window.shape != (self.params.window_samples,):
            raise ValueError(f"expected a window of {self.params.window_samples} samples, got shape {window.shape}")
        return self.standardise(self.power_to_db(self.mel_power(window)))


class StreamingLogMel(LogMel):
    """LogMel for consecutive overlapping windows of one stream: computes only the new frames.

    Windows at a hop that is a multiple of `hop_length` share most STFT frames
    (75 % at 2 s windows and 0.5 s hops); the mel power of the shared frames, and
    their dB, are reused, and the top_db clamp and standardisation are applied per
    window as always. Same numbers as `LogMel` up to float rounding in the matrix product.
    """

    def __init__(self, params: FeatureParams) -> None:
        super().__init__(params)
        self._last_start: int | None = None
        self._last_db: np.ndarray | None = None

    def reset(self) -> None:
        self._last_start = self._last_db = None

    def window_features(self, window: np.ndarray, start_sample: int) -> np.ndarray:
        p = self.params
        if window.shape != (p.window_samples,):
            raise ValueError(f"expected a window of {p.window_samples} samples, got shape {window.shape}")
        n_frames = p.n_frames
        shift = None
        if self._last_start is not None:
            step = start_sample - self._last_start
            if 0 < step and step % p.hop_length == 0 and step // p.hop_length < n_frames:
                shift = step // p.hop_length
        if shift is None:
            db = self.frame_db(self.mel_power(window))
        else:
            first_new = n_frames - shift
            new = self.frame_db(self.mel_power(window[first_new * p.hop_length :]))
            db = np.concatenate((self._last_db[:, shift:], new), axis=1)
        self._last_start, self._last_db = start_sample, db
        return self.standardise(self.clamp_db(db))


def level_dbfs(samples: np.ndarray) -> float:
    """RMS level in dB relative to full scale (a full-scale square wave is 0 dBFS), DC offset removed.

    A constant offset is not sound: a microphone 1 % off centre (-40 dBFS of DC) would
    otherwise lift every silent window over the speech gate and get it classified.
    """
    x = np.asarray(samples, dtype=np.float32)
    if x.shape[0]:
        x = x - x.mean()  # explicitly, not dot/n - mean**2: that cancels in float32 under a large offset
    power = float(np.dot(x, x)) / max(1, x.shape[0])
    return 10.0 * np.log10(max(power, 1e-12))
