"""Microphones and rooms as filters: what serd trains with, and the conditions it is scored under.

A cheap USB microphone band-limits (a 4 kHz low-pass is common, 2 kHz on a bad one),
cuts the bass (80-300 Hz high-pass), tilts the spectrum (distance and a soft room
take -6 to -12 dB per octave off the highs), adds resonances of its capsule and
housing, a DC offset, and clips when a child shouts into it. Each is a zero-phase
magnitude response applied in the frequency domain (or a sample-wise nonlinearity),
so a training window and a test clip go through exactly the same maths.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Channel:
    lowpass_hz: float | None = None
    highpass_hz: float | None = None
    tilt_db_per_octave: float = 0.0
    tilt_from_hz: float = 1000.0
    resonances: tuple[tuple[float, float, float], ...] = ()
    """(centre Hz, gain dB, bandwidth in octaves) bumps and dips."""
    dc_offset: float = 0.0
    clip_drive_db: float = 0.0
    """Gain before clipping at full scale (then undone): 0 = no clipping."""

    def gain_db(self, freqs: np.ndarray) -> np.ndarray:
        """The magnitude response in dB at `freqs` (Hz)."""
        f = np.maximum(np.asarray(freqs, dtype=np.float64), 1.0)
        db = np.zeros_like(f)
        if self.lowpass_hz:  # 8th-order Butterworth magnitude: steep, like a codec's anti-alias filter
            db -= 10.0 * np.log10(1.0 + (f / self.lowpass_hz) ** 16)
        if self.highpass_hz:  # 4th-order
            db -= 10.0 * np.log10(1.0 + (self.highpass_hz / f) ** 8)
        if self.tilt_db_per_octave:
            # At most 30 dB either way: past that a "tilt" is a low-pass (or a whistle), not a microphone.
            db += np.clip(self.tilt_db_per_octave * np.maximum(0.0, np.log2(f / self.tilt_from_hz)), -30.0, 30.0)
        for centre, gain, octaves in self.resonances:
            db += gain * np.exp(-0.5 * (np.log2(f / centre) / (octaves / 2.0)) ** 2)
        return np.maximum(db, -120.0)

    def apply(self, x: np.ndarray, sample_rate: int) -> np.ndarray:
        y = np.asarray(x, dtype=np.float64)
        if self.lowpass_hz or self.highpass_hz or self.tilt_db_per_octave or self.resonances:
            n = y.shape[0]
            spectrum = np.fft.rfft(y)
            spectrum *= 10.0 ** (self.gain_db(np.fft.rfftfreq(n, 1.0 / sample_rate)) / 20.0)
            y = np.fft.irfft(spectrum, n)
        if self.clip_drive_db:
            drive = 10.0 ** (self.clip_drive_db / 20.0)
            peak = float(np.max(np.abs(y))) or 1.0
            # Drive relative to the peak: the loudest part goes `clip_drive_db` over full scale.
            y = np.clip(y * drive / peak, -1.0, 1.0) * peak / drive
        if self.dc_offset:
            y = y + self.dc_offset
        return y.astype(np.float32)


# The conditions of the model card's channel table (each applied to the whole test clip).
CONDITIONS: dict[str, Channel] = {
    "lowpass_4k": Channel(lowpass_hz=4000.0),
    "lowpass_2k": Channel(lowpass_hz=2000.0),
    "highpass_300": Channel(highpass_hz=300.0),
    "tilt_-12dB_oct": Channel(tilt_db_per_octave=-12.0),
    "tilt_+12dB_oct": Channel(tilt_db_per_octave=12.0, tilt_from_hz=2000.0),
    "cheap_mic": Channel(lowpass_hz=6000.0, highpass_hz=200.0, resonances=((2500.0, 8.0, 1.0), (4500.0, -6.0, 0.7))),
    "dc_offset": Channel(dc_offset=0.05),
    "clipping": Channel(clip_drive_db=12.0),
}


def random_channel(rng: np.random.Generator) -> Channel:
    """A random microphone and room, covering (and a little beyond) the scored conditions."""
    return Channel(
        lowpass_hz=float(np.exp(rng.uniform(np.log(1800.0), np.log(8000.0)))) if rng.random() < 0.4 else None,
        highpass_hz=float(rng.uniform(60.0, 350.0)) if rng.random() < 0.4 else None,
        tilt_db_per_octave=float(rng.uniform(-14.0, 12.0)) if rng.random() < 0.5 else 0.0,
        tilt_from_hz=float(rng.uniform(500.0, 2500.0)),
        resonances=tuple(
            (float(np.exp(rng.uniform(np.log(300.0), np.log(6500.0)))), float(rng.uniform(-10.0, 10.0)),
             float(rng.uniform(0.3, 1.5)))
            for _ in range(int(rng.integers(1, 4)) if rng.random() < 0.4 else 0)
        ),
        dc_offset=float(rng.uniform(-0.1, 0.1)) if rng.random() < 0.2 else 0.0,
        clip_drive_db=float(rng.uniform(2.0, 14.0)) if rng.random() < 0.15 else 0.0,
    )
