"""What a phone between the voice and the model does to it: augmentation for recordings in the wild.

EmoSpeech (and a parent's phone video, a tablet in a classroom) is not a studio
microphone: the call or the app band-limits the voice (300-3,400 Hz on a narrowband
call, 7 kHz on a wideband one), a codec quantises it, automatic gain control levels
loud and soft speech towards one loudness, and the room's own sound (traffic, a
kitchen, a metro) sits under it. Each is a separate, switchable augmentation
(`phone`, `agc`, `ambient` in `serd/train/augment.py`) so an ablation can say which helps.

- `phone_band`: a steep band-pass of a narrowband or wideband call, then G.711 mu-law
  companding at 8 bits (the telephone's quantisation noise, which follows the level).
- `auto_gain`: a compressor with attack and release that pulls each 10 ms towards a
  target level: it flattens the loudness contour, which is an arousal cue, so the
  model learns not to rely on loudness alone.
- `ambient_pool` / `ambient`: real background from the training clips themselves, the
  stretches the voice detector hears no voice in (a phone clip's street or kitchen);
  a studio clip's are near silence and are skipped.
"""

from __future__ import annotations

import numpy as np

from serd.train.channel import Channel

MU = 255.0
"""G.711 mu-law: 8-bit codes."""
AMBIENT_MIN_S = 0.25
"""Shorter stretches are left out of the pool: too little to loop into a window without a buzz."""
AMBIENT_MIN_DBFS = -60.0
"""Quieter stretches are studio silence, not a place."""
AMBIENT_BATCH = 256
"""Clips through the voice detector at a time."""


def phone_band(x: np.ndarray, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A call's band (`call_channel`) and 8-bit mu-law quantisation, full scale 0-10 dB over the voice's peak."""
    y = call_channel(rng).apply(x, sample_rate)
    peak = float(np.max(np.abs(y))) or 1.0
    return mu_law(y, full_scale=peak / float(rng.uniform(0.3, 1.0)))


def call_channel(rng: np.random.Generator) -> Channel:
    """A narrowband call (300-3,400 Hz or so) or a wideband one (50-7,000 Hz or so), half of each."""
    narrow = rng.random() < 0.5
    return Channel(
        lowpass_hz=float(rng.uniform(3100.0, 3600.0) if narrow else rng.uniform(6500.0, 7500.0)),
        highpass_hz=float(rng.uniform(200.0, 350.0) if narrow else rng.uniform(50.0, 150.0)),
    )


def mu_law(x: np.ndarray, full_scale: float) -> np.ndarray:
    """G.711 mu-law at 8 bits, encoded and decoded: noise that follows the level (about 38 dB under it)."""
    y = np.asarray(x, dtype=np.float64) / full_scale
    companded = np.sign(y) * np.log1p(MU * np.minimum(np.abs(y), 1.0)) / np.log1p(MU)
    codes = np.round(companded * 127.0) / 127.0
    return (np.sign(codes) * ((1.0 + MU) ** np.abs(codes) - 1.0) / MU * full_scale).astype(np.float32)


def auto_gain(x: np.ndarray, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Automatic gain control: per 10 ms, a gain pulling the level towards the clip's, `strength` of the way.

    The level follows the loudness with a fast attack and a slow release, as a phone's
    AGC does; the gain is capped at +20 dB so pauses are not pumped up to speech level.
    """
    frame = sample_rate // 100
    n = x.shape[0] // frame
    if n < 2:
        return x
    power = np.mean(np.square(x[: n * frame].reshape(n, frame), dtype=np.float64), axis=1) + 1e-10
    level_db = 10.0 * np.log10(power)
    attack, release = np.exp(-1.0 / rng.uniform(1.0, 3.0)), np.exp(-1.0 / rng.uniform(10.0, 40.0))  # in frames
    envelope = np.empty(n)
    state = level_db[0]
    for i, value in enumerate(level_db):  # one pass over about 250 frames: cheap beside the features
        coefficient = attack if value > state else release
        state = coefficient * state + (1.0 - coefficient) * value
        envelope[i] = state
    target = float(np.percentile(level_db, 90))
    strength = float(rng.uniform(0.4, 0.9))
    gain_db = np.minimum(strength * (target - envelope), 20.0)
    gains = np.interp(np.arange(x.shape[0]), (np.arange(n) + 0.5) * frame, 10.0 ** (gain_db / 20.0))
    return (x * gains).astype(np.float32)


def ambient_pool(audio: list[np.ndarray], sample_rate: int) -> list[np.ndarray]:
    """The clips' stretches without a voice that hold a place's sound (not studio silence).

    serd's own voice detector (Silero, `serd/vad.py`) finds them, chunk by chunk: a
    level threshold would not, since a street can be as loud as the words over it.
    A stretch is at least AMBIENT_MIN_S of chunks without a voice, less one chunk at
    each end (the edge of a word).
    """
    from serd.vad import make_detector

    vad = make_detector("silero", sample_rate)
    size = vad.CHUNK_SAMPLES
    shortest = int(np.ceil(AMBIENT_MIN_S * sample_rate / size)) + 2
    pool = []
    for at in range(0, len(audio), AMBIENT_BATCH):  # batches bound the detector's memory
        clips = audio[at : at + AMBIENT_BATCH]
        for clip, voiced in zip(clips, vad.chunk_probs_many(clips)):
            quiet = np.concatenate(([False], voiced < vad.CHUNK_THRESHOLD, [False]))
            edges = np.flatnonzero(np.diff(quiet.astype(np.int8)))
            for start, end in zip(edges[::2], edges[1::2]):
                if end - start >= shortest:
                    piece = clip[(start + 1) * size : (end - 1) * size]
                    if 10.0 * np.log10(np.mean(np.square(piece, dtype=np.float64)) + 1e-20) > AMBIENT_MIN_DBFS:
                        pool.append(piece.astype(np.float32))
    return pool


def ambient(pool: list[np.ndarray], n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` samples of one place's sound: a stretch looped with 10 ms cross-fades where it repeats."""
    piece = pool[int(rng.integers(len(pool)))]
    if piece.shape[0] >= n:
        start = int(rng.integers(piece.shape[0] - n + 1))
        return piece[start : start + n].copy()
    fade = min(160, piece.shape[0] // 4)
    ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
    step = piece.shape[0] - fade
    out = np.zeros(n + piece.shape[0], dtype=np.float32)
    at = 0
    while at < n:
        faded = piece.copy()
        if at:
            faded[:fade] *= ramp
        faded[-fade:] *= ramp[::-1]
        out[at : at + piece.shape[0]] += faded
        at += step
    return out[:n]
