"""Endless test audio for `serd run --source -`: raw s16le, 16 kHz, mono, on stdout.

    python tests/reliability/pcm_generator.py --hours 24 [--speed 40] | serd run --source -

One cycle (`cycle()`) is the demo recording, then digital silence, then loud noise (above
the level gate, kept out by the voice detector), then a room's noise floor (below the gate); the
cycle repeats until exactly `--hours` of audio are written. Writes come in seeded random
sizes, odd byte counts included, so the daemon reassembles frames split across reads all
run long. `--speed X` paces the output at X times real time (0: as fast as the pipe takes
it). Generating the audio on the fly means a 24-hour soak never writes a 2.8 GB file.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

DEMO_FLAC = Path(__file__).resolve().parents[2] / "examples" / "demo.flac"
RATE = 16000
BYTES_PER_SECOND = 2 * RATE
SILENCE_S = 10.0
LOUD_NOISE_S = 8.0
LOUD_NOISE_DBFS = -30.0
FLOOR_S = 12.0
FLOOR_DBFS = -70.0
MAX_WRITE = 65536
SEED = 6


def noise(seconds: float, dbfs: float, rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal(int(seconds * RATE)) * 10 ** (dbfs / 20)


def cycle() -> bytes:
    """One cycle of the pattern as s16le bytes (about 69 s)."""
    import soundfile

    demo, rate = soundfile.read(str(DEMO_FLAC), dtype="float32")
    if rate != RATE or demo.ndim != 1:
        raise SystemExit(f"{DEMO_FLAC}: expected 16 kHz mono, got {rate} Hz {demo.shape}")
    rng = np.random.default_rng(SEED)
    parts = [demo, np.zeros(int(SILENCE_S * RATE)), noise(LOUD_NOISE_S, LOUD_NOISE_DBFS, rng),
             noise(FLOOR_S, FLOOR_DBFS, rng)]
    samples = np.concatenate(parts)
    return np.clip(np.round(samples * 32768.0), -32768, 32767).astype("<i2").tobytes()


def total_samples(hours: float) -> int:
    return int(round(hours * 3600 * RATE))


def write(fd: int, hours: float, speed: float, seed: int = SEED) -> int:
    """Write `hours` of the pattern to the file descriptor `fd`, unbuffered; returns the bytes written."""
    pattern = memoryview(cycle())
    total = 2 * total_samples(hours)
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, MAX_WRITE, 4096)
    written = position = index = 0
    started = time.monotonic()
    while written < total:
        size = min(int(sizes[index % sizes.size]), total - written, len(pattern) - position)
        index += 1
        done = 0
        while done < size:  # os.write may write less than asked (a signal); never lose a byte
            done += os.write(fd, pattern[position + done: position + size])
        written += size
        position = (position + size) % len(pattern)
        if speed > 0:
            ahead = written / (BYTES_PER_SECOND * speed) - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, required=True)
    parser.add_argument("--speed", type=float, default=0.0, help="times real time (0: unpaced)")
    args = parser.parse_args()
    try:
        write(sys.stdout.fileno(), args.hours, args.speed)
    except BrokenPipeError:  # the daemon went away: its own test reports why
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
