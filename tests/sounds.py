"""Sounds for judging a speech gate: speech windows from the corpora, and classroom non-speech made from numbers.

Used by the VAD tests and by `benchmarks/vad_eval.py`. Every generator takes a
`numpy.random.Generator`, so a seed gives the same sound on every machine. Each
returns `n` float32 samples at unit RMS; `at_level` sets the level.

Non-speech kinds (what a classroom is full of): white, pink and brown noise;
fan/HVAC hum (mains harmonics, a blade tone, coloured noise); clapping, footsteps,
door slams and keyboard clicks (impulse trains through a room response); chord
music; and the non-speech parts of the corpora (breaths, a noise floor between takes).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile

# mix_at_snr is re-exported: the tests and the benchmark make their mixtures (speech over fan noise) with it.
from serd.train.augment import mix_at_snr, pink_noise, reverberate, rms, white_noise  # noqa: F401

SAMPLE_RATE = 16_000
REPO_ROOT = Path(__file__).resolve().parents[1]


def data_root() -> Path:
    """The corpora: $SERD_DATA, or ../shared/data beside the repository."""
    return Path(os.environ.get("SERD_DATA") or REPO_ROOT.parent / "shared" / "data")


def at_level(x: np.ndarray, level_dbfs: float) -> np.ndarray:
    """`x` scaled to an RMS level in dBFS (as `serd.features.level_dbfs` measures it)."""
    return (x * (10.0 ** (level_dbfs / 20.0) / rms(x))).astype(np.float32)


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / rms(x)).astype(np.float32)


def _shaped(n: int, rng: np.random.Generator, exponent: float) -> np.ndarray:
    """Noise with power falling as 1/f**exponent (0 white, 1 pink, 2 brown)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.arange(spectrum.shape[0], dtype=np.float64)
    freqs[0] = 1.0
    return _unit(np.fft.irfft(spectrum / freqs ** (exponent / 2.0), n))


def white(n: int, rng: np.random.Generator) -> np.ndarray:
    return _unit(white_noise(n, rng))


def pink(n: int, rng: np.random.Generator) -> np.ndarray:
    return _unit(pink_noise(n, rng))


def brown(n: int, rng: np.random.Generator) -> np.ndarray:
    return _shaped(n, rng, 2.0)


def fan(n: int, rng: np.random.Generator) -> np.ndarray:
    """A projector fan or HVAC unit: mains hum with harmonics, a blade-pass tone, broadband air noise."""
    t = np.arange(n) / SAMPLE_RATE
    mains = float(rng.choice([50.0, 60.0]))
    hum = sum(0.6 / k * np.sin(2 * np.pi * mains * k * t + rng.uniform(0, 2 * np.pi)) for k in range(1, 9))
    blade = float(rng.uniform(80.0, 300.0))
    wobble = 1.0 + 0.05 * np.sin(2 * np.pi * rng.uniform(0.2, 1.0) * t)  # slow beating of the blades
    blades = sum(0.3 / k * np.sin(2 * np.pi * blade * k * t * wobble) for k in range(1, 4))
    air = 0.5 * _shaped(n, rng, 1.0) + 0.8 * _shaped(n, rng, 1.5)
    return _unit(float(rng.uniform(0.3, 1.0)) * _unit(hum + blades) + _unit(air))


def _impulse_train(n: int, rng: np.random.Generator, rate_hz: float, jitter: float,
                   event: Callable[[np.random.Generator], np.ndarray]) -> np.ndarray:
    """Events at about `rate_hz`, each start jittered by up to `jitter` of the period."""
    out = np.zeros(n + SAMPLE_RATE, dtype=np.float64)
    period = SAMPLE_RATE / rate_hz
    position = float(rng.uniform(0, period))
    while position < n:
        sound = event(rng) * rng.uniform(0.5, 1.0)
        start = int(position)
        out[start : start + sound.shape[0]] += sound
        position += period * (1.0 + rng.uniform(-jitter, jitter))
    return out[:n]


def _decaying(rng: np.random.Generator, length_s: float, decay_s: float) -> np.ndarray:
    length = int(length_s * SAMPLE_RATE)
    return np.exp(-np.arange(length) / (decay_s * SAMPLE_RATE))


