"""Reading audio files: any channel count and rate in, float32 mono at the model rate out.

One reader for `serd analyze`, the file source of `serd run`, training and
evaluation, so they all hear the same samples. Streams in blocks so a file of
hours never has to fit in memory.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

BLOCK_S = 1.0
"""Seconds of source audio decoded per block."""
MAX_CHANNELS = 64
MIN_SAMPLE_RATE = 4000
MAX_SAMPLE_RATE = 768_000
"""Rates a recording can plausibly have. A header claiming 1 Hz would turn 3 s of samples
into 13 hours of audio to resample and classify (minutes of CPU for a 100 KB file)."""


class AudioFileError(ValueError):
    """A file that cannot be read as audio; the message is one line for the user."""


AudioInput = Path | str | BinaryIO
"""A path, or a seekable binary file object (e.g. `io.BytesIO` of an upload, decoded from memory)."""

IN_MEMORY_NAME = "<in-memory audio>"
"""How error messages name a file object that has no `name` attribute."""


def _is_file_object(source: object) -> bool:
    return all(hasattr(source, attr) for attr in ("read", "seek", "tell"))


def _as_source(source: AudioInput) -> Path | BinaryIO:
    return source if _is_file_object(source) else Path(source)


def _name(source: Path | BinaryIO) -> str:
    """The file's name in messages: the path, or a file object's `name` attribute."""
    if isinstance(source, Path):
        return str(source)
    return str(getattr(source, "name", None) or IN_MEMORY_NAME)


def _remaining_bytes(stream: BinaryIO) -> int:
    position = stream.tell()
    end = stream.seek(0, os.SEEK_END)
    stream.seek(position)
    return end - position


def _open(source: Path | BinaryIO):
    import soundfile

    path = _name(source)
    if isinstance(source, Path):
        if not source.exists():
            raise AudioFileError(f"{path}: no such file")
        if source.is_dir():
            raise AudioFileError(f"{path}: is a directory, not an audio file")
        if not os.access(source, os.R_OK):
            raise AudioFileError(f"{path}: permission denied")
        if source.stat().st_size == 0:
            raise AudioFileError(f"{path}: empty file (0 bytes)")
        target = str(source)
    else:
        if _remaining_bytes(source) == 0:
            raise AudioFileError(f"{path}: empty file (0 bytes)")
        target = source  # soundfile decodes file objects through libsndfile's virtual I/O: nothing touches disk
    try:
        handle = soundfile.SoundFile(target)
    except Exception as exc:  # libsndfile reports every failure as a generic error
        # Its message repeats the path (or a file object's address): keep only the reason.
        reason = getattr(exc, "error_string", None) or (str(exc).splitlines()[-1] if str(exc) else type(exc).__name__)
        raise AudioFileError(f"{path}: not a readable audio file ({reason.strip().rstrip('.')})") from None
    if not MIN_SAMPLE_RATE <= handle.samplerate <= MAX_SAMPLE_RATE or not 0 < handle.channels <= MAX_CHANNELS:
        handle.close()
        raise AudioFileError(
            f"{path}: implausible header ({handle.samplerate} Hz, {handle.channels} channels; expected "
            f"{MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz and 1..{MAX_CHANNELS} channels)"
        )
    return handle


def iter_blocks(path: AudioInput, sample_rate: int, block_s: float = BLOCK_S) -> Iterator[np.ndarray]:
    """Yield float32 mono blocks at `sample_rate`; channels are averaged, NaN/inf become 0.

    `path` may also be a seekable binary file object (decoded from memory, never via a temporary file).
    """
    import soxr

    source = _as_source(path)
    path = _name(source)
    handle = _open(source)
    with handle:
        source_rate = handle.samplerate
        resampler = None
        if source_rate != sample_rate:
            resampler = soxr.ResampleStream(source_rate, sample_rate, 1, dtype="float32", quality="HQ")
        frames = max(1, int(source_rate * block_s))
        while True:
            try:
                block = handle.read(frames, dtype="float32", always_2d=True)
            except Exception as exc:
                raise AudioFileError(f"{path}: decoding failed part-way ({str(exc).strip() or type(exc).__name__})") from None
            last = block.shape[0] < frames
            mono = block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0]
            # Corrupt float files can hold NaN/inf; one such sample must not poison a window.
            mono = np.nan_to_num(mono, nan=0.0, posinf=1.0, neginf=-1.0)
            np.clip(mono, -1.0, 1.0, out=mono)
            if resampler is not None:
                mono = resampler.resample_chunk(mono, last=last)
            if mono.size:
                yield np.ascontiguousarray(mono, dtype=np.float32)
            if last:
                return


def read_audio(path: AudioInput, sample_rate: int) -> np.ndarray:
    """The whole file as float32 mono at `sample_rate`."""
    blocks = list(iter_blocks(path, sample_rate))
    if not blocks:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(blocks)


def file_duration_s(path: AudioInput) -> float:
    """Duration from the header, without decoding."""
    with _open(_as_source(path)) as handle:
        return handle.frames / handle.samplerate
