"""Generated malformed and extreme audio inputs, each with what serd must make of it.

Every case is built from scratch (hand-made RIFF headers, soundfile for the valid
containers, seeded random bytes) so the suite needs nothing but the repository's demo
recording. `expect` says what a user must get:

- `ERROR`: one clear line naming the file (analyze: exit 1; run: exit 1), never a traceback;
- `SPEECH`: a sane result with at least one classified window;
- `NO_SPEECH`: a sane result with `label: null` (windows, if any, below the level gate or
  without a voice to the voice detector);
- `EITHER`: the container is damaged in a way a decoder may reasonably read past or refuse;
  either a clear error or a sane result.

"Sane" means finite levels, and every probability vector finite, within [0, 1] and
summing to 1 (see `assert_sane_analysis`).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import soxr

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_FLAC = REPO_ROOT / "examples" / "demo.flac"
MODEL_RATE = 16000
SPEECH_FROM_S = 8.0
SPEECH_S = 3.0
"""A stretch of the demo recording that is speech throughout (the benchmarks use the same spot)."""
PROB_SUM_TOL = 1e-3
SEED = 20261127

ERROR, SPEECH, NO_SPEECH, EITHER = "error", "speech", "no speech", "either"

WAVE_FORMAT_PCM = 1
WAVE_FORMAT_IEEE_FLOAT = 3
FOUR_GB = 0xFFFFFFF0
"""A RIFF/data size of almost 4 GiB: the largest a 32-bit WAV header can claim."""


@dataclass(frozen=True)
class BadInput:
    name: str
    """File name (its extension picks the container, as a user's would)."""
    expect: str
    why: str
    write: Callable[[Path], None]


def speech(rate: int = MODEL_RATE) -> np.ndarray:
    """3 s of the demo's speech as float32 in [-1, 1], at `rate`."""
    audio, source_rate = soundfile.read(str(DEMO_FLAC), dtype="float32")
    clip = audio[int(SPEECH_FROM_S * source_rate): int((SPEECH_FROM_S + SPEECH_S) * source_rate)]
    return clip if rate == source_rate else soxr.resample(clip, source_rate, rate).astype(np.float32)


def pcm16(samples: np.ndarray) -> bytes:
    return np.clip(np.round(samples * 32768.0), -32768, 32767).astype("<i2").tobytes()


def wav_bytes(data: bytes, *, rate: int = MODEL_RATE, channels: int = 1, bits: int = 16,
              fmt_tag: int = WAVE_FORMAT_PCM, riff_size: int | None = None, data_size: int | None = None,
              block_align: int | None = None, byte_rate: int | None = None, fmt_size: int = 16) -> bytes:
    """A canonical 44-byte RIFF/WAVE header (every field overridable) followed by `data`."""
    align = block_align if block_align is not None else channels * max(1, bits // 8)
    byte_rate = byte_rate if byte_rate is not None else (rate * align) & 0xFFFFFFFF
    fmt = struct.pack("<HHIIHH", fmt_tag, channels, rate, byte_rate, align, bits)
    data_size = len(data) if data_size is None else data_size
    riff_size = 4 + (8 + fmt_size) + (8 + len(data)) if riff_size is None else riff_size
    return (b"RIFF" + struct.pack("<I", riff_size) + b"WAVE"
            + b"fmt " + struct.pack("<I", fmt_size) + fmt
            + b"data" + struct.pack("<I", data_size) + data)


def _bytes(content: bytes) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(content)


def _random(n: int, seed: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def _sound(samples: np.ndarray, rate: int = MODEL_RATE, subtype: str = "PCM_16", fmt: str | None = None):
    return lambda path: soundfile.write(str(path), samples, rate, subtype=subtype, format=fmt)


def _float_wav(samples: np.ndarray) -> Callable[[Path], None]:
    data = np.asarray(samples, dtype="<f4").tobytes()
    return _bytes(wav_bytes(data, bits=32, fmt_tag=WAVE_FORMAT_IEEE_FLOAT))


def _floor(seconds: float, dbfs: float) -> np.ndarray:
    """A room's noise floor: Gaussian noise at an RMS of `dbfs`."""
    rng = np.random.default_rng(SEED + 5)
    return (rng.standard_normal(int(seconds * MODEL_RATE)) * 10 ** (dbfs / 20)).astype(np.float32)


def _with_non_finite() -> np.ndarray:
    x = speech().copy()
    rng = np.random.default_rng(SEED)
    x[rng.choice(x.size, 400, replace=False)] = np.nan
    x[rng.choice(x.size, 200, replace=False)] = np.inf
    x[rng.choice(x.size, 200, replace=False)] = -np.inf
    return x


def _truncated(writer: Callable[[Path], None], keep: float) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        writer(path)
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * keep)])
    return write