def _room(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return _unit(reverberate(x.astype(np.float32), SAMPLE_RATE, rng))


def _bandpass(x: np.ndarray, low_hz: float, high_hz: float) -> np.ndarray:
    spectrum = np.fft.rfft(x)
    freqs = np.fft.rfftfreq(x.shape[0], 1.0 / SAMPLE_RATE)
    spectrum[(freqs < low_hz) | (freqs > high_hz)] = 0.0
    return np.fft.irfft(spectrum, x.shape[0])


def clapping(n: int, rng: np.random.Generator) -> np.ndarray:
    """Applause-like claps at 2-6 per second: short band-limited noise bursts in a room."""
    def clap(r):
        burst = r.standard_normal(int(0.03 * SAMPLE_RATE)) * _decaying(r, 0.03, 0.006)
        return _bandpass(burst, r.uniform(600, 1200), r.uniform(2500, 5000))
    return _room(_impulse_train(n, rng, float(rng.uniform(2.0, 6.0)), 0.3, clap), rng)


def footsteps(n: int, rng: np.random.Generator) -> np.ndarray:
    """Steps at about 2 per second: a low thud plus a heel click, in a room."""
    def step(r):
        length = 0.15
        t = np.arange(int(length * SAMPLE_RATE)) / SAMPLE_RATE
        thud = np.sin(2 * np.pi * r.uniform(60, 140) * t) * _decaying(r, length, 0.03)
        click = r.standard_normal(t.shape[0]) * _decaying(r, length, 0.004) * 0.3
        return thud + click
    return _room(_impulse_train(n, rng, float(rng.uniform(1.5, 2.5)), 0.15, step), rng)


def door_slam(n: int, rng: np.random.Generator) -> np.ndarray:
    """One slam somewhere in the window: a heavy low impulse, the latch's click and a rattle, in a room."""
    out = np.zeros(n)
    length = int(0.5 * SAMPLE_RATE)
    t = np.arange(length) / SAMPLE_RATE
    slam = np.sin(2 * np.pi * rng.uniform(40, 90) * t) * np.exp(-t / 0.08)
    slam += 0.5 * rng.standard_normal(length) * np.exp(-t / 0.01)
    rattle = _bandpass(rng.standard_normal(length), 800, 3000) * np.exp(-t / 0.15) * 0.2
    start = int(rng.uniform(0.0, max(1, n - length)))
    out[start : start + length] += (slam + rattle)[: n - start]
    return _room(out + 1e-4 * rng.standard_normal(n), rng)


def keyboard(n: int, rng: np.random.Generator) -> np.ndarray:
    """Typing at 4-9 keys per second: 2-3 ms clicks with a plastic resonance, in a room."""
    def key(r):
        length = 0.02
        t = np.arange(int(length * SAMPLE_RATE)) / SAMPLE_RATE
        click = r.standard_normal(t.shape[0]) * _decaying(r, length, 0.0015)
        return click + 0.4 * np.sin(2 * np.pi * r.uniform(2000, 4500) * t) * _decaying(r, length, 0.003)
    return _room(_impulse_train(n, rng, float(rng.uniform(4.0, 9.0)), 0.5, key), rng)


CHORDS = ((0, 4, 7), (5, 9, 12), (7, 11, 14), (9, 12, 16), (2, 5, 9), (0, 4, 7, 11))
"""Major/minor triads and a seventh, in semitones above the key's root."""


def music(n: int, rng: np.random.Generator) -> np.ndarray:
    """Chords (harmonic tones with attack and decay) changing 1-3 times a second, over a bass, in a room."""
    t = np.arange(n) / SAMPLE_RATE
    root_hz = 220.0 * 2 ** (int(rng.integers(-5, 7)) / 12)
    chord_s = 1.0 / float(rng.uniform(1.0, 3.0))
    out = np.zeros(n)
    for i, start in enumerate(np.arange(-rng.uniform(0, chord_s), n / SAMPLE_RATE, chord_s)):
        chord = CHORDS[int(rng.integers(len(CHORDS)))]
        local = t - start
        envelope = np.where(local >= 0, np.minimum(local / 0.01, 1.0) * np.exp(-np.clip(local, 0, None) / 0.8), 0.0)
        notes = [root_hz * 2 ** (s / 12) for s in chord] + [root_hz / 2 * 2 ** (chord[0] / 12)]
        for f0 in notes:
            for k in range(1, 7):  # a plucked/piano-like timbre: partials falling as 1/k
                if f0 * k < SAMPLE_RATE / 2:
                    out += envelope * np.sin(2 * np.pi * f0 * k * t + i) / k
    return _room(out, rng)


NOISES: dict[str, Callable[[int, np.random.Generator], np.ndarray]] = {
    "white": white,
    "pink": pink,
    "brown": brown,
    "fan": fan,
    "clapping": clapping,
    "footsteps": footsteps,
    "door_slam": door_slam,
    "keyboard": keyboard,
    "music": music,
}
"""Synthetic non-speech by kind."""

BACKGROUND_NOISES = ("white", "pink", "brown", "fan")
"""Steady noises without voices in them, under speech for the SNR conditions."""


# -- the corpora ---------------------------------------------------------------------------

def read_clip(path: Path) -> np.ndarray:
    audio, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    if rate != SAMPLE_RATE:
        raise ValueError(f"{path}: expected {SAMPLE_RATE} Hz, got {rate}")
    return audio.mean(axis=1)


def frame_levels_db(x: np.ndarray, frame: int = 160) -> np.ndarray:
    """Level of each 10 ms frame in dB (full scale = 0)."""
    frames = x[: x.shape[0] // frame * frame].reshape(-1, frame).astype(np.float64)
    return 10.0 * np.log10(np.mean(frames**2, axis=1) + 1e-12)


def speech_window(x: np.ndarray, n: int) -> np.ndarray:
    """The `n`-sample excerpt of a clip with the most energy (its spoken part), zero-padded if short."""
    if x.shape[0] <= n:
        return np.pad(x, (0, n - x.shape[0]))
    energy = np.concatenate(([0.0], np.cumsum(x.astype(np.float64) ** 2)))
    sums = energy[n:] - energy[:-n]
    start = int(np.argmax(sums[:: 160])) * 160
    return x[start : start + n].copy()


def short_utterance(speech: np.ndarray, n: int, seconds: float, rng: np.random.Generator,
                    level_dbfs: float = -25.0, room_below_db: float = 40.0) -> np.ndarray:
    """The loudest `seconds` of `speech` alone at a random place in `n` samples of a quiet room (pink noise)."""
    piece = speech_window(speech, int(seconds * SAMPLE_RATE))
    out = at_level(pink(n, rng), level_dbfs - room_below_db).astype(np.float64)
    start = int(rng.integers(0, n - piece.shape[0]))
    out[start : start + piece.shape[0]] += at_level(piece, level_dbfs)
    return out.astype(np.float32)


def quiet_parts(x: np.ndarray, within_db: float = 30.0, guard_s: float = 0.15, frame: int = 160) -> np.ndarray:
    """What a clip holds before its first word and after its last: the room, breaths, lip noise.

    Speech is every 10 ms frame within `within_db` of the loudest one; `guard_s` around it
    is left out too, so soft onsets and the decay of the last word stay with the speech.
    (Gaps between words are not taken: they hold weak consonants, which are speech.)
    """
    levels = frame_levels_db(x, frame)
    loud = np.flatnonzero(levels >= levels.max() - within_db)
    guard = int(guard_s * SAMPLE_RATE)
    onset, offset = loud[0] * frame - guard, (loud[-1] + 1) * frame + guard
    return np.concatenate((x[: max(0, onset)], x[min(x.shape[0], offset) :]))


def ravdess_clips(root: Path) -> list[Path]:
    return sorted((root / "ravdess").glob("Actor_*/*.flac"))


def nemo_clips(root: Path) -> list[Path]:
    samples = root / "nemo" / "samples"
    # nEMO was FLAC and is now Ogg Opus: take whichever the corpus holds.
    return sorted([*samples.glob("*.flac"), *samples.glob("*.ogg")])


def speaker_of(path: Path) -> str:
    """Actor (RAVDESS: last field of the name) or speaker code (nEMO: first field)."""
    if path.parent.name.startswith("Actor_"):
        return "ravdess-" + path.stem.split("-")[-1]
    return "nemo-" + path.stem.split("_")[0]


SHOUTED_EMOTIONS = ("05", "06", "08")
"""RAVDESS codes for angry, fearful, surprised."""


def is_shouted(path: Path) -> bool:
    """A RAVDESS clip at strong intensity in a loud emotion (name fields: modality-channel-emotion-intensity-...)."""
    fields = path.stem.split("-")
    return len(fields) == 7 and fields[2] in SHOUTED_EMOTIONS and fields[3] == "02"


def corpus_silence(clips: list[Path], n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` samples of the corpora's non-speech parts, strung together from random clips."""
    pieces, total = [], 0
    while total < n:
        part = quiet_parts(read_clip(clips[int(rng.integers(len(clips)))]))
        if part.shape[0] >= 1600 and rms(part) > 1e-5:  # skip exact digital silence (a RAVDESS artefact)
            pieces.append(part)
            total += part.shape[0]
    return _unit(np.concatenate(pieces)[:n])

