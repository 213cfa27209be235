"""Voice-activity detection: is there a voice in this window, or only sound?

The second stage of the speech gate (`serd/gate.py`): the level gate drops
silence for almost nothing first, and only windows loud enough reach the
detector here. The detector splits a window into 32 ms chunks, gives each a
probability of holding a voice, and calls the window speech when at least
`threshold` of its chunks reach 0.5.

The detector is Silero VAD v5 (MIT licence, Silero Team), its 16 kHz weights
(`models/silero_vad_16k.safetensors`, the unchanged file from the `silero-vad`
6.2.3 wheel on PyPI) run here in numpy: the network is small (STFT, four
1-D convolutions, one LSTM cell), so it needs neither onnxruntime (62 MB on a
Pi) nor torch, and the chunks' convolutions run as one batch per window, which
makes it 3x cheaper than calling onnxruntime once per chunk. Overlapping windows
of a stream share chunks; `VoiceStream` judges each chunk once.
`benchmarks/vad_eval.py` checks it against the ONNX model and measures it,
WebRTC's VAD and the level gate alone on classroom noises (benchmarks/RESULTS.md,
Speech gate): that is where the default and its threshold come from.
"""

from __future__ import annotations

import json
from functools import lru_cache
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

VAD_KINDS = ("energy", "silero")
"""`energy`: the level gate alone (every loud window is speech); `silero`: level gate, then Silero VAD."""
DEFAULT_VAD = "silero"
DEFAULT_THRESHOLD = 0.1
"""Share of a window's 32 ms chunks that must hold a voice (chosen in benchmarks/vad_eval.py)."""
WEIGHTS_NAME = "silero_vad_16k.safetensors"
ENCODE_CHUNKS = 1024
"""Chunks through the encoder at a time: bounds its memory (about 20 MB) on a long batch."""
SAMPLE_RATE = 16_000

_SAFETENSORS_DTYPES = {"F32": "<f4"}


class VadError(ValueError):
    """The detector's weights are missing or not what this code expects."""


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Tensors of a .safetensors file (8-byte header length, JSON header, raw little-endian data)."""
    data = Path(path).read_bytes()
    try:
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + header_len])
        body = memoryview(data)[8 + header_len :]
        tensors = {}
        for name, spec in header.items():
            if name == "__metadata__":
                continue
            start, end = spec["data_offsets"]
            dtype = np.dtype(_SAFETENSORS_DTYPES[spec["dtype"]])
            tensors[name] = np.frombuffer(body[start:end], dtype=dtype).reshape(spec["shape"]).astype(np.float32)
    except (ValueError, KeyError, TypeError) as exc:
        raise VadError(f"{path}: not a float32 safetensors file ({exc})") from None
    return tensors


def _conv1d(x: np.ndarray, taps: tuple[np.ndarray, ...], bias: np.ndarray, stride: int) -> np.ndarray:
    """1-D convolution, kernel 3, padding 1, then ReLU, on (batch, time, channels); `taps`: three (in, out) weights.

    Tap by tap, each a product over exactly the input frames some kept output needs:
    the padding's zeros and the outputs the stride drops are never multiplied (after
    Silero's strides the last two layers see one or two frames, where a product over
    every tap of every frame was two thirds zeros).
    """
    batch, frames, _ = x.shape
    n_out = (frames - 1) // stride + 1
    out = np.empty((batch, n_out, bias.shape[0]), dtype=np.float32)
    out[...] = bias
    for k, weight in enumerate(taps):  # output j sees input stride * j + k - 1
        first = max(0, -(-(1 - k) // stride))
        last = min(n_out - 1, (frames - k) // stride)
        if first <= last:
            out[:, first : last + 1] += _matmul(x[:, stride * first + k - 1 : stride * last + k : stride], weight)
    return np.maximum(out, 0.0, out=out)


def _matmul(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """(..., k) @ (k, m) as one contiguous 2-D product: numpy's matmul on strided 3-D views skips BLAS (20x slower)."""
    flat = np.ascontiguousarray(x).reshape(-1, x.shape[-1])
    return (flat @ weight).reshape(*x.shape[:-1], weight.shape[1])


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 + 0.5 * np.tanh(0.5 * x)  # = 1 / (1 + exp(-x)), without exp's overflow far below zero


