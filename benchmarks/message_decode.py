"""Decode cost per message: serd's validating `messages.decode` vs a bare `json.loads`.

    python benchmarks/message_decode.py [--msgspec]

`--msgspec` also times an equivalent msgspec Struct decoder (typed, bounded), if msgspec is
importable; it is not a dependency of serd, this only measures whether it would pay.
Numbers go to benchmarks/RELIABILITY.md ("Message validation").
"""


import argparse
import json
import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from serd.messages import EmotionMessage, StatusMessage, decode, encode  # noqa: E402

PROBS = {"neutral": 0.1, "happy": 0.2, "sad": 0.05, "angry": 0.4, "fearful": 0.15, "disgust": 0.1}
EMOTION = EmotionMessage(device="kitchen", seq=41, time=1_795_000_000.123, captured_at=1_795_000_000.1,
                         start_s=12.5, end_s=14.5, speech=True, level_dbfs=-31.25, probs=PROBS, smoothed=PROBS,
                         label="angry", confidence=0.4, model="serd-emotion6-int8")
STATUS = StatusMessage(device="kitchen", seq=3, time=1_795_000_000.5, state="running", uptime_s=12.25,
                       source="mic:default", model="serd-emotion6-int8", windows=20, published=20,
                       cpu_percent=7.5, rss_mb=61.25, version="0.1.0")


def per_message_us(fn, frames, number: int) -> float:
    return min(timeit.repeat(lambda: fn(frames), number=number, repeat=5)) / number * 1e6


def msgspec_decoder():
    from typing import Annotated

    import msgspec

    Unit = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
    Label = Annotated[str, msgspec.Meta(max_length=32)]
    Probs = Annotated[dict[Label, Unit], msgspec.Meta(min_length=1, max_length=32)]

    class Emotion(msgspec.Struct):
        schema: str
        device: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")]
        seq: Annotated[int, msgspec.Meta(ge=0)]
        time: float
        captured_at: float
        start_s: float
        end_s: float
        speech: bool
        level_dbfs: float
        probs: Probs | None
        smoothed: Probs | None
        label: Label | None
        confidence: Unit | None
        model: Annotated[str, msgspec.Meta(max_length=128)]

    decoder = msgspec.json.Decoder(Emotion)
    return lambda frames: decoder.decode(frames[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--number", type=int, default=20000)
    parser.add_argument("--msgspec", action="store_true")
    args = parser.parse_args()
    rows = [
        ("json.loads only, emotion", lambda f: json.loads(f[1]), encode(EMOTION)),
        ("serd decode, emotion", decode, encode(EMOTION)),
        ("serd decode, status", decode, encode(STATUS)),
    ]
    if args.msgspec:
        rows.append(("msgspec Struct, emotion", msgspec_decoder(), encode(EMOTION)))
    for name, fn, frames in rows:
        print(f"{name:<28} {per_message_us(fn, frames, args.number):6.1f} µs/message")


if __name__ == "__main__":
    main()
