"""Reading audio files: any channel count and rate in, float32 mono at the model rate out.

One reader for `serd analyze`, the file source of `serd run`, training and
evaluation, so they all hear the same samples. Streams in blocks so a file of
hours never has to fit in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

BLOCK_S = 1.0
"""Seconds of source audio decoded per block."""
MAX_CHANNELS = 64


class AudioFileError(ValueError):
    """A file that cannot be read as audio; the message is one line for the user."""


def _open(path: Path):
    import soundfile

    if not path.exists():
        raise AudioFileError(f"{path}: no such file")
    if path.is_dir():
        raise AudioFileError(f"{path}: is a directory, not an audio file")
    try:
        handle = soundfile.SoundFile(str(path))
    except Exception as exc:  # libsndfile reports every failure as a generic error
        reason = str(exc).splitlines()[-1] if str(exc) else type(exc).__name__
        raise AudioFileError(f"{path}: not a readable audio file ({reason.strip()})") from None
    if handle.samplerate <= 0 or not 0 < handle.channels <= MAX_CHANNELS:
        handle.close()
        raise AudioFileError(f"{path}: implausible header ({handle.samplerate} Hz, {handle.channels} channels)")
    return handle


def iter_blocks(path: Path | str, sample_rate: int, block_s: float = BLOCK_S) -> Iterator[np.ndarray]:
    """Yield float32 mono blocks at `sample_rate`; channels are averaged, NaN/inf become 0."""
    import soxr

    path = Path(path)
    handle = _open(path)
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


def read_audio(path: Path | str, sample_rate: int) -> np.ndarray:
    """The whole file as float32 mono at `sample_rate`."""
    blocks = list(iter_blocks(path, sample_rate))
    if not blocks:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(blocks)


def file_duration_s(path: Path | str) -> float:
    """Duration from the header, without decoding."""
    with _open(Path(path)) as handle:
        return handle.frames / handle.samplerate
