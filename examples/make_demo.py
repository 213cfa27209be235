"""Build examples/demo.flac and its script: a few RAVDESS clips with pauses, for the README's demo.

    python examples/make_demo.py [--data tests/fixtures/audio/ravdess]

The clips come from actors 11 and 12, whom the shipped model never trained on
(they are its calibration speakers); the test fixtures hold them, so this runs
from a plain clone. RAVDESS is CC BY-NC-SA 4.0, and so is the result: see
examples/README.md for the credit. Beside demo.flac it writes demo.script.tsv:
when each clip plays and which emotion it was acted as (scripts/demo.sh prints it).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import soundfile

# (actor, file stem, acted emotion): one clip per emotion6 class, male and female voices alternating.
CLIPS = (
    (11, "03-01-01-01-01-01-11", "neutral"),
    (12, "03-01-05-02-01-01-12", "angry (strong)"),
    (11, "03-01-04-02-02-01-11", "sad (strong)"),
    (12, "03-01-03-02-01-02-12", "happy (strong)"),
    (11, "03-01-06-02-01-01-11", "fearful (strong)"),
    (12, "03-01-07-02-02-01-12", "disgust (strong)"),
)
SCRIPT_HEADER = "start_s\tend_s\tacted\tspeaker\tfile"
PAUSE_S = 2.5
SAMPLE_RATE = 16000
ROOM_NOISE_DBFS = -65.0
"""A faint noise floor in the pauses, as any real microphone has."""


def build(data: Path, out: Path) -> list[str]:
    """Write `out` and its script (`<out stem>.script.tsv`); the names of the clips used."""
    rng = np.random.default_rng(0)
    pause = np.zeros(int(PAUSE_S * SAMPLE_RATE), dtype=np.float32)
    parts = [pause]
    names = []
    script = [SCRIPT_HEADER]
    at = pause.shape[0]
    for actor, stem, acted in CLIPS:
        path = data / f"Actor_{actor:02d}" / f"{stem}.flac"
        audio, rate = soundfile.read(path, dtype="float32")
        if rate != SAMPLE_RATE:
            raise SystemExit(f"{path}: expected {SAMPLE_RATE} Hz, got {rate}")
        parts += [audio, pause]
        names.append(path.name)
        speaker = f"actor {actor}, {'male' if actor % 2 else 'female'}"  # RAVDESS: odd actors are male
        script.append(f"{at / SAMPLE_RATE:.2f}\t{(at + audio.shape[0]) / SAMPLE_RATE:.2f}\t{acted}\t{speaker}\t{path.name}")
        at += audio.shape[0] + pause.shape[0]
    signal = np.concatenate(parts)
    signal += rng.standard_normal(signal.shape[0]).astype(np.float32) * 10 ** (ROOM_NOISE_DBFS / 20)
    soundfile.write(out, np.clip(signal, -1, 1), SAMPLE_RATE, subtype="PCM_16")
    script_path(out).write_text("\n".join(script) + "\n", encoding="utf-8")
    return names


def script_path(demo: Path) -> Path:
    """demo.flac -> demo.script.tsv: when each clip plays, and what it was acted as."""
    return demo.with_name(f"{demo.stem}.script.tsv")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = Path(__file__).resolve().parent
    parser.add_argument("--data", type=Path, default=here.parent / "tests" / "fixtures" / "audio" / "ravdess",
                        help="a RAVDESS-layout folder holding the clips (default: the test fixtures)")
    parser.add_argument("--out", type=Path, default=here / "demo.flac", help="where to write (default: %(default)s)")
    args = parser.parse_args()
    names = build(args.data, args.out)
    print(f"wrote {args.out} and {script_path(args.out)} from {', '.join(names)}")


if __name__ == "__main__":
    main()
