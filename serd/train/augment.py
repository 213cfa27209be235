"""Augmentation aimed at a real classroom, each kind switchable.

Waveform: gain, time shift (where the window is cut), additive noise (white,
pink, or babble from other training speakers) at 0-30 dB SNR, simple synthetic
reverberation, and a low noise floor so exact digital silence (a RAVDESS
artefact) never reaches the model; what a phone does (a call's band and codec,
automatic gain, a real place's background: `serd/train/phone.py`). Features: SpecAugment time/frequency masks, and
a frequency warp (another vocal tract length and pitch: other voices than the
corpora's few dozen).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from serd.features import FeatureParams, mel_edges_hz
from serd.train.channel import random_channel
from serd.train.phone import ambient, auto_gain, phone_band

AUGMENTATIONS = ("gain", "shift", "noise", "babble", "reverb", "specaugment", "floor", "channel", "warp",
                 "phone", "agc", "ambient")


@dataclass(frozen=True)
class AugmentSettings:
    gain: bool = True
    shift: bool = True
    noise: bool = True
    babble: bool = True
    reverb: bool = True
    specaugment: bool = True
    floor: bool = True
    channel: bool = True
    warp: bool = False
    """Off unless asked for (--augment-on warp): it moved neither cross-corpus figure (model card)."""
    noise_p: float = 0.5
    snr_db: tuple[float, float] = (0.0, 30.0)
    reverb_p: float = 0.3
    gain_db: float = 12.0
    channel_p: float = 0.6
    rt60_s: tuple[float, float] = (0.2, 0.8)
    warp_p: float = 0.5
    warp_range: tuple[float, float] = (0.88, 1.12)
    """Frequency scale factors: +-12 % is about the spread of vocal tract lengths among adults."""
    phone: bool = False
    agc: bool = False
    ambient: bool = False
    """The phone set is off unless asked for (--augment-on phone,agc,ambient): see the model card's ablation."""
    phone_p: float = 0.3
    agc_p: float = 0.3
    ambient_p: float = 0.3
    ambient_snr_db: tuple[float, float] = (0.0, 20.0)

    @classmethod
    def none(cls) -> "AugmentSettings":
        return cls(**{name: False for name in AUGMENTATIONS})

    def without(self, names: list[str]) -> "AugmentSettings":
        """These augmentations switched off (the others as they are)."""
        return self._switched(names, False)

    def with_(self, names: list[str]) -> "AugmentSettings":
        """These augmentations switched on (the others as they are)."""
        return self._switched(names, True)

    def _switched(self, names: list[str], on: bool) -> "AugmentSettings":
        unknown = set(names) - set(AUGMENTATIONS)
        if unknown:
            raise ValueError(f"unknown augmentation(s) {sorted(unknown)}; expected some of {AUGMENTATIONS}")
        return dataclasses.replace(self, **{name: on for name in names})

    def enabled(self) -> list[str]:
        return [name for name in AUGMENTATIONS if getattr(self, name)]


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """1/f noise by shaping white noise in the frequency domain; unit RMS."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    scale = np.ones(spectrum.shape[0])
    scale[1:] = 1.0 / np.sqrt(np.arange(1, spectrum.shape[0]))
    noise = np.fft.irfft(spectrum * scale, n)
    return (noise / (np.sqrt(np.mean(noise**2)) + 1e-12)).astype(np.float32)


def white_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal(n).astype(np.float32)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)) + 1e-20))


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """Add `noise` scaled so that speech RMS / noise RMS = snr_db."""
    gain = rms(speech) / (rms(noise) * 10.0 ** (snr_db / 20.0))
    return (speech + gain * noise).astype(np.float32)


def babble(pool: list[np.ndarray], n: int, rng: np.random.Generator, talkers: int = 4) -> np.ndarray:
    """Several other speakers at once, each a random excerpt, level-matched."""
    out = np.zeros(n, dtype=np.float32)
    for _ in range(talkers):
        clip = pool[int(rng.integers(len(pool)))]
        if clip.shape[0] <= n:
            piece = np.resize(clip, n)
        else:
            start = int(rng.integers(clip.shape[0] - n))
            piece = clip[start : start + n]
        out += piece / rms(piece)
    return out


def reverberate(x: np.ndarray, sample_rate: int, rng: np.random.Generator,
                rt60_s: tuple[float, float] = (0.2, 0.8)) -> np.ndarray:
    """Convolve with exponentially decaying noise (RT60 drawn from `rt60_s`): a plain room."""
    rt60 = float(rng.uniform(*rt60_s))
    length = int(rt60 * sample_rate)
    t = np.arange(length) / sample_rate
    impulse = rng.standard_normal(length) * np.exp(-6.9 * t / rt60)  # -60 dB at rt60
    impulse[0] = 1.0
    impulse /= np.sqrt(np.sum(impulse**2))
    size = x.shape[0] + length - 1
    nfft = 1 << (size - 1).bit_length()
    wet = np.fft.irfft(np.fft.rfft(x, nfft) * np.fft.rfft(impulse, nfft), nfft)[: x.shape[0]]
    return (wet * (rms(x) / rms(wet))).astype(np.float32)


def augment_wave(
    x: np.ndarray,
    settings: AugmentSettings,
    rng: np.random.Generator,
    babble_pool: list[np.ndarray] | None,
    sample_rate: int,
    ambient_pool: list[np.ndarray] | None = None,
) -> np.ndarray:
    """One augmented copy of a training window (time shift is done by the caller's crop)."""
    x = x.astype(np.float32, copy=True)
    if settings.reverb and rng.random() < settings.reverb_p:
        x = reverberate(x, sample_rate, rng, settings.rt60_s)
    if rng.random() < settings.noise_p:
        kinds = [k for k in ("noise", "babble") if getattr(settings, k) and (k != "babble" or babble_pool)]
        if kinds:
            kind = kinds[int(rng.integers(len(kinds)))]
            n = x.shape[0]
            if kind == "babble":
                noise = babble(babble_pool, n, rng)
            else:
                noise = pink_noise(n, rng) if rng.random() < 0.5 else white_noise(n, rng)
            x = mix_at_snr(x, noise, float(rng.uniform(*settings.snr_db)))
    if settings.ambient and ambient_pool and rng.random() < settings.ambient_p:
        x = mix_at_snr(x, ambient(ambient_pool, x.shape[0], rng), float(rng.uniform(*settings.ambient_snr_db)))
    if settings.channel and rng.random() < settings.channel_p:
        # The microphone hears the room and its noise: its response comes after them.
        x = random_channel(rng).apply(x, sample_rate)
    # A phone levels what its microphone hears, then its codec sends it.
    if settings.agc and rng.random() < settings.agc_p:
        x = auto_gain(x, sample_rate, rng)
    if settings.phone and rng.random() < settings.phone_p:
        x = phone_band(x, sample_rate, rng)
    if settings.gain:
        x *= 10.0 ** (float(rng.uniform(-settings.gain_db, settings.gain_db)) / 20.0)
    if settings.floor:
        # A real microphone never delivers exact zeros: a quiet floor at -85..-60 dBFS.
        floor_db = float(rng.uniform(-85.0, -60.0))
        x += pink_noise(x.shape[0], rng) * 10.0 ** (floor_db / 20.0)
    return np.clip(x, -1.0, 1.0)


def spec_augment(features: np.ndarray, rng: np.random.Generator, freq_masks: int = 2, time_masks: int = 2) -> np.ndarray:
    """Zero (the standardised mean) random mel bands and frames."""
    out = features.copy()
    n_mels, n_frames = out.shape
    for _ in range(freq_masks):
        width = int(rng.integers(0, n_mels // 8 + 1))
        start = int(rng.integers(0, n_mels - width + 1))
        out[start : start + width, :] = 0.0
    for _ in range(time_masks):
        width = int(rng.integers(0, n_frames // 10 + 1))
        start = int(rng.integers(0, n_frames - width + 1))
        out[:, start : start + width] = 0.0
    return out


def warp_frequency(features: np.ndarray, factor: float, params: FeatureParams) -> np.ndarray:
    """The features of the same sound with every frequency multiplied by `factor`.

    Vocal tract length perturbation done on the mel image: output band k takes what the
    input had at (its centre frequency / factor), interpolated between the two nearest
    bands; beyond the edges the edge band repeats. Works on normalised features (a
    zero-mean band stays zero-mean), so it follows `LogMel` like SpecAugment.
    """
    centres = mel_edges_hz(params.n_mels, params.fmin, params.fmax)[1:-1]
    source = np.interp(centres / factor, centres, np.arange(params.n_mels, dtype=np.float64))
    below = np.floor(source).astype(int)
    above = np.minimum(below + 1, params.n_mels - 1)
    frac = (source - below)[:, None]
    return ((1.0 - frac) * features[below] + frac * features[above]).astype(features.dtype)
