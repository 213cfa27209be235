"""Fixed windows at a fixed hop, whatever block sizes the source delivers.

A preallocated ring of `window_samples` samples; each `push` copies the block in
and returns the windows it completed. Nothing is allocated per block except the
returned window copies, and results do not depend on how the audio was cut into
blocks (tested).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Window:
    """One analysis window: samples and where it sits in the stream."""

    start_sample: int
    samples: np.ndarray

    def start_s(self, sample_rate: int) -> float:
        return self.start_sample / sample_rate

    def end_s(self, sample_rate: int) -> float:
        return (self.start_sample + self.samples.shape[0]) / sample_rate


class WindowBuffer:
    """Ring buffer yielding a window every `hop_samples` once `window_samples` have arrived."""

    def __init__(self, window_samples: int, hop_samples: int) -> None:
        if window_samples <= 0 or hop_samples <= 0:
            raise ValueError(f"window and hop must be positive, got {window_samples} and {hop_samples}")
        self.window_samples = window_samples
        self.hop_samples = hop_samples
        self._ring = np.zeros(window_samples, dtype=np.float32)
        self._write = 0  # next write position in the ring
        self._received = 0  # samples received in total
        self._next_end = window_samples  # stream position at which the next window completes

    @property
    def received(self) -> int:
        return self._received

    def reset(self) -> None:
        """Forget everything (after a gap in the stream, e.g. a lost microphone)."""
        self._ring[:] = 0.0
        self._write = 0
        self._received = 0
        self._next_end = self.window_samples

    def push(self, block: np.ndarray) -> list[Window]:
        """Add samples; return the windows that are now complete, oldest first."""
        block = np.asarray(block, dtype=np.float32).reshape(-1)
        windows: list[Window] = []
        offset = 0
        n = block.shape[0]
        while offset < n:
            # Copy only up to the next window end so a window is cut exactly there.
            take = min(n - offset, self._next_end - self._received)
            self._copy_in(block[offset : offset + take])
            offset += take
            if self._received == self._next_end:
                windows.append(Window(self._next_end - self.window_samples, self._snapshot()))
                self._next_end += self.hop_samples
        return windows

    def _copy_in(self, chunk: np.ndarray) -> None:
        size = self.window_samples
        total = chunk.shape[0]
        if total > size:  # only the last `size` samples can ever be part of a window
            self._write = (self._write + total - size) % size
            chunk = chunk[-size:]
        n = chunk.shape[0]
        first = min(n, size - self._write)
        self._ring[self._write : self._write + first] = chunk[:first]
        if first < n:
            self._ring[: n - first] = chunk[first:]
        self._write = (self._write + n) % size
        self._received += total

    def _snapshot(self) -> np.ndarray:
        # Oldest sample sits at the write position.
        return np.concatenate((self._ring[self._write :], self._ring[: self._write]))
