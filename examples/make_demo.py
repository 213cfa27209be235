"""Build examples/demo.flac: a few RAVDESS clips with pauses, for the README's demo.

    python examples/make_demo.py [--data ../shared/data/ravdess]

The clips come from actors 11 and 12, whom the shipped model never trained on
(they are its calibration speakers). RAVDESS is CC BY-NC-SA 4.0, and so is the
result: see examples/README.md for the credit.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import soundfile

# (actor, file stem): one clip per emotion6 class, male and female voices alternating.
CLIPS = (
    (11, "03-01-01-01-01-01-11"),  # neutral
    (12, "03-01-05-02-01-01-12"),  # angry, strong
    (11, "03-01-04-02-02-01-11"),  # sad, strong
    (12, "03-01-03-02-01-02-12"),  # happy, strong
    (11, "03-01-06-02-01-01-11"),  # fearful, strong
    (12, "03-01-07-02-02-01-12"),  # disgust, strong
)
PAUSE_S = 2.5
SAMPLE_RATE = 16000
ROOM_NOISE_DBFS = -65.0
"""A faint noise floor in the pauses, as any real microphone has."""


def build(data: Path, out: Path) -> list[str]:
    rng = np.random.default_rng(0)
    pause = np.zeros(int(PAUSE_S * SAMPLE_RATE), dtype=np.float32)
    parts = [pause]
    names = []
    for actor, stem in CLIPS:
        path = data / f"Actor_{actor:02d}" / f"{stem}.flac"
        audio, rate = soundfile.read(path, dtype="float32")
        if rate != SAMPLE_RATE:
            raise SystemExit(f"{path}: expected {SAMPLE_RATE} Hz, got {rate}")
        parts += [audio, pause]
        names.append(path.name)
    signal = np.concatenate(parts)
    signal += rng.standard_normal(signal.shape[0]).astype(np.float32) * 10 ** (ROOM_NOISE_DBFS / 20)
    soundfile.write(out, np.clip(signal, -1, 1), SAMPLE_RATE, subtype="PCM_16")
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = Path(__file__).resolve().parent
    parser.add_argument("--data", type=Path, default=here.parent.parent / "shared" / "data" / "ravdess")
    parser.add_argument("--out", type=Path, default=here / "demo.flac")
    args = parser.parse_args()
    names = build(args.data, args.out)
    print(f"wrote {args.out} from {', '.join(names)}")


if __name__ == "__main__":
    main()