class SileroVad:
    """Silero VAD v5 at 16 kHz: 512-sample chunks, each seen with the 64 samples before it.

    The LSTM state starts afresh at every window, so a window's decision depends
    on that window alone: `run` and `analyze` agree however a recording is cut.
    """

    name = "silero"
    CHUNK_SAMPLES = 512
    CONTEXT_SAMPLES = 64
    N_FFT = 256
    STFT_HOP = 128
    CHUNK_THRESHOLD = 0.5
    """A chunk holds a voice when its probability reaches this (Silero's own default)."""

    def __init__(self, weights: dict[str, np.ndarray], threshold: float = DEFAULT_THRESHOLD) -> None:
        """`weights` by the names of Silero's own PyTorch module (as in its .safetensors file)."""
        w = weights
        try:
            self._stft = np.ascontiguousarray(w["stft_conv.weight"][:, 0, :].T)  # (n_fft, 2 * bins)
            # PyTorch's (out, in, 3) as three (in, out) matrices, one per tap
            self._convs = [(tuple(np.ascontiguousarray(w[f"conv{i}.weight"][:, :, k].T) for k in range(3)),
                            w[f"conv{i}.bias"], stride) for i, stride in ((1, 1), (2, 2), (3, 2), (4, 1))]
            self._w_ih = np.ascontiguousarray(w["lstm_cell.weight_ih"].T)
            self._w_hh = np.ascontiguousarray(w["lstm_cell.weight_hh"].T)
            self._b_lstm = w["lstm_cell.bias_ih"] + w["lstm_cell.bias_hh"]
            self._w_out = w["final_conv.weight"][0, :, 0]
            self._b_out = float(w["final_conv.bias"][0])
        except KeyError as exc:
            raise VadError(f"not Silero VAD v5 16 kHz weights (no {exc})") from None
        self._bins = self._stft.shape[1] // 2
        self._hidden = self._w_hh.shape[0]
        self.threshold = threshold

    @classmethod
    def load(cls, path: Path, threshold: float = DEFAULT_THRESHOLD) -> "SileroVad":
        if not Path(path).is_file():
            raise VadError(f"{path}: Silero VAD weights not found")
        try:
            return cls(read_safetensors(path), threshold)
        except VadError as exc:
            raise VadError(f"{path}: {exc}") from None

    def initial_state(self) -> tuple[np.ndarray, np.ndarray]:
        """The LSTM's (hidden, cell) before any audio."""
        return np.zeros(self._hidden, dtype=np.float32), np.zeros(self._hidden, dtype=np.float32)

    def encode(self, chunks: np.ndarray) -> np.ndarray:
        """The LSTM's input gates of (n, 64 + 512) chunks: everything before the LSTM, every chunk on its own."""
        out = np.empty((chunks.shape[0], 4 * self._hidden), dtype=np.float32)
        for at in range(0, chunks.shape[0], ENCODE_CHUNKS):  # in pieces: the convolutions' taps are 8x the audio
            piece = chunks[at : at + ENCODE_CHUNKS]
            padded = np.pad(piece, ((0, 0), (0, self.CONTEXT_SAMPLES)), mode="reflect")
            frames = np.lib.stride_tricks.sliding_window_view(padded, self.N_FFT, axis=1)[:, :: self.STFT_HOP]
            spectrum = _matmul(frames, self._stft)
            h = np.sqrt(spectrum[..., : self._bins] ** 2 + spectrum[..., self._bins :] ** 2)
            for taps, bias, stride in self._convs:
                h = _conv1d(h, taps, bias, stride)
            out[at : at + piece.shape[0]] = _matmul(h[:, 0, :], self._w_ih) + self._b_lstm
        return out

    def run(self, chunks: np.ndarray, state: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """Voice probabilities of consecutive (n, 64 + 512) chunks (each after its 64-sample context), and the state after them."""
        probs, states = self.run_many([chunks], [state])
        return probs[0], states[0]

    def run_many(
        self, sequences: Sequence[np.ndarray], states: Sequence[tuple[np.ndarray, np.ndarray]]
    ) -> tuple[list[np.ndarray], list[tuple[np.ndarray, np.ndarray]]]:
        """`run` over independent sequences of chunks at once, each from its own state.

        The encoder sees all their chunks as one batch; the LSTM steps every sequence
        together, one chunk a step, so a step costs about the same for one sequence or a
        hundred: the Python loop, not the arithmetic, is what a step costs.
        """
        lengths = np.array([s.shape[0] for s in sequences], dtype=np.int64)
        gates_in = self.encode(np.concatenate(sequences)) if lengths.sum() else np.zeros((0, 4 * self._hidden), np.float32)
        order = np.argsort(-lengths, kind="stable")  # longest first: the sequences still running are a prefix
        steps = int(lengths.max()) if lengths.size else 0
        offsets = np.concatenate(([0], np.cumsum(lengths)))
        padded = np.zeros((len(sequences), steps, 4 * self._hidden), dtype=np.float32)
        hidden = np.zeros((len(sequences), self._hidden), dtype=np.float32)
        cell = np.zeros_like(hidden)
        for row, index in enumerate(order):
            padded[row, : lengths[index]] = gates_in[offsets[index] : offsets[index + 1]]
            hidden[row], cell[row] = states[index]
        running = np.searchsorted(-lengths[order], -np.arange(steps), side="left")  # sequences longer than each step
        outputs = np.zeros((len(sequences), steps, self._hidden), dtype=np.float32)
        n = self._hidden
        h, c = hidden, cell
        for t in range(steps):
            k = running[t]
            if k < h.shape[0]:  # the last rows' sequences have ended: keep their states, step the others
                hidden[k : h.shape[0]], cell[k : h.shape[0]] = h[k:], c[k:]
                h, c = h[:k], c[:k]
            gates = padded[:k, t] + h @ self._w_hh  # PyTorch's order: input, forget, cell, output
            squashed = _sigmoid(gates)
            c = squashed[:, n : 2 * n] * c + squashed[:, :n] * np.tanh(gates[:, 2 * n : 3 * n])
            h = squashed[:, 3 * n :] * np.tanh(c)
            outputs[:k, t] = h
        hidden[: h.shape[0]], cell[: c.shape[0]] = h, c
        voiced = _sigmoid(_matmul(np.maximum(outputs, 0.0), self._w_out[:, None])[..., 0] + self._b_out)
        probs: list[np.ndarray] = [np.empty(0, np.float32)] * len(sequences)
        finals: list[tuple[np.ndarray, np.ndarray]] = [states[0]] * len(sequences)
        for row, index in enumerate(order):
            probs[index] = voiced[row, : lengths[index]].astype(np.float32)
            finals[index] = (hidden[row].copy(), cell[row].copy())
        return probs, finals

    def chunk_probs(self, window: np.ndarray) -> np.ndarray:
        """Voice probability of each whole 32 ms chunk of a window on its own (state and context start at zero)."""
        return self.chunk_probs_many([window])[0]

    def chunk_probs_many(self, windows: Sequence[np.ndarray]) -> list[np.ndarray]:
        """`chunk_probs` of many windows (or whole clips), each on its own, in one detector call."""
        size, context = self.CHUNK_SAMPLES, self.CONTEXT_SAMPLES
        chunks = []
        for window in windows:
            x = np.asarray(window, dtype=np.float32)
            n_chunks = x.shape[0] // size
            chunks.append(_with_context(np.pad(x, (context, 0)), context, n_chunks, size, context) if n_chunks
                          else np.zeros((0, context + size), dtype=np.float32))
        return self.run_many(chunks, [self.initial_state()] * len(chunks))[0]

    def voiced_share(self, window: np.ndarray) -> float:
        """Share (0..1) of a window's chunks that hold a voice, the window on its own."""
        probs = self.chunk_probs(window)
        return float(np.mean(probs >= self.CHUNK_THRESHOLD)) if probs.size else 0.0


def _with_context(x: np.ndarray, first: int, n_chunks: int, chunk: int, context: int) -> np.ndarray:
    """(n_chunks, context + chunk): chunks of `x` from offset `first`, each with the `context` samples before it."""
    framed = np.lib.stride_tricks.sliding_window_view(x[first - context : first + n_chunks * chunk], context + chunk)
    return np.ascontiguousarray(framed[::chunk][:n_chunks])


class VoiceStream:
    """Silero over one audio stream: the windows overlap, so each 32 ms chunk of the stream is judged once.

    Chunks sit on a fixed grid from the stream's first sample (chunk k is samples
    512k..512k+511) and a window's share counts the chunks wholly inside it. The
    LSTM state runs on from window to window, as Silero is meant to run; it starts
    afresh after a gap (windows the level gate kept from the detector, a lost
    microphone). Run and analyze feed the same windows in the same order, so
    they get the same answers (a test checks it): `run` one window a call,
    `analyze` many windows of many streams in one `voiced_shares` call.
    """

    def __init__(self, vad: SileroVad) -> None:
        self.vad = vad
        self.threshold = vad.threshold
        self.reset()

    def reset(self) -> None:
        self._next: int | None = None
        """Index of the next chunk to judge; None: nothing judged since the last reset."""
        self._known = _Sequence(0, self.vad.initial_state())
        """The chunks judged since the last reset that a later window can still hold, and the LSTM state after them."""

    def voiced_share(self, window: np.ndarray, start_sample: int) -> float:
        return voiced_shares([(self, [(window, start_sample)])])[0][0]

    def is_voice(self, window: np.ndarray, start_sample: int) -> bool:
        return self.voiced_share(window, start_sample) >= self.threshold

    def _plan(self, windows: Sequence[tuple[np.ndarray, int]]) -> list[tuple["_Sequence", int, int]]:
        """Per window (in stream order): the sequence that judges its chunks, and its first and end chunk.

        Cuts the chunks each window adds (with their context) into the sequences the
        LSTM has to run; nothing is judged here, so many streams can be judged at once.
        """
        size, context = self.vad.CHUNK_SAMPLES, self.vad.CONTEXT_SAMPLES
        sequence = None
        planned = []
        for window, start_sample in windows:
            first = -(-start_sample // size)
            end = (start_sample + window.shape[0]) // size
            if self._next is None or not first <= self._next <= end:
                sequence = _Sequence(first, self.vad.initial_state())
                self._next = first
            elif sequence is None:  # carries on from the previous call
                sequence = _Sequence(self._known.first, self._known.state, list(self._known.judged))
            if self._next < end:
                x = np.asarray(window, dtype=np.float32)
                offset = self._next * size - start_sample
                if offset < context:  # the stream's first chunk, or one right at the window's start
                    x = np.pad(x, (context - offset, 0))
                    offset = context
                sequence.new_chunks.append(_with_context(x, offset, end - self._next, size, context))
                self._next = end
            planned.append((sequence, first, end))
        return planned

    def _keep(self, sequence: "_Sequence", first: int) -> None:
        """After judging: keep the chunks from `first` on (the last window's) for the windows still to come."""
        probs = sequence.probs()
        self._known = _Sequence(first, sequence.state, [probs[first - sequence.first :]])


@dataclass
class _Sequence:
    """Consecutive chunks of one stream judged in one LSTM run, from chunk `first` on."""

    first: int
    state: tuple[np.ndarray, np.ndarray]
    """The LSTM state before the new chunks; after `voiced_shares`, the state after them."""
    judged: list[np.ndarray] = field(default_factory=list)
    """Probabilities of the chunks already judged (from `first` on)."""
    new_chunks: list[np.ndarray] = field(default_factory=list)

    def probs(self) -> np.ndarray:
        return self.judged[0] if len(self.judged) == 1 else np.concatenate((np.zeros(0, np.float32), *self.judged))


def voiced_shares(requests: Sequence[tuple[VoiceStream, Sequence[tuple[np.ndarray, int]]]]) -> list[list[float]]:
    """Per stream, the voiced share of each of its windows, given as (samples, start sample) in stream order.

    Every stream's new chunks go through one detector call (`SileroVad.run_many`),
    each stream's windows judged exactly as one call per window would judge them.
    """
    if not requests:
        return []
    vad = requests[0][0].vad
    if any(stream.vad is not vad for stream, _ in requests):
        raise ValueError("voiced_shares: every stream must use the same detector")
    plans = [stream._plan(windows) for stream, windows in requests]
    sequences = list({id(s): s for plan in plans for s, _, _ in plan if s.new_chunks}.values())
    if sequences:
        probs, states = vad.run_many([np.concatenate(s.new_chunks) for s in sequences], [s.state for s in sequences])
        for sequence, new, state in zip(sequences, probs, states):
            sequence.judged = [np.concatenate((*sequence.judged, new))]
            sequence.state = state
            sequence.new_chunks = []
    shares = []
    for (stream, _), plan in zip(requests, plans):
        shares.append([_share(sequence.probs()[first - sequence.first : end - sequence.first], vad.CHUNK_THRESHOLD)
                       for sequence, first, end in plan])
        if plan:
            stream._keep(plan[-1][0], plan[-1][1])
    return shares


def _share(probs: np.ndarray, chunk_threshold: float) -> float:
    return float(np.mean(probs >= chunk_threshold)) if probs.size else 0.0


def default_weights_path() -> Path:
    from serd.model import default_models_dir

    return default_models_dir() / WEIGHTS_NAME


@lru_cache(maxsize=4)
def make_detector(kind: str, sample_rate: int, threshold: float = DEFAULT_THRESHOLD) -> SileroVad | None:
    """The detector for `analysis.vad` (None for `energy`); VadError if it cannot run.

    Loaded once per process and shared: a detector holds only weights (per-stream
    state lives in `VoiceStream`), and `analyze` of many files must not re-read them.
    """
    if kind == "energy":
        return None
    if kind == "silero":
        if sample_rate != SAMPLE_RATE:
            raise VadError(f"analysis.vad silero runs at {SAMPLE_RATE} Hz; the model's rate is {sample_rate} Hz")
        return SileroVad.load(default_weights_path(), threshold)
    raise VadError(f"analysis.vad: expected one of {', '.join(VAD_KINDS)}, got {kind!r}")