def _corrupted_middle(writer: Callable[[Path], None]) -> Callable[[Path], None]:
    """A valid file with 4 KB of random bytes written over its middle (a bad sector, a broken copy)."""
    def write(path: Path) -> None:
        writer(path)
        data = bytearray(path.read_bytes())
        middle = len(data) // 2
        data[middle: middle + 4096] = _random(4096, SEED + 1)
        path.write_bytes(bytes(data))
    return write


def cases() -> list[BadInput]:
    s = speech()
    header = wav_bytes(pcm16(s))
    t = np.arange(3 * MODEL_RATE) / MODEL_RATE
    square = np.sign(np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    return [
        # -- not audio at all
        BadInput("empty.wav", ERROR, "zero bytes", _bytes(b"")),
        BadInput("empty.flac", ERROR, "zero bytes", _bytes(b"")),
        BadInput("random.wav", ERROR, "random bytes named .wav", _bytes(_random(64_000, SEED))),
        BadInput("random.flac", ERROR, "random bytes named .flac", _bytes(_random(64_000, SEED + 2))),
        BadInput("random.ogg", ERROR, "random bytes named .ogg", _bytes(_random(64_000, SEED + 3))),
        BadInput("riff-then-random.wav", ERROR, "RIFF/WAVE magic, then random bytes",
                 _bytes(b"RIFF" + struct.pack("<I", 64_000) + b"WAVE" + _random(64_000, SEED + 4))),
        # -- truncated and corrupted headers
        BadInput("riff-only.wav", ERROR, "4 bytes: RIFF", _bytes(b"RIFF")),
        BadInput("truncated-header.wav", ERROR, "the header cut inside the fmt chunk", _bytes(header[:30])),
        BadInput("zero-rate.wav", ERROR, "header: 0 Hz", _bytes(wav_bytes(pcm16(s), rate=0))),
        BadInput("zero-channels.wav", ERROR, "header: 0 channels", _bytes(wav_bytes(pcm16(s), channels=0))),
        BadInput("unknown-format.wav", ERROR, "header: format tag 0x7777",
                 _bytes(wav_bytes(pcm16(s), fmt_tag=0x7777))),
        BadInput("1000-channels.wav", ERROR, "header: 1000 channels",
                 _bytes(wav_bytes(pcm16(s), channels=1000))),
        BadInput("odd-bits.wav", EITHER, "header: 7 bits per sample", _bytes(wav_bytes(pcm16(s), bits=7))),
        BadInput("block-align-0.wav", EITHER, "header: block align 0",
                 _bytes(wav_bytes(pcm16(s), block_align=0))),
        BadInput("fmt-claims-4gb.wav", EITHER, "fmt chunk claims ~4 GB",
                 _bytes(header[:16] + struct.pack("<I", FOUR_GB) + header[20:])),
        # -- huge claimed sizes and implausible rates
        BadInput("data-claims-4gb.wav", EITHER, "3 s of speech; RIFF and data sizes claim ~4 GB",
                 _bytes(wav_bytes(pcm16(s), riff_size=FOUR_GB, data_size=FOUR_GB))),
        BadInput("claims-4gb-no-data.wav", EITHER, "a header claiming ~4 GB of data and no data",
                 _bytes(wav_bytes(b"", riff_size=FOUR_GB, data_size=FOUR_GB))),
        BadInput("rate-1hz.wav", ERROR, "header: 1 Hz (3 s of samples would be 13 hours)",
                 _bytes(wav_bytes(pcm16(s), rate=1))),
        BadInput("rate-4ghz.wav", ERROR, "header: 4 GHz", _bytes(wav_bytes(pcm16(s), rate=4_000_000_000))),
        # -- valid containers, extreme content
        BadInput("header-no-frames.wav", NO_SPEECH, "a valid header with 0 frames", _bytes(wav_bytes(b""))),
        BadInput("one-sample.wav", NO_SPEECH, "1 quiet sample", _sound(np.array([0.01], np.float32))),
        BadInput("one-loud-sample.wav", NO_SPEECH, "1 sample at 0.9: one padded window at -46 dBFS, a click, no voice",
                 _sound(np.array([0.9], np.float32))),
        BadInput("silence.wav", NO_SPEECH, "3 s of digital zeros", _sound(np.zeros(3 * MODEL_RATE, np.float32))),
        BadInput("nan-inf.wav", NO_SPEECH, "float32 speech with 800 NaN/+inf/-inf samples, read as 0/+1/-1: "
                 "400 full-scale clicks the voice detector hears instead of the voice", _float_wav(_with_non_finite())),
        BadInput("all-nan.wav", NO_SPEECH, "float32, every sample NaN",
                 _float_wav(np.full(3 * MODEL_RATE, np.nan, np.float32))),
        BadInput("huge-floats.wav", SPEECH, "float32 speech scaled by 1e30", _float_wav(s * np.float32(1e30))),
        BadInput("speech-8k.wav", SPEECH, "speech at 8 kHz", _sound(speech(8000), 8000)),
        BadInput("speech-96k.wav", SPEECH, "speech at 96 kHz, 24-bit", _sound(speech(96000), 96000, "PCM_24")),
        BadInput("six-channels.wav", SPEECH, "6 channels (5.1), speech in two",
                 _sound(np.stack([s, s, np.zeros_like(s), np.zeros_like(s), 0.5 * s, 0.5 * s], axis=1))),
        BadInput("dc-offset.wav", SPEECH, "speech on a +0.5 DC offset", _sound(np.clip(s + 0.5, -1, 1))),
        BadInput("dc-only.wav", NO_SPEECH, "a constant +0.5 (a large number, but no sound)",
                 _sound(np.full(3 * MODEL_RATE, 0.5, np.float32))),
        BadInput("dc-offset-quiet-room.wav", NO_SPEECH, "a -70 dBFS noise floor on a 1 % DC offset (-40 dBFS)",
                 _sound(0.01 + _floor(5.0, -70.0))),
        BadInput("clipped.wav", SPEECH, "speech x30, clipped at full scale", _sound(np.clip(30 * s, -1, 1))),
        BadInput("full-scale-square.wav", NO_SPEECH, "a 220 Hz square wave at 0 dBFS: loud, no voice", _sound(square)),
        BadInput("speech.ogg", SPEECH, "valid Ogg Vorbis (the reference for the damaged ones)",
                 _sound(s, subtype="VORBIS", fmt="OGG")),
        # -- damaged valid files
        BadInput("truncated.flac", EITHER, "a FLAC cut at 60 %", _truncated(_sound(np.tile(s, 4)), 0.6)),
        BadInput("truncated.ogg", EITHER, "an Ogg Vorbis cut at 60 %",
                 _truncated(_sound(np.tile(s, 4), subtype="VORBIS", fmt="OGG"), 0.6)),
        BadInput("truncated.wav", SPEECH, "a WAV cut at 60 % (its header claims more data)",
                 _truncated(_bytes(wav_bytes(pcm16(np.tile(s, 4)))), 0.6)),
        BadInput("corrupt-middle.flac", EITHER, "4 KB of random bytes over the middle of a FLAC",
                 _corrupted_middle(_sound(np.tile(s, 4)))),
        BadInput("corrupt-middle.ogg", EITHER, "4 KB of random bytes over the middle of an Ogg Vorbis",
                 _corrupted_middle(_sound(np.tile(s, 4), subtype="VORBIS", fmt="OGG"))),
    ]


def write_all(directory: Path) -> dict[str, BadInput]:
    """Write every case into `directory`; {file name: case}."""
    made = {}
    for case in cases():
        case.write(directory / case.name)
        made[case.name] = case
    return made


def assert_sane_probs(probs, labels: tuple[str, ...], where: str) -> None:
    assert probs is not None, f"{where}: no probabilities"
    assert tuple(probs) == labels, f"{where}: labels {tuple(probs)}"
    values = list(probs.values())
    assert all(isinstance(p, float | int) and math.isfinite(p) and 0.0 <= p <= 1.0 for p in values), f"{where}: {probs}"
    assert abs(sum(values) - 1.0) <= PROB_SUM_TOL, f"{where}: sums to {sum(values)}"


def assert_sane_analysis(result: dict, labels: tuple[str, ...], expect: str) -> None:
    """One `serd analyze --json` object (not an error) is sane, and matches `expect`."""
    name = result["file"]
    windows = result["windows"]
    for w in windows:
        where = f"{name} window {w['start']}-{w['end']}"
        assert math.isfinite(w["level_dbfs"]) and w["level_dbfs"] <= 0.5, where  # clipped audio tops out at 0 dBFS
        assert w["end"] > w["start"] >= 0, where
        if w["speech"]:
            assert_sane_probs(w["probs"], labels, where)
        else:
            assert w["probs"] is None, where
    classified = [w for w in windows if w["probs"] is not None]
    if classified:
        assert result["label"] in labels, name
        assert_sane_probs(result["probs"], labels, name)
    else:
        assert result["label"] is None and result["probs"] is None, name
    if expect == SPEECH:
        assert classified, f"{name}: expected classified windows, got {windows}"
    elif expect == NO_SPEECH:
        assert not classified, f"{name}: expected no speech, got {result['label']}"
